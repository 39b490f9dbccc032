"""Supernet training against one standalone training of its largest subnet, side by side.

The issue a user faces: is one supernet cheaper than training the subnets it ranks?
This measures, in one process on the same batches:

* ``standalone``: a training step of the largest subnet as a plain network
  (``backbone=subnet``, ERM's cross-entropy);
* ``uniform``: a ``regime=supernet sampler=uniform`` step (one random subnet);
* ``sandwich``: a ``sampler=sandwich`` step (largest + smallest + ``num_random``, in-place KD).

Each side's step time is the median over rounds (sides in a rotated order), so the
ratios ``uniform / standalone`` and ``sandwich / standalone`` are what a supernet
costs per epoch in units of the largest subnet's own training (the target is ≤ 10×
for the same number of epochs). It then times BatchNorm recalibration of one subnet
on the 2,000 calibration images, the price of scoring each candidate of a search.

    python benchmarks/nas.py                          # CIFAR-sized batches, the default space
    python benchmarks/nas.py --widths 8 16 32 --threads 1 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sweeplab.models.subnet_scoring import scoring_subnet
from sweeplab.models.supernet import Supernet
from sweeplab.regimes.supernet import SupernetTraining


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


def timed(step, batches) -> float:
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-random", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = dict(num_classes=10, in_chans=3, image_size=args.image_size)
    space = dict(widths=args.widths, stem_width=args.widths[0])

    def regime(sampler: str) -> SupernetTraining:
        net = Supernet(**shape, **space)
        return SupernetTraining(net, optimizer=sgd, sampler=sampler, num_random=args.num_random)

    sides = {"uniform": regime("uniform"), "sandwich": regime("sandwich")}
    largest = sides["sandwich"].backbone.extract(sides["sandwich"].space.largest()).train()
    optimizers = {name: sgd(side.parameters()) for name, side in sides.items()}
    optimizers["standalone"] = sgd(largest.parameters())

    def supernet_step(name):
        def step(x, y):
            optimizers[name].zero_grad(set_to_none=True)
            sides[name].training_loss(x, y, step.index).backward()
            optimizers[name].step()
            step.index += 1

        step.index = 0
        return step

    def standalone_step(x, y):
        optimizers["standalone"].zero_grad(set_to_none=True)
        F.cross_entropy(largest(x), y).backward()
        optimizers["standalone"].step()

    for side in sides.values():
        side.train()
    steps = {
        "standalone": standalone_step,
        "uniform": supernet_step("uniform"),
        "sandwich": supernet_step("sandwich"),
    }
    batches = [
        (
            torch.randn(args.batch_size, 3, args.image_size, args.image_size),
            torch.randint(10, (args.batch_size,)),
        )
        for _ in range(args.steps)
    ]
    for step in steps.values():  # warm-up
        step(*batches[0])
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(steps[name], batches))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"supernet widths {args.widths}, batch {args.batch_size}×3×{args.image_size}², "
        f"{torch.get_num_threads()} thread(s), median of {args.rounds} rounds × {args.steps} steps"
    )
    for name in names:
        ratio = median[name] / median["standalone"]
        print(
            f"  {name:<10} {median[name] * 1e3:8.1f} ms/step   {ratio:5.2f}× the largest subnet alone"
        )
    net = sides["sandwich"].backbone
    calibration = torch.randn(2000, 3, args.image_size, args.image_size)
    recal = []
    for arch in (net.space.largest(), net.space.smallest()):
        start = time.perf_counter()
        scoring_subnet(net, arch, "recalibrate", calibration, batch_size=500)
        recal.append(time.perf_counter() - start)
    print(
        f"  BatchNorm recalibration on 2,000 images: {recal[0]:.2f} s (largest subnet), "
        f"{recal[1]:.2f} s (smallest)"
    )


if __name__ == "__main__":
    main()
