"""Finished runs by name: open one (dir, id or id prefix) or select several with filters.

This is the reading side of "runs as models": it finds a run in the store, checks
that its record can be trusted, and says where its files are. Rebuilding the model
is the training side's job (:mod:`sweeplab.regimes.loading`); nothing here imports
torch. Every failure is a :class:`RunError` whose one-line message names the run and
the file at fault and says what to do.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeplab.tracking import layout
from sweeplab.tracking.record import CorruptRecordError, read_record
from sweeplab.tracking.store import filter_runs, scan_store


class RunError(ValueError):
    """A run that cannot be used as asked: missing, ambiguous, incomplete or corrupt."""


@dataclass(frozen=True)
class Run:
    """One run directory and its (validated) record."""

    path: Path
    record: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.record["run_id"])

    @property
    def name(self) -> str:
        return str(self.record.get("name") or self.path.parent.name)

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def config(self) -> dict[str, Any]:
        config = self.record.get("config")
        if not isinstance(config, dict) or not config:
            raise RunError(
                f"run {self.run_id}: {self.path / layout.RECORD_FILE} has no stored config; "
                "it cannot be rebuilt (retrain it)"
            )
        return config

    @property
    def metrics(self) -> dict[str, Any]:
        metrics = self.record.get("metrics")
        return metrics if isinstance(metrics, dict) else {}

    @property
    def record_file(self) -> Path:
        return self.path / layout.RECORD_FILE

    @property
    def config_file(self) -> Path:
        return self.path / layout.CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / layout.METRICS_FILE

    @property
    def eval_cache_dir(self) -> Path:
        return self.path / layout.EVAL_CACHE_DIR

    @property
    def plots_dir(self) -> Path:
        return self.path / layout.PLOTS_DIR

    def checkpoint(self, which: str = "last") -> Path:
        """The path of ``checkpoints/{last,best}.ckpt``; an error if it is not there."""
        try:
            path = layout.checkpoint_path(self.path, which)
        except ValueError as exc:
            raise RunError(f"run {self.run_id}: {exc}") from exc
        if not path.is_file():
            hint = (
                "it was trained without val, or with callbacks.model_checkpoint=null; "
                "use checkpoint='last'"
                if which == "best"
                else "retrain the run (delete its directory and relaunch)"
            )
            raise RunError(f"run {self.run_id}: no checkpoint at {path}; {hint}")
        return path


def _record_of(run_dir: Path) -> dict[str, Any]:
    try:
        record = read_record(run_dir)
    except CorruptRecordError as exc:
        raise RunError(f"run {run_dir.name}: {exc}; delete the run directory and retrain") from exc
    except OSError as exc:
        raise RunError(
            f"run {run_dir.name}: cannot read {run_dir / layout.RECORD_FILE} ({exc})"
        ) from exc
    if record is None:
        raise RunError(
            f"run {run_dir.name}: no {layout.RECORD_FILE} in {run_dir}; it never started "
            "or is not a run directory"
        )
    return record


def _find_dir(spec: str, store: Path) -> Path:
    """A run directory from a path, or the one run whose id starts with ``spec``."""
    path = Path(spec).expanduser()
    if (path / layout.RECORD_FILE).exists():
        return path.resolve()
    if not spec or os.sep in spec or (path.is_dir() and (path / layout.CONFIG_FILE).exists()):
        raise RunError(
            f"run {spec!r}: no {layout.RECORD_FILE} in {path}; not a run directory, or a run "
            "that never started"
        )
    matches = sorted(p.parent for p in store.glob(f"*/{spec}*/{layout.RECORD_FILE}"))
    if not matches:
        raise RunError(
            f"no run {spec!r}: not a run directory, and no run id starting with it under "
            f"{store} (list runs with: sweeplab runs --runs-dir {store})"
        )
    if len(matches) > 1:
        names = ", ".join(str(m) for m in matches[:5])
        raise RunError(f"run id {spec!r} is ambiguous under {store}: {names}; give more of it")
    return matches[0].resolve()


def open_run(
    spec: str | os.PathLike,
    runs_dir: str | os.PathLike | None = None,
    *,
    require_complete: bool = True,
) -> Run:
    """The run at a directory, or with a run id (or unique id prefix) in the store.

    ``runs_dir`` defaults to the store that :func:`sweeplab.tracking.layout.runs_dir`
    finds. With ``require_complete`` a running or failed run is an error.
    """
    store = layout.runs_dir(runs_dir)
    run_dir = _find_dir(str(spec), store)
    run = Run(run_dir, _record_of(run_dir))
    if require_complete and run.status != "complete":
        reason = f" ({run.record.get('error')})" if run.record.get("error") else ""
        raise RunError(
            f"run {run.run_id} is {run.status}{reason}, not complete ({run.record_file}); "
            "relaunch its sweeplab train command to finish it"
        )
    return run


def selector_filters(selector: str | Sequence[str]) -> list[str]:
    """The ``key=value`` filters of a selector (a string is split like a shell line)."""
    filters = shlex.split(selector) if isinstance(selector, str) else [str(s) for s in selector]
    if not filters:
        raise RunError("an empty run selector matches every run; name at least one key=value")
    return filters


def select_runs(
    selector: str | Sequence[str],
    runs_dir: str | os.PathLike | None = None,
    *,
    status: str | None = "complete",
) -> list[Run]:
    """The runs of the store that match every filter, in the order ``sweeplab runs`` lists.

    The filters are those of ``sweeplab runs`` (``name=digits_small_cnn seed=0``);
    by default only complete runs are selected, and an empty selection is an error.
    Debug runs (``debug=…`` presets) are never selected: an ensemble, a teacher or merge
    ingredients are made of real results (a run id still opens any run).
    """
    filters = selector_filters(selector)
    store = layout.runs_dir(runs_dir)
    try:
        entries = filter_runs(scan_store(store), status=status, where=filters)
    except ValueError as exc:
        raise RunError(f"run selector {' '.join(filters)!r}: {exc}") from exc
    if not entries:
        which = f"{status} run" if status else "run"
        raise RunError(
            f"no {which} matches {' '.join(filters)!r} under {store} "
            f"(check with: sweeplab runs --runs-dir {store} {' '.join(filters)})"
        )
    return [Run(entry.path, entry.record) for entry in entries]
