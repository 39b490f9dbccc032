"""Cost of each batch mixer against one training step on the same batch, side by side.

Every ``conf/augment`` option is built with its published defaults and mixes a
CIFAR-sized batch (128 × 3 × 32 × 32, normalised, on the device); the reference is
one plain training step of the default small CNN on that batch (forward,
cross-entropy, backward, SGD step). Each round times every side in a rotated order
and keeps the median per call; the table reports the median over rounds of

* ``mix/step``: the mixer's own call (draws, masks, pixel mixing) over a plain step,
  the target being below 0.05;
* ``step overhead``: a whole training step with the mixer (mix, forward with any
  feature hook, its loss, backward, step) over a plain step, minus 1, which also
  counts what the method itself costs the model (RegMixup's doubled batch).

    python benchmarks/mixers.py                      # all mixers, 3 rounds
    python benchmarks/mixers.py --rounds 5 --augment cutmix fmix --lam-mode sample
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from sweeplab.configs import config_dir
from sweeplab.tracking.identity import register_resolvers

BATCH, CHANNELS, SIDE, CLASSES = 128, 3, 32, 10


def options() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "augment").glob("*.yaml"))


def compose_mixer_config(augment: str, lam_mode: str | None):
    overrides = [f"augment={augment}"]
    if lam_mode and augment != "none":
        overrides.append(f"augment.lam_mode={lam_mode}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def build(augment: str, lam_mode: str | None, device: torch.device):
    """The mixer, and a regime around a fresh default backbone, on ``device``."""
    cfg = compose_mixer_config(augment, lam_mode)
    torch.manual_seed(0)
    backbone = instantiate(cfg.backbone, num_classes=CLASSES, in_chans=CHANNELS, image_size=SIDE)
    mixer = instantiate(cfg.augment, num_classes=CLASSES)
    regime = instantiate(cfg.regime, backbone=backbone, mixer=mixer).to(device)
    optimizer = regime.optimizer_factory(regime.parameters())
    return mixer, regime, optimizer


def per_call(fn: Callable[[int], object], calls: int, device: torch.device) -> float:
    """Median seconds of ``fn(i)`` over ``calls`` calls, after one warm-up call."""
    fn(-1)
    times = []
    for i in range(calls):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augment", nargs="+", choices=options(), default=options())
    parser.add_argument("--rounds", type=int, default=3, help="rotated rounds of measurements")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per side per round")
    parser.add_argument("--lam-mode", choices=["batch", "pair", "sample"], default=None,
                        help="override every mixer's lam_mode (pair needs augment.partner)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_resolvers()
    device = torch.device(args.device)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, SIDE, SIDE, generator=generator).to(device)
    y = torch.randint(0, CLASSES, (BATCH,), generator=generator).to(device)
    sides = {name: build(name, args.lam_mode, device) for name in args.augment}
    _, plain_regime, plain_optimizer = build("none", None, device)

    def plain_step(_: int) -> None:
        loss = F.cross_entropy(plain_regime.backbone(x), y)
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()

    def mix_only(name: str) -> Callable[[int], object]:
        mixer = sides[name][0]
        return lambda i: mixer.mix(x, y, batch_index=i)

    def mixed_step(name: str) -> Callable[[int], None]:
        mixer, regime, optimizer = sides[name]

        def step(i: int) -> None:
            mixed = mixer.mix(x, y, batch_index=i)
            loss = mixer.loss(mixed.forward(regime.backbone), mixed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    measures: dict[str, Callable[[int], object]] = {"plain": plain_step}
    for name in args.augment:
        measures[f"mix:{name}"] = mix_only(name)
        measures[f"step:{name}"] = mixed_step(name)
    results: dict[str, list[float]] = {key: [] for key in measures}
    for round_index in range(args.rounds):
        keys = list(measures)
        shift = round_index * len(keys) // max(args.rounds, 1)
        for key in keys[shift:] + keys[:shift]:  # rotate: no side always runs first
            results[key].append(per_call(measures[key], args.calls, device))

    plain = results["plain"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, "
        f"batch {BATCH}×{CHANNELS}×{SIDE}×{SIDE}, small_cnn, {args.rounds} rounds × "
        f"{args.calls} calls"
    )
    print(f"plain training step: {statistics.median(plain) * 1e3:.1f} ms (median of rounds)")
    print(f"{'augment':<16} {'lam_mode':<9} {'mix ms':>8} {'mix/step':>9} {'step overhead':>14}")
    for name in args.augment:
        mix_ratio = [m / p for m, p in zip(results[f"mix:{name}"], plain, strict=True)]
        overhead = [s / p - 1 for s, p in zip(results[f"step:{name}"], plain, strict=True)]
        lam_mode = getattr(sides[name][0], "lam_mode", "-")
        print(
            f"{name:<16} {lam_mode:<9} {statistics.median(results[f'mix:{name}']) * 1e3:>8.2f} "
            f"{statistics.median(mix_ratio):>9.3f} {statistics.median(overhead):>+14.3f}"
        )
    print("mix/step: the mixer's call over one plain training step (target < 0.05)")
    print("step overhead: a training step with the mixer over a plain step, minus 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
