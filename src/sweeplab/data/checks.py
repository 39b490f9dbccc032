"""Validation of data config values, failing early with the config key in the message.

A wrong value should stop a run in ``__init__`` with ``data.<key>`` in the error, not
surface minutes later as a shape mismatch deep inside a training step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from sweeplab import checks as shared

MAX_SEED = 2**32  # the range Lightning's seed_everything accepts


_is_int = shared.is_int
_is_real = shared.is_real


def positive_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 1."""
    return shared.positive_int(f"data.{key}", value)


def non_negative_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 0."""
    return shared.non_negative_int(f"data.{key}", value)


def seed(key: str, value: Any) -> int:
    """A seed: an integer in ``[0, 2**32)``; 0 is a seed like any other."""
    if not _is_int(value) or not 0 <= value < MAX_SEED:
        raise ValueError(f"data.{key} must be an integer in [0, 2**32), got {value!r}")
    return int(value)


def open_fraction(key: str, value: Any) -> float:
    """``value`` as a ``float`` strictly between 0 and 1."""
    if not _is_real(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"data.{key} must be in (0, 1), got {value!r}")
    return float(value)


def boolean(key: str, value: Any) -> bool:
    """A real boolean: ``"false"`` as a string is truthy and almost certainly a mistake."""
    return shared.boolean(f"data.{key}", value)


def one_of(key: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    return shared.one_of(f"data.{key}", value, choices)


def image_size(key: str, value: Any) -> tuple[int, int] | None:
    """``None``, an int ``S`` (→ ``(S, S)``) or a pair ``[H, W]`` of positive ints."""
    if value is None:
        return None
    if _is_int(value):
        side = positive_int(key, value)
        return side, side
    is_pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if is_pair and all(_is_int(v) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"data.{key} must be a positive integer or a pair [H, W], got {value!r}")


def per_channel(
    key: str, values: Any, channels: int, *, default: float, positive: bool = False
) -> tuple[float, ...]:
    """One finite float per channel (``default`` for each when ``values`` is None)."""
    if values is None:
        return (float(default),) * channels
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"data.{key} must be a list of {channels} numbers, got {values!r}")
    values = list(values)
    if len(values) != channels or not all(_is_real(v) and math.isfinite(v) for v in values):
        raise ValueError(
            f"data.{key} must be a list of {channels} finite numbers "
            f"(one per channel), got {values!r}"
        )
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"data.{key} must be > 0 for every channel, got {values!r}")
    return tuple(float(v) for v in values)


def class_list(key: str, values: Any) -> tuple[int, ...]:
    """Distinct non-negative class labels, sorted; the range is checked once classes are known."""
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"data.{key} must be a list of class labels, got {values!r}")
    values = list(values)
    if not all(_is_int(v) and v >= 0 for v in values):
        raise ValueError(f"data.{key} must hold non-negative integer labels, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"data.{key} must not repeat a class, got {values!r}")
    return tuple(sorted(int(v) for v in values))


def held_out_classes_within(key: str, held_out: Sequence[int], num_classes: int) -> None:
    """Held-out labels must exist and leave at least two classes to classify."""
    invalid = [c for c in held_out if c >= num_classes]
    if invalid:
        raise ValueError(
            f"data.{key} must be labels in 0..{num_classes - 1}, got {list(held_out)} "
            f"({invalid} out of range)"
        )
    if num_classes - len(held_out) < 2:
        raise ValueError(
            f"data.{key} must leave at least 2 of the {num_classes} classes, got {list(held_out)}"
        )
