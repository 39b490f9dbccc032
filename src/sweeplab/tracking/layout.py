"""Where the run store is, and what a run directory holds: the names every reader shares.

A run lives in ``<runs_dir>/<name>/<run_id>/``::

    record.json           the run record (status, config, metrics, provenance, artifacts)
    config.yaml           the resolved config, for people
    metrics.csv           per-epoch metrics
    checkpoints/          last.ckpt (for resuming) and best.ckpt (best val/cls/acc)
    eval_cache/           the one-pass evaluation outputs every metric is computed from
    plots/                pictures (reliability, OOD histograms, mixed samples)
    interpolation.json    a merge's interpolation curve between two runs (regime=merge)

The store is found by one rule, used by every command (train, eval, runs, tables,
dashboard, sync): an explicit directory (``--runs-dir`` or ``paths.runs_dir=``) wins;
else ``$SWEEPLAB_RUNS_DIR``; else ``$SWEEPLAB_HOME/runs``; else ``./runs``.
``$SWEEPLAB_HOME`` also moves data and caches (``conf/paths/default.yaml``).
"""

from __future__ import annotations

import os
from pathlib import Path

RECORD_FILE = "record.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
CHECKPOINTS = {"last": LAST_CKPT, "best": BEST_CKPT}
EVAL_CACHE_DIR = "eval_cache"
PLOTS_DIR = "plots"
INTERPOLATION_FILE = "interpolation.json"

RUNS_DIR_ENV = "SWEEPLAB_RUNS_DIR"
HOME_ENV = "SWEEPLAB_HOME"
DEFAULT_RUNS_DIR = "runs"
# The rule in words, for every command's ``--runs-dir`` help.
RUNS_DIR_RULE = f"${RUNS_DIR_ENV}, else ${HOME_ENV}/{DEFAULT_RUNS_DIR}, else ./{DEFAULT_RUNS_DIR}"


def runs_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The run store: ``explicit``, else ``$SWEEPLAB_RUNS_DIR``, else ``$SWEEPLAB_HOME/runs``,
    else ``./runs``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    if os.environ.get(RUNS_DIR_ENV):
        return Path(os.environ[RUNS_DIR_ENV]).expanduser()
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser() / DEFAULT_RUNS_DIR
    return Path(DEFAULT_RUNS_DIR)


def runs_dir_from_overrides(overrides: list[str]) -> Path:
    """The run store a command over stored runs uses when given ``paths.root_dir=…`` or
    ``paths.runs_dir=…`` as overrides (the last one wins), as ``sweeplab train`` would."""
    explicit = None
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "paths.root_dir":
            explicit = Path(value) / DEFAULT_RUNS_DIR
        elif key == "paths.runs_dir":
            explicit = Path(value)
    return runs_dir(explicit)


def checkpoint_path(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """``checkpoints/last.ckpt`` or ``checkpoints/best.ckpt`` of a run."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {which!r}")
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINTS[which]
