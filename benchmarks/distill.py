"""Training step time of distillation against ERM for the same student, side by side.

Three sides train the same student backbone (same init, optimizer, schedule) on the
same in-memory data through Lightning with no loggers, checkpoints or validation:

* ``erm``: the student alone (``regime=erm``);
* ``distill``: ``regime=distill`` with the teacher run at every step
  (``cache_teacher=false``): a teacher forward under ``torch.inference_mode`` per step;
* ``cached``: ``regime=distill`` reading the teacher's logits of the train split,
  computed once when training starts (``cache_teacher=true``).

The teacher is a finished run written into a scratch store (its weights are its
initialisation: the step time does not depend on them). Each round trains every side
in a rotated order; a side's step time is the median over epochs after the first of
(epoch time / steps), so the cache's one pass at the start is reported on its own.

    python benchmarks/distill.py                    # both workloads, MLP student, small-CNN teacher
    python benchmarks/distill.py --workload cifar_sized --rounds 5 --threads 1
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
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sweeplab.assembly import MODEL_INPUT_KEY, ModelInput, build_components, build_regime
from sweeplab.configs import config_dir
from sweeplab.tracking.identity import compute_run_id, register_resolvers
from sweeplab.tracking.record import new_record, write_record
from sweeplab.train import resolved_config

WORKLOADS = {
    # The embedded default: digits (8×8, 8 classes), batch 64.
    "digits": [],
    # A CIFAR-sized batch (128 × 3 × 32 × 32), where the teacher's forward is the cost.
    "cifar_sized": [
        "data=synthetic",
        "data.num_train=2816",
        "data.num_test=256",
        "data.num_classes=10",
        "data.image_size=32",
        "data.channels=3",
        "data.mean=[0.5,0.5,0.5]",
        "data.std=[0.35,0.35,0.35]",
        "data.batch_size=128",
    ],
}


def compose_config(overrides: list[str], root: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[*overrides, f"paths.root_dir={root}", "trainer.enable_progress_bar=false"],
        )


def write_teacher(root: Path, workload: list[str], widths: str) -> str:
    """A complete run of a small CNN in ``root/runs``; returns its run id."""
    cfg = compose_config([*workload, f"backbone.widths=[{widths}]"], root)
    datamodule, regime = build_components(cfg)
    run_id = compute_run_id(cfg)
    run_dir = root / "runs" / str(cfg.name) / run_id
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": regime.state_dict(), "epoch": 0}, run_dir / "checkpoints/last.ckpt")
    record = new_record(run_id, str(cfg.name), resolved_config(cfg), [], {})
    record.update(status="complete", choices={"regime": "erm"})
    record[MODEL_INPUT_KEY] = ModelInput.of(datamodule).to_record()
    write_record(run_dir, record)
    return run_id


class StepTimer(pl.Callback):
    """Seconds per training step of each epoch, and the time ``on_train_start`` took."""

    def __init__(self) -> None:
        self.per_step: list[float] = []
        self.start_s = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self.per_step:
            self.start_s = time.perf_counter() - self.fit_started
        self.started, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.per_step.append((time.perf_counter() - self.started) / max(self.steps, 1))


def train(cfg, epochs: int, root: Path) -> tuple[float, float]:
    """(median s/step after the first epoch, seconds from fit start to the first epoch)."""
    torch.manual_seed(int(cfg.seed))
    datamodule, _ = build_components(cfg)
    module = build_regime(cfg, ModelInput.of(datamodule))
    timer = StepTimer()
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
        default_root_dir=str(root),  # the mixing preview is written there
    )
    trainer.fit(module, datamodule=datamodule)
    steps = timer.per_step[1:] if len(timer.per_step) > 1 else timer.per_step
    return statistics.median(steps), timer.start_s


def measure(workload: list[str], args) -> dict[str, tuple[float, float]]:
    """``{side: (median s/step, median s from fit start to the first epoch)}``."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        teacher = write_teacher(root, workload, args.teacher_widths)
        student = [*workload, "backbone=mlp", f"backbone.hidden=[{args.student_hidden}]"]
        distill = [*student, "regime=distill", f"regime.teacher={teacher}"]
        sides = {
            "erm": compose_config(student, root),
            "distill": compose_config([*distill, "regime.cache_teacher=false"], root),
            "cached": compose_config([*distill, "regime.cache_teacher=true"], root),
        }
        for cfg in sides.values():
            OmegaConf.resolve(cfg)
        times: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        order = list(sides)
        for round_index in range(args.rounds):
            shift = round_index % len(order)
            for side in order[shift:] + order[:shift]:
                run_root = root / f"{side}{round_index}"
                times[side].append(train(sides[side], args.epochs, run_root))
    return {
        side: (statistics.median(t[0] for t in values), statistics.median(t[1] for t in values))
        for side, values in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--student-hidden", default="64", help="the MLP student's widths")
    parser.add_argument("--teacher-widths", default="32,64,128", help="the small-CNN teacher's")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("sweeplab").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds; "
        f"student MLP [{args.student_hidden}], teacher small CNN [{args.teacher_widths}]"
    )
    # Fit start → first step is the same for every side but for the cache's one pass.
    print(
        f"{'workload':<12} {'side':<8} {'ms/step':>9} {'/ erm':>7} {'/ distill':>10} "
        f"{'fit start → step 1 (s)':>23}"
    )
    for name in names:
        result = measure(WORKLOADS[name], args)
        erm, distill = result["erm"][0], result["distill"][0]
        for side, (per_step, start) in result.items():
            print(
                f"{name:<12} {side:<8} {1e3 * per_step:>9.2f} {per_step / erm:>7.2f} "
                f"{per_step / distill:>10.2f} {start:>23.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
