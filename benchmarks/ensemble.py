"""Vectorised against looped deep-ensemble training steps, side by side in one process.

``regime=ensemble`` runs M members of one architecture either in a Python loop
(``batch.forward(member)`` per member) or stacked in one ``torch.func.vmap`` call
(``Ensemble.stacked_logits``); ``vectorize=auto`` picks one by device. This measures
both paths of the real regime module, and one model of the same backbone
(``regime=erm``) as the unit, on a full training step: forward in train mode
(BatchNorm statistics per member), the summed loss, backward and an SGD step
(momentum, weight decay), in float32. Members share the batch
(``shared_batches=True``), so no trainer or data module is needed and every side
sees the same tensors. The CIFAR-sized batch is 128 on CUDA and 32 on the CPU
(``--batch-size`` sets one for all), which keeps a CPU run near a minute.

Each repeat times every side in a rotated order, each over enough consecutive
steps to last ``--min-block-ms``; the table reports medians over repeats:

* ``loop/1`` and ``vec/1``: a step of M members over a step of one model;
* ``vec/(M·1)``: the vectorised step over M single steps, what vectorising saves
  against M separate runs (the target on a GPU is ≤ 0.7);
* ``vec/loop``: below 1 where the vectorised path is the faster one.

Then it says which path ``vectorize=auto`` takes on each device and whether that is
the faster one there.

    python benchmarks/ensemble.py                         # CPU, and CUDA when available
    python benchmarks/ensemble.py --device cpu --repeats 3 --members 4
    python benchmarks/ensemble.py --threads 1     # a CPU shared with other jobs: less noise
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from sweeplab.assembly import BackboneFactory, ModelInput
from sweeplab.configs import config_dir
from sweeplab.regimes.ensemble import Ensemble
from sweeplab.regimes.erm import ERM

WIDTHS = [32, 64, 128]  # the default small CNN


@dataclass(frozen=True)
class Workload:
    model_input: ModelInput
    batch_size: int
    #: A smaller batch on the CPU, where a vectorised step of 8 CIFAR-sized members at
    #: batch 128 takes seconds; the paths rank the same at both sizes.
    cpu_batch_size: int

    def batch_on(self, device: torch.device, override: int | None) -> int:
        if override:
            return override
        return self.cpu_batch_size if device.type == "cpu" else self.batch_size

    def describe(self) -> str:
        shape = self.model_input
        return f"{shape.channels}×{shape.height}×{shape.width}"


WORKLOADS = {
    # A CIFAR-sized batch, as benchmarks/mixers.py uses (32 on the CPU).
    "cifar_sized": Workload(ModelInput(channels=3, height=32, width=32, num_classes=10), 128, 32),
    # scikit-learn's digits at the embedded default's batch size.
    "digits_sized": Workload(ModelInput(channels=1, height=8, width=8, num_classes=10), 64, 64),
}


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def backbone_factory(model_input: ModelInput) -> BackboneFactory:
    cfg = OmegaConf.merge(
        OmegaConf.load(config_dir() / "backbone" / "small_cnn.yaml"), {"widths": WIDTHS}
    )
    return BackboneFactory(cfg, model_input)


def build_ensemble(model_input: ModelInput, members: int, vectorize, device) -> Ensemble:
    torch.manual_seed(0)
    return Ensemble(
        backbone_factory(model_input),
        sgd,
        num_members=members,
        seed=0,
        shared_batches=True,
        vectorize=vectorize,
    ).to(device)


def training_step(regime, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One optimiser step of ``regime`` on ``(x, y)``, with no host synchronisation."""
    regime.train()
    optimizer = sgd(regime.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        regime.training_loss(x, y, 0).backward()
        optimizer.step()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step: Callable[[], None], steps: int, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def measure(
    sides: dict[str, Callable[[], None]], device, repeats: int, warmup: int, min_block_s: float
) -> dict[str, float]:
    """Median seconds per step of each side; sides alternate, rotated every repeat."""
    block = {}
    for name, step in sides.items():
        one = seconds_per_step(step, warmup, device)  # also compiles kernels, fills caches
        block[name] = max(1, math.ceil(min_block_s / max(one, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:  # no side always runs first
            times[name].append(seconds_per_step(sides[name], block[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def bench(workload: Workload, members: int, device: torch.device, args) -> dict:
    generator = torch.Generator().manual_seed(0)
    shape, batch = workload.model_input, workload.batch_on(device, args.batch_size)
    x = torch.randn(batch, shape.channels, shape.height, shape.width, generator=generator)
    y = torch.randint(0, shape.num_classes, (batch,), generator=generator)
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    single = ERM(backbone_factory(shape), sgd).to(device)
    looped = build_ensemble(shape, members, False, device)
    stacked = build_ensemble(shape, members, True, device)
    assert not looped.vectorized() and stacked.vectorized()
    auto = build_ensemble(shape, members, "auto", device).vectorized()
    sides = {
        "single": training_step(single, x, y),
        "loop": training_step(looped, x, y),
        "vectorised": training_step(stacked, x, y),
    }
    ms = measure(sides, device, args.repeats, args.warmup, args.min_block_ms / 1e3)
    return {"members": members, "device": device.type, "batch": batch, "auto": auto, **ms}


def devices(choice: str) -> list[torch.device]:
    if choice == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    return [torch.device(choice)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                        help="all: the CPU, and CUDA when available")  # fmt: skip
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--batch-size", type=int, default=None,
                        help="one batch size for every workload and device (default: "
                             "128 CIFAR-sized on CUDA, 32 on the CPU; 64 digits-sized)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="rotated repeats per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    parser.add_argument("--min-block-ms", type=float, default=30.0,
                        help="each timed block runs enough steps to last this long")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(m < 2 for m in args.members):
        parser.error("--members: an ensemble has at least 2 members")

    where = ", ".join(
        torch.cuda.get_device_name(d) if d.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        for d in devices(args.device)
    )  # fmt: skip
    print(
        f"torch {torch.__version__}, {where}; small_cnn widths {WIDTHS}, float32, "
        f"SGD step, train mode; {args.repeats} repeats, median"
    )
    header = (
        f"{'M':>2} {'device':<6} {'batch':>5} {'single ms':>10} {'loop ms':>9} {'vec ms':>9} "
        f"{'loop/1':>7} {'vec/1':>7} {'vec/(M·1)':>10} {'vec/loop':>9}"
    )
    picks: list[tuple[str, dict]] = []
    for name in args.workload:
        workload = WORKLOADS[name]
        print(f"\n{name}: {workload.describe()} images")
        print(header)
        for device in devices(args.device):
            for members in args.members:
                row = bench(workload, members, device, args)
                single, loop, vec = row["single"], row["loop"], row["vectorised"]
                print(
                    f"{members:>2} {device.type:<6} {row['batch']:>5} {single * 1e3:>10.2f} {loop * 1e3:>9.2f} "
                    f"{vec * 1e3:>9.2f} {loop / single:>7.2f} {vec / single:>7.2f} "
                    f"{vec / (members * single):>10.2f} {vec / loop:>9.2f}"
                )
                picks.append((name, row))
    print("\nvec/(M·1): the vectorised step over M single-model steps (target on a GPU ≤ 0.7)")
    print("vectorize=auto:")
    for name, row in picks:
        chosen = "vectorised" if row["auto"] else "loop"
        faster = "vectorised" if row["vectorised"] < row["loop"] else "loop"
        verdict = "the faster one" if chosen == faster else f"slower here ({faster} wins)"
        print(f"  {name}, M={row['members']}, {row['device']}: picks {chosen}, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
