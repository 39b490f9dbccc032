"""Config-value checks shared by every part: fail at construction, naming the key.

Values arrive from YAML and the command line, so a wrong one should stop a run
before training with the key the user typed (``data.batch_size``), not surface
later as a shape error deep inside a step. Booleans are never numbers here, and
the string ``"false"`` is never a boolean.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def positive_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 0."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def boolean(key: str, value: Any) -> bool:
    """A real boolean."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def one_of(key: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    return value
