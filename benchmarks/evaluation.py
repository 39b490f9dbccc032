"""The whole evaluation against one forward pass over the same sets, side by side.

The evaluation that ``sweeplab train`` runs after training: the forward passes into
the eval cache (val, test, the train features detectors are fitted on, every OOD
set, every corruption × severity), then every metric, calibrator (TS, VS, MS) and
detector, with hyperparameters chosen on the val OOD sets. The reference is one
bare ``predict_eval`` pass over exactly the same images. ODIN is timed on its own:
it needs input gradients for every hyperparameter candidate, so it costs several
passes by design. Plots are timed on their own too (matplotlib, not arithmetic).

Rounds interleave the two measurements, and the medians are compared, so load on a
shared machine hits both alike.

    python benchmarks/evaluation.py                  # both workloads, 3 rounds
    python benchmarks/evaluation.py --workload cifar_sized --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from sweeplab.assembly import build_components
from sweeplab.configs import config_dir
from sweeplab.evaluation.passes import (
    EvalPasses,
    corrupted_batches,
    image_batches,
    ood_set_configs,
)
from sweeplab.evaluation.report import evaluate_cached
from sweeplab.tracking.identity import register_resolvers

WORKLOADS = {
    "digits": [],
    "cifar_sized": [
        "data=synthetic",
        "data.num_train=5000",
        "data.num_test=2000",
        "data.num_classes=10",
        "data.image_size=32",
        "data.channels=3",
        "data.mean=[0.5,0.5,0.5]",
        "data.std=[0.35,0.35,0.35]",
        "+eval.ood.sets.noise={_target_: sweeplab.data.ood_sets.SyntheticNoise,"
        " group: far, kind: gaussian, count: 1000, seed: 1}",
        "+eval.ood.sets.uniform={_target_: sweeplab.data.ood_sets.SyntheticNoise,"
        " group: near, kind: uniform, count: 1000, seed: 2}",
    ],
}


def compose_workload(overrides: list[str], root: Path) -> DictConfig:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={root}", *overrides])


@torch.no_grad()
def one_forward_pass(cfg: DictConfig, module, datamodule) -> float:
    """Seconds for one bare pass over every image the evaluation passes over."""
    preprocess = lambda x: datamodule.preprocess(x, train=False)  # noqa: E731
    batches = []
    for split in ("train", "val", "test"):
        batches.append(datamodule.loader(split))
    batch_size = datamodule.eval_batch_size
    for set_cfg in ood_set_configs(cfg.eval).values():
        ood_set = instantiate(set_cfg)
        for split in ("val", "test"):
            images = ood_set.load(datamodule, split)
            if images is not None:
                batches.append(list(image_batches(images, batch_size)))
    shift = cfg.eval.shift
    started = time.perf_counter()
    for loader in batches:
        for x, _ in loader:
            module.predict_eval(preprocess(x))
    # The shift sets: the corrupted images are part of the input, as in the evaluation.
    for name in shift.corruptions:
        for severity in shift.severities:
            for x, _ in corrupted_batches(datamodule.loader("test"), name, severity, 0):
                module.predict_eval(preprocess(x))
    return time.perf_counter() - started


def whole_evaluation(cfg: DictConfig, module, datamodule, run_dir: Path) -> tuple[float, float]:
    """Seconds of the evaluation as ``sweeplab train`` runs it, and the extra for plots."""
    cfg.eval.plots = False
    started = time.perf_counter()
    EvalPasses(cfg.eval, run_dir, force=True).run(module, datamodule)
    passes_done = time.perf_counter()
    evaluate_cached(run_dir, cfg.eval)
    metrics_done = time.perf_counter()
    cfg.eval.plots = True
    evaluate_cached(run_dir, cfg.eval)
    with_plots = time.perf_counter() - metrics_done
    return metrics_done - started, with_plots - (metrics_done - passes_done)


def odin_time(cfg: DictConfig, module, datamodule, run_dir: Path) -> float:
    cfg.eval.ood.detectors = ["odin"]
    cfg.eval.shift.corruptions = []
    passes = EvalPasses(cfg.eval, run_dir, force=False)
    (run_dir / "eval_cache" / "odin.pt").unlink(missing_ok=True)
    started = time.perf_counter()
    passes.run(module, datamodule)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{'workload':<12} {'forward s':>10} {'eval s':>9} {'eval/fwd':>9} "
        f"{'plots s':>8} {'odin s':>8}"
    )
    for workload in args.workload or sorted(WORKLOADS):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            forward, evaluation, plots, odin = [], [], [], []
            for _ in range(args.rounds):
                cfg = compose_workload(WORKLOADS[workload], root)
                torch.manual_seed(0)
                datamodule, module = build_components(cfg)
                module.eval()
                run_dir = root / "run"
                cfg.eval.ood.detectors = [d for d in cfg.eval.ood.detectors if d != "odin"]
                forward.append(one_forward_pass(cfg, module, datamodule))
                no_plots, plot_time = whole_evaluation(cfg, module, datamodule, run_dir)
                evaluation.append(no_plots)
                plots.append(plot_time)
                odin.append(
                    odin_time(
                        compose_workload(WORKLOADS[workload], root), module, datamodule, run_dir
                    )
                )
            fwd, ev = statistics.median(forward), statistics.median(evaluation)
            print(
                f"{workload:<12} {fwd:>10.3f} {ev:>9.3f} {ev / fwd:>9.2f} "
                f"{statistics.median(plots):>8.3f} {statistics.median(odin):>8.3f}"
            )


if __name__ == "__main__":
    main()
