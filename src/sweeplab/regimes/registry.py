"""The regime registry: names → Regime classes, for ``--help`` and error messages.

Like timm's ``register_model``/``list_models``: a regime module registers its
class with ``@register_regime("name")``. The built-in regimes are imported on
the first lookup, so listing them needs no knowledge of where they live.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeplab.regimes.base import Regime

_REGIMES: dict[str, type[Regime]] = {}
# Modules of this package that hold shared machinery rather than a regime.
_NOT_REGIMES = frozenset({"base", "registry", "schedules", "loading", "init_from", "merge_methods"})


def register_regime(name: str):
    """Class decorator: make a Regime subclass known as ``name``."""

    def register(cls: type[Regime]) -> type[Regime]:
        existing = _REGIMES.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"regime {name!r} is registered twice: {existing.__module__}."
                f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        _REGIMES[name] = cls
        cls.registered_name = name
        return cls

    return register


def _import_builtins() -> None:
    import sweeplab.regimes as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_REGIMES:
            importlib.import_module(f"{package.__name__}.{info.name}")


def list_regimes() -> list[str]:
    """Every registered regime name, sorted."""
    _import_builtins()
    return sorted(_REGIMES)


def regime_class(name: str) -> type[Regime]:
    """The class registered as ``name``; the error lists the known regimes."""
    _import_builtins()
    if name not in _REGIMES:
        raise KeyError(f"unknown regime {name!r}; known regimes: {', '.join(sorted(_REGIMES))}")
    return _REGIMES[name]


def describe_regimes() -> str:
    """One line per regime, its name and the first line of its docstring."""
    lines = []
    names = list_regimes()
    width = max(map(len, names), default=0)
    for name in names:
        doc = (_REGIMES[name].__doc__ or "").strip().splitlines()
        lines.append(f"  {name:<{width}}  {doc[0] if doc else ''}")
    return "\n".join(lines)
