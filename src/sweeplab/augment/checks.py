"""Mixer options that only mixers have: box scale ranges and backbone stage lists.

They follow the convention of :mod:`sweeplab.checks` (full key in, converted value
out, ``ValueError`` naming the key); the generic checks live there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweeplab.checks import is_int, is_real


def scale_range(key: str, value: Any) -> tuple[float, float]:
    """A pair ``[min, max]`` of fractions of the image side with ``0 < min ≤ max ≤ 1``.

    A scale of 0 gives an empty box or patch, which would silently mix nothing.
    """
    is_pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if is_pair and all(is_real(v) for v in value):
        low, high = float(value[0]), float(value[1])
        if 0.0 < low <= high <= 1.0:
            return low, high
    shown = list(value) if is_pair else value
    raise ValueError(f"{key} must be a pair [min, max] with 0 < min ≤ max ≤ 1, got {shown!r}")


def optional_scale_range(key: str, value: Any) -> tuple[float, float] | None:
    """``None`` or a :func:`scale_range`."""
    return None if value is None else scale_range(key, value)


def stage_list(key: str, value: Any) -> list[int] | None:
    """``None`` (every stage) or a non-empty list of distinct stage numbers ≥ 1, sorted.

    Stage 0 is the input, which has its own switch (``augment.include_input``).
    """
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{key} must be null or a non-empty list of stages, got {value!r}")
    stages = list(value)
    if 0 in stages:
        raise ValueError(f"{key} lists stage 0 (the input); set augment.include_input=true instead")
    if not all(is_int(s) and s >= 1 for s in stages) or len(set(stages)) != len(stages):
        raise ValueError(
            f"{key} must be distinct stage numbers ≥ 1 (1 = after the backbone's first "
            f"stage), got {stages!r}"
        )
    return sorted(int(s) for s in stages)
