"""Validation of mixer options, failing at construction with the ``augment.<key>`` name.

A mixer is built before training starts, so a value that cannot work (a negative
``alpha``, a probability above 1, a box scale of 0) stops the run there, with the
key the user typed, instead of turning into NaN λ draws or empty boxes later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sweeplab import checks as shared


def positive(key: str, value: Any) -> float:
    """``value`` as a float > 0 (a Beta concentration, a loss weight that must act)."""
    if not shared.is_real(value) or not value > 0:
        raise ValueError(f"augment.{key} must be > 0, got {value!r}")
    return float(value)


def non_negative(key: str, value: Any) -> float:
    """``value`` as a float ≥ 0."""
    if not shared.is_real(value) or not value >= 0:
        raise ValueError(f"augment.{key} must be ≥ 0, got {value!r}")
    return float(value)


def probability(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1]."""
    if not shared.is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"augment.{key} must be in [0, 1], got {value!r}")
    return float(value)


def smoothing(key: str, value: Any) -> float:
    """A label-smoothing amount: a float in [0, 1) (1 would erase the labels)."""
    if not shared.is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"augment.{key} must be in [0, 1), got {value!r}")
    return float(value)


def scale_range(key: str, value: Any) -> tuple[float, float]:
    """A pair ``[min, max]`` of fractions of the image side with ``0 < min ≤ max ≤ 1``."""
    is_pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if is_pair and all(shared.is_real(v) for v in value):
        low, high = float(value[0]), float(value[1])
        if 0.0 < low <= high <= 1.0:
            return low, high
    shown = list(value) if is_pair else value
    raise ValueError(
        f"augment.{key} must be a pair [min, max] with 0 < min ≤ max ≤ 1, got {shown!r}"
    )


def optional_scale_range(key: str, value: Any) -> tuple[float, float] | None:
    """``None`` or a :func:`scale_range`."""
    return None if value is None else scale_range(key, value)


def non_negative_int(key: str, value: Any) -> int:
    return shared.non_negative_int(f"augment.{key}", value)


def boolean(key: str, value: Any) -> bool:
    return shared.boolean(f"augment.{key}", value)


def one_of(key: str, value: Any, choices: Iterable[str]) -> str:
    return shared.one_of(f"augment.{key}", value, choices)


def stage_list(key: str, value: Any) -> list[int] | None:
    """``None`` (every stage) or a non-empty list of distinct stage numbers ≥ 1."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"augment.{key} must be null or a non-empty list of stages, got {value!r}")
    stages = list(value)
    if 0 in stages:
        raise ValueError(
            f"augment.{key} lists stage 0 (the input); set augment.include_input=true instead"
        )
    if not all(shared.is_int(s) and s >= 1 for s in stages) or len(set(stages)) != len(stages):
        raise ValueError(
            f"augment.{key} must be distinct stage numbers ≥ 1 (1 = after the backbone's first "
            f"stage), got {stages!r}"
        )
    return sorted(int(s) for s in stages)
