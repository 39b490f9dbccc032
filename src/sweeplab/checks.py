"""Config-value checks shared by every part: fail at construction, naming the key.

Values arrive from YAML and the command line, so a wrong one should stop a run
before training with the key the user typed, not surface later as a shape error or
a NaN deep inside a step. One convention holds for every check here and in the
group modules (``augment/checks.py``, ``data/checks.py``): it takes the full dotted
config key (``data.batch_size``, ``augment.alpha``, ``backbone.widths``) and the
value, returns the value converted, and raises
``ValueError("<key> must be …, got <value!r>")``. An argument the runner passes in
rather than the user (``num_classes``) goes by its bare name.

Booleans are never numbers here, and the string ``"false"`` is never a boolean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

MAX_SEED = 2**32  # the range Lightning's seed_everything accepts


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


# ------------------------------------------------------------------------- integers
def positive_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 1 (a size, a count)."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 0 (a padding, a number of workers)."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def seed(key: str, value: Any) -> int:
    """A seed: an integer in ``[0, 2**32)``; 0 is a seed like any other."""
    if not is_int(value) or not 0 <= value < MAX_SEED:
        raise ValueError(f"{key} must be an integer in [0, 2**32), got {value!r}")
    return int(value)


def positive_int_list(key: str, value: Any, *, allow_empty: bool = False) -> list[int]:
    """``value`` as a list of integers ≥ 1; YAML lists arrive as ``ListConfig``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{key} must be a list of positive integers, got {value!r}")
    items = list(value)
    if not items and not allow_empty:
        raise ValueError(f"{key} must be a non-empty list of positive integers, got []")
    if not all(is_int(item) and item >= 1 for item in items):
        raise ValueError(f"{key} must be a list of positive integers, got {items!r}")
    return [int(item) for item in items]


# -------------------------------------------------------------------------- numbers
def positive(key: str, value: Any) -> float:
    """``value`` as a float > 0 (a Beta concentration, a weight that must act)."""
    if not is_real(value) or not value > 0:
        raise ValueError(f"{key} must be > 0, got {value!r}")
    return float(value)


def non_negative(key: str, value: Any) -> float:
    """``value`` as a float ≥ 0 (a weight where 0 switches a term off)."""
    if not is_real(value) or not value >= 0:
        raise ValueError(f"{key} must be ≥ 0, got {value!r}")
    return float(value)


def probability(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1]: a chance, where never and always both make sense."""
    if not is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be in [0, 1], got {value!r}")
    return float(value)


def fraction_below_one(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1): a share that must leave something whole.

    Label smoothing of 1 would erase the labels and dropout of 1 every feature; 0 is
    the usual "off".
    """
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{key} must be in [0, 1), got {value!r}")
    return float(value)


def open_fraction(key: str, value: Any) -> float:
    """``value`` as a float in (0, 1): a share that splits a set into two non-empty parts."""
    if not is_real(value) or not 0.0 < value < 1.0:
        raise ValueError(f"{key} must be in (0, 1), got {value!r}")
    return float(value)


# ------------------------------------------------------------------- other values
def boolean(key: str, value: Any) -> bool:
    """A real boolean: ``"false"`` as a string is truthy and almost certainly a mistake."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def one_of(key: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (a mapping's keys count as its choices)."""
    choices = tuple(choices)
    if value not in choices:
        shown = ", ".join(str(choice) for choice in choices)
        raise ValueError(f"{key} must be one of {shown}; got {value!r}")
    return value


def nonempty_str(key: str, value: Any) -> str:
    """``value`` if it is a string with something other than whitespace in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    return value


def mapping(key: str, value: Any) -> dict[str, Any]:
    """``value`` (``None``, a dict or a ``DictConfig``) as a plain dict.

    A ``DictConfig`` is resolved into plain containers, so the library it is passed to
    sees lists and dicts, not OmegaConf's own types.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping, got {value!r}")
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a core dependency
        return dict(value)
    if isinstance(value, DictConfig):
        return dict(OmegaConf.to_container(value, resolve=True))
    return dict(value)
