"""sweeplab: composable, resumable experiments on image classifiers.

``from sweeplab import load_runs, open_run, load_table`` is the Python API over the
run store (:mod:`sweeplab.api`). It is imported on first use, so ``import sweeplab``
(which every command does) stays instant and pulls in neither pandas nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

API = ("load_runs", "open_run", "load_table")
__all__ = ["__version__", "load_runs", "load_table", "open_run"]

if TYPE_CHECKING:
    from sweeplab.api import load_runs, load_table, open_run


def __getattr__(name: str) -> Any:
    if name in API:
        from sweeplab import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweeplab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
