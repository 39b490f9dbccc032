"""Throughput of sweeplab's runner against a plain PyTorch loop, side by side in one process.

All three train the same backbone (same init, optimizer, schedule) on the same in-memory
data through the same batched preprocessing for the same number of epochs. The
runner runs exactly as ``sweeplab train`` does, with its default logging
(metrics.csv, checkpoints every epoch, validation every epoch); its training
throughput is the median over epochs after the first, measured by its own
callback, and the plain loop's and a bare Lightning module's are measured the
same way, so per-step cost that belongs to Lightning itself is told apart from
what sweeplab adds. The whole-run wall time
(runner: fit + validation + checkpoints + evaluation) is reported beside it.

    python benchmarks/overhead.py                   # two workloads, 3 interleaved rounds
    python benchmarks/overhead.py --workload cifar_sized --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sweeplab.assembly import build_components
from sweeplab.configs import config_dir
from sweeplab.tracking.identity import compute_run_id, register_resolvers
from sweeplab.tracking.record import read_record
from sweeplab.train import execute

WORKLOADS = {
    # The embedded default: digits, small CNN, batch 64.
    "digits": ["trainer.max_epochs=6"],
    # A CIFAR-sized batch (128 × 3 × 32 × 32) through the small CNN.
    "cifar_sized": [
        "data=synthetic",
        "data.num_train=5120",
        "data.num_test=512",
        "data.num_classes=10",
        "data.image_size=32",
        "data.channels=3",
        "data.mean=[0.5,0.5,0.5]",
        "data.std=[0.35,0.35,0.35]",
        "data.batch_size=128",
        "data.random_crop_padding=4",
        "data.horizontal_flip=true",
        "trainer.max_epochs=4",
    ],
}


def compose_workload(overrides: list[str], root: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[*overrides, f"paths.root_dir={root}", "trainer.enable_progress_bar=false"],
        )


def plain_loop(cfg) -> tuple[float, float]:
    """Train with a hand-written loop; returns (median samples/s after epoch 1, wall s)."""
    started = time.perf_counter()
    torch.manual_seed(int(cfg.seed))
    datamodule, regime = build_components(cfg)
    model = regime.backbone
    optimizer = regime.optimizer_factory(model.parameters())
    loader = datamodule.loader("train", train=True)
    epochs = int(cfg.trainer.max_epochs)
    scheduler = regime.scheduler_factory(
        optimizer, total_steps=epochs * len(loader), steps_per_epoch=len(loader)
    )
    rates = []
    model.train()
    for _ in range(epochs):
        epoch_start, samples = time.perf_counter(), 0
        for x, y in loader:
            x = datamodule.preprocess(x, train=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            samples += len(y)
        rates.append(samples / (time.perf_counter() - epoch_start))
    return statistics.median(rates[1:] if len(rates) > 1 else rates), time.perf_counter() - started


class _EpochTimer(pl.Callback):
    """Training samples/s per epoch, timed like sweeplab's own throughput callback."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start, self.samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rates.append(self.samples / (time.perf_counter() - self.start))


class _BareModule(pl.LightningModule):
    """The least a Lightning user writes: forward, loss, optimizer, schedule."""

    def __init__(self, backbone, optimizer_factory, scheduler_factory, steps: int, per_epoch: int):
        super().__init__()
        self.backbone = backbone
        self.factories = (optimizer_factory, scheduler_factory, steps, per_epoch)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.backbone(x), y)

    def configure_optimizers(self):
        make_optimizer, make_scheduler, steps, per_epoch = self.factories
        optimizer = make_optimizer(self.parameters())
        scheduler = make_scheduler(optimizer, total_steps=steps, steps_per_epoch=per_epoch)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def bare_lightning(cfg) -> float:
    """Lightning with no loggers, checkpoints or validation: the framework's own floor."""
    torch.manual_seed(int(cfg.seed))
    datamodule, regime = build_components(cfg)
    backbone = regime.backbone
    epochs = int(cfg.trainer.max_epochs)
    per_epoch = len(datamodule.loader("train", train=True))
    module = _BareModule(
        backbone, regime.optimizer_factory, regime.scheduler_factory, epochs * per_epoch, per_epoch
    )
    timer = _EpochTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return statistics.median(timer.rates[1:] if len(timer.rates) > 1 else timer.rates)


def sweeplab_runner(cfg, root: Path) -> tuple[float, float]:
    """Train through ``execute`` exactly as the CLI does; returns (samples/s, wall s)."""
    run_dir = root / "runs" / str(cfg.name) / compute_run_id(cfg)
    started = time.perf_counter()
    outcome = execute(cfg, run_dir)
    wall = time.perf_counter() - started
    if outcome.status != "complete":
        raise RuntimeError(f"runner failed: {outcome.error}")
    return read_record(run_dir)["metrics"]["perf/train_samples_per_s"], wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per workload")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("sweeplab").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print("training samples/s (median of rounds, epochs after the first):")
    print(
        f"{'workload':<12} {'plain':>9} {'bare Lightning':>14} {'sweeplab':>10} "
        f"{'sweeplab/plain':>15} {'sweeplab/bare PL':>16} {'wall ratio':>11}"
    )
    measure = {
        "plain": lambda cfg, root: plain_loop(cfg),
        "bare": lambda cfg, root: bare_lightning(cfg),
        "runner": sweeplab_runner,
    }
    for name in names:
        results: dict[str, list] = {side: [] for side in measure}
        for round_index in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = compose_workload([*WORKLOADS[name], f"seed={round_index}"], Path(tmp))
                # Rotate the order so no side always runs on a warmer (or hotter) machine.
                for offset in range(len(measure)):
                    side = list(measure)[(round_index + offset) % len(measure)]
                    results[side].append(measure[side](cfg, Path(tmp)))
        plain, bare, runner = results["plain"], results["bare"], results["runner"]
        plain_rate = statistics.median(rate for rate, _ in plain)
        bare_rate = statistics.median(bare)
        runner_rate = statistics.median(rate for rate, _ in runner)
        ratios = [r / p for (r, _), (p, _) in zip(runner, plain, strict=True)]
        over_bare = [r / b for (r, _), b in zip(runner, bare, strict=True)]
        walls = [pw / rw for (_, rw), (_, pw) in zip(runner, plain, strict=True)]
        print(
            f"{name:<12} {plain_rate:>9.0f} {bare_rate:>14.0f} {runner_rate:>10.0f} "
            f"{statistics.median(ratios):>15.3f} {statistics.median(over_bare):>16.3f} "
            f"{statistics.median(walls):>11.3f}"
        )
    print("sweeplab/plain: the framework's throughput against a hand-written loop (target ≥ 0.95)")
    print("sweeplab/bare PL: against Lightning with nothing of sweeplab's (logging, checkpoints)")
    print("wall ratio: plain loop time / whole sweeplab run (adds validation, checkpoints, eval)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
