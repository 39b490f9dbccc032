"""Data options that only data modules have: image sizes, channels, per-channel values, classes.

They follow the convention of :mod:`sweeplab.checks` (full key in, converted value
out, ``ValueError`` naming the key); the generic checks live there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from sweeplab.checks import is_int, is_real, positive_int


def channels(key: str, value: Any) -> int:
    """1 (decoded as grey) or 3 (RGB): the two modes images are decoded in."""
    if not is_int(value) or value not in (1, 3):
        raise ValueError(f"{key} must be 1 or 3, got {value!r}")
    return int(value)


def image_size(key: str, value: Any) -> tuple[int, int] | None:
    """``None``, an int ``S`` (→ ``(S, S)``) or a pair ``[H, W]`` of positive ints."""
    if value is None:
        return None
    if is_int(value):
        side = positive_int(key, value)
        return side, side
    is_pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if is_pair and all(is_int(v) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{key} must be a positive integer or a pair [H, W], got {value!r}")


def per_channel(
    key: str, values: Any, channels: int, *, default: float, positive: bool = False
) -> tuple[float, ...]:
    """One finite float per channel (``default`` for each when ``values`` is None)."""
    if values is None:
        return (float(default),) * channels
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{key} must be a list of {channels} numbers, got {values!r}")
    values = list(values)
    if len(values) != channels or not all(is_real(v) and math.isfinite(v) for v in values):
        raise ValueError(
            f"{key} must be a list of {channels} finite numbers (one per channel), got {values!r}"
        )
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"{key} must be > 0 for every channel, got {values!r}")
    return tuple(float(v) for v in values)


def class_list(key: str, values: Any) -> tuple[int, ...]:
    """Distinct non-negative class labels, sorted; the range is checked once classes are known."""
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{key} must be a list of class labels, got {values!r}")
    values = list(values)
    if not all(is_int(v) and v >= 0 for v in values):
        raise ValueError(f"{key} must hold non-negative integer labels, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{key} must not repeat a class, got {values!r}")
    return tuple(sorted(int(v) for v in values))


def held_out_classes_within(key: str, held_out: Sequence[int], num_classes: int) -> None:
    """Held-out labels must exist and leave at least two classes to classify."""
    invalid = [c for c in held_out if c >= num_classes]
    if invalid:
        raise ValueError(
            f"{key} must be labels in 0..{num_classes - 1}, got {list(held_out)} "
            f"({invalid} out of range)"
        )
    if num_classes - len(held_out) < 2:
        raise ValueError(
            f"{key} must leave at least 2 of the {num_classes} classes, got {list(held_out)}"
        )
