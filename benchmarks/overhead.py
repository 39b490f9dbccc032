"""Throughput of sweeplab's runner against a plain PyTorch loop, side by side in one process.

Both train the same backbone (same init, optimizer, schedule) on the same in-memory
data through the same batched preprocessing for the same number of epochs. The
runner runs exactly as ``sweeplab train`` does, with its default logging
(metrics.csv, checkpoints every epoch, validation every epoch); its training
throughput is the median over epochs after the first, measured by its own
callback, and the plain loop's is measured the same way. The whole-run wall time
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
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

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
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    channels, height, _ = datamodule.image_shape
    model = instantiate(
        cfg.backbone, num_classes=datamodule.num_classes, in_chans=channels, image_size=height
    )
    regime = instantiate(cfg.regime, backbone=model)
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

    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(
        f"{'workload':<12} {'plain samples/s':>16} {'sweeplab samples/s':>19} {'ratio':>7} "
        f"{'wall ratio':>11}"
    )
    for name in names:
        ratios, wall_ratios, plain_rates, runner_rates = [], [], [], []
        for round_index in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = compose_workload([*WORKLOADS[name], f"seed={round_index}"], Path(tmp))
                # Alternate the order so neither side always runs on a warmer machine.
                if round_index % 2 == 0:
                    plain_rate, plain_wall = plain_loop(cfg)
                    runner_rate, runner_wall = sweeplab_runner(cfg, Path(tmp))
                else:
                    runner_rate, runner_wall = sweeplab_runner(cfg, Path(tmp))
                    plain_rate, plain_wall = plain_loop(cfg)
            plain_rates.append(plain_rate)
            runner_rates.append(runner_rate)
            ratios.append(runner_rate / plain_rate)
            wall_ratios.append(plain_wall / runner_wall)
        print(
            f"{name:<12} {statistics.median(plain_rates):>16.0f} "
            f"{statistics.median(runner_rates):>19.0f} {statistics.median(ratios):>7.3f} "
            f"{statistics.median(wall_ratios):>11.3f}"
        )
    print("ratio: sweeplab / plain training throughput (median of rounds; ≥ 0.95 is the target)")
    print("wall ratio: plain loop time / whole sweeplab run (adds validation, checkpoints, eval)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
