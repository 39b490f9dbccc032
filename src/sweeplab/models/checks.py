"""Validation of backbone options, with errors that name the config key.

Options arrive from YAML and the command line, so a bad value should fail at
construction with the key the user typed (``backbone.widths``), not deep in a
forward pass with a shape error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sweeplab.checks import boolean, is_int, positive_int

__all__ = ["boolean", "mapping", "nonempty_str", "positive_int", "positive_int_list", "probability"]


def positive_int_list(key: str, value: Any, *, allow_empty: bool = False) -> list[int]:
    """Return ``value`` as a list of integers ≥ 1; YAML lists arrive as ``ListConfig``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{key} must be a list of positive integers, got {value!r}")
    items = list(value)
    if not items and not allow_empty:
        raise ValueError(f"{key} must be a non-empty list of positive integers, got []")
    for item in items:
        if not is_int(item) or item < 1:
            raise ValueError(f"{key} must be a list of positive integers, got {items!r}")
    return items


def probability(key: str, value: Any) -> float:
    """Return ``value`` as a float in [0, 1), the range where dropout is meaningful."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{key} must be a number in [0, 1), got {value!r}")
    return float(value)


def nonempty_str(key: str, value: Any) -> str:
    """Return ``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    return value


def mapping(key: str, value: Any) -> dict[str, Any]:
    """Return ``value`` (``None``, a dict or a ``DictConfig``) as a plain dict."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping, got {value!r}")
    try:  # resolve a DictConfig into plain containers so libraries see lists, not ListConfigs
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            return dict(OmegaConf.to_container(value, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a core dependency
        pass
    return dict(value)
