"""Learning-rate schedules stepped every batch, each with an optional linear warm-up.

Configs give them as ``_partial_`` callables; the regime completes the call with
the optimizer and the number of steps, which only the trainer knows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _check_warmup(warmup_epochs: float) -> None:
    if warmup_epochs < 0:
        raise ValueError(f"regime.scheduler.warmup_epochs must be ≥ 0, got {warmup_epochs}")


def _with_warmup(
    after: Callable[[float], float], total_steps: int, warmup_steps: int
) -> Callable[[int], float]:
    """Factor for step ``s``: linear ramp for ``warmup_steps``, then ``after(progress)``."""
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return after(min(1.0, (step - warmup_steps) / decay_steps))

    return factor


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Cosine decay from the base LR to ``min_lr_ratio`` × base LR (Loshchilov & Hutter)."""
    _check_warmup(warmup_epochs)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"regime.scheduler.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def cosine(progress: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    warmup_steps = round(warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, _with_warmup(cosine, total_steps, warmup_steps))


def warmup_multistep(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LambdaLR:
    """Multiply the LR by ``gamma`` at each milestone, given as a fraction of training."""
    _check_warmup(warmup_epochs)
    milestones = list(milestones)
    if any(not 0.0 < m < 1.0 for m in milestones) or milestones != sorted(milestones):
        raise ValueError(
            "regime.scheduler.milestones must be increasing fractions of training in (0, 1), "
            f"got {milestones}"
        )
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"regime.scheduler.gamma must be in (0, 1], got {gamma}")

    def steps(progress: float) -> float:
        return gamma ** sum(progress >= m for m in milestones)

    warmup_steps = round(warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, _with_warmup(steps, total_steps, warmup_steps))


def warmup_constant(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0
) -> LambdaLR:
    """A constant LR after the warm-up."""
    _check_warmup(warmup_epochs)
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, _with_warmup(lambda _: 1.0, total_steps, warmup_steps))
