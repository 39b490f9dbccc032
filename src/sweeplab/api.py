"""The run store from Python: runs as a DataFrame, one run's files, a table spec's cells.

This is what notebooks use, and it reads what ``sweeplab runs`` and the dashboard read:
the same scan, the same filter grammar, the same run lookup
(:mod:`sweeplab.tracking.store`, :mod:`sweeplab.tracking.runs`). It reads records and
the files beside them only; torch is imported when an eval cache file is opened, and
Hydra when a table spec is composed, never before::

    from sweeplab import load_runs, open_run, load_table

    runs = load_runs(name="digits_small_cnn", seed=[0, 1, 2])   # one row per run
    run = open_run(runs.run_id[0])                              # id, id prefix or directory
    run.curves                                                  # metrics.csv as a DataFrame
    run.eval_cache["test"].member_logits                        # [N, M, C], loaded on demand
    cells = load_table("experiments/digits_mixers.yaml")        # one row per cell
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from sweeplab.tracking import layout
from sweeplab.tracking.metrics_csv import read_metrics_csv
from sweeplab.tracking.runs import Run, RunError
from sweeplab.tracking.runs import open_run as _open_run
from sweeplab.tracking.store import (
    MISSING,
    RunEntry,
    metric_number,
    override_values,
    select,
    setting,
)

if TYPE_CHECKING:
    from sweeplab.tables.spec import TableSpec

__all__ = ["EvalCache", "RunData", "RunError", "load_runs", "load_table", "open_run"]

# Columns of every runs frame, around the settings and metrics of its runs.
LEADING = ("run_id", "name", "status")
TRAILING = ("created", "duration_s", "error", "problem", "path")
CACHE_SUFFIX = ".pt"


# --------------------------------------------------------------------------- load_runs


def filter_text(key: str, value: Any) -> str:
    """One ``key=value`` filter of ``sweeplab runs`` from a Python value.

    A list, tuple or set means any of its values (``seed=[0, 1]`` is ``seed=0,1``);
    ``True``/``None`` are written ``true``/``null`` as in an override.
    """

    def text(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        return "null" if item is None else str(item)

    if isinstance(value, list | tuple | set | frozenset):
        values = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return f"{key}={','.join(text(v) for v in values)}"
    return f"{key}={text(value)}"


def _cell(value: Any) -> Any:
    """A setting as a frame cell: override text read as YAML (``0`` → 0, ``1e-3`` → 0.001),
    lists and mappings as compact flow text, so every cell can be grouped on."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(value, str):
            try:
                return float(value) if value.strip().lower() not in ("nan", "inf") else value
            except ValueError:
                return value
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return value


def _setting_keys(entries: Sequence[RunEntry]) -> list[str]:
    """Override keys, then Hydra group choices, of the readable runs, in first-seen order."""
    keys: list[str] = []
    for entry in entries:
        keys.extend(k for k in override_values(entry) if k not in keys)
    for entry in entries:
        choices = (entry.record or {}).get("choices")
        if isinstance(choices, dict):
            keys.extend(
                str(k) for k in choices if not str(k).startswith("hydra") and str(k) not in keys
            )
    return keys


def _metric_keys(entries: Sequence[RunEntry]) -> list[str]:
    keys: dict[str, None] = {}
    for entry in entries:
        keys.update(dict.fromkeys(entry.metrics))
    return list(keys)


def runs_frame(entries: Sequence[RunEntry]) -> pd.DataFrame:
    """One row per entry: id, name, status, every setting, every metric, then the rest.

    An override of a record field (``name=…``) is the record's own column. A run whose record cannot be read keeps its row, with status ``unreadable`` and
    the reason in ``problem``.
    """
    readable = [e for e in entries if e.record is not None]
    settings = [k for k in _setting_keys(readable) if k not in (*LEADING, *TRAILING)]
    metrics = [m for m in _metric_keys(readable) if m not in settings]
    rows = []
    for entry in entries:
        row: dict[str, Any] = {"run_id": entry.run_id, "name": entry.name, "status": entry.status}
        for key in settings:
            value = setting(entry, key) if entry.record is not None else MISSING
            row[key] = None if value is MISSING else _cell(value)
        for key in metrics:
            value = metric_number(entry.metrics.get(key))
            row[key] = float("nan") if value is None else value
        error = (entry.record or {}).get("error")
        row.update(
            created=entry.created,
            duration_s=entry.duration_s,
            error=None if error is None else str(error),
            problem=entry.problem,
            path=str(entry.path),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=[*LEADING, *settings, *metrics, *TRAILING])


def load_runs(
    runs_dir: str | os.PathLike | None = None,
    *,
    where: str | Sequence[str] = (),
    status: str | None = None,
    sweep: str | None = None,
    include_debug: bool = False,
    **filters: Any,
) -> pd.DataFrame:
    """The runs of the store as a DataFrame, filtered as ``sweeplab runs`` filters.

    ``runs_dir`` defaults to the store every command finds (``$SWEEPLAB_RUNS_DIR``,
    else ``$SWEEPLAB_HOME/runs``, else ``./runs``). Filters are keyword arguments
    (``name="digits_small_cnn"``, ``seed=[0, 1, 2]`` or ``seed="0,1,2"``) and/or raw
    ``key=value`` strings in ``where`` for keys that are not Python names
    (``where=["trainer.max_epochs=1"]``, or one string split like a shell line).
    ``status``, ``sweep`` and ``include_debug`` are those of ``sweeplab runs
    --status/--sweep/--include-debug``: runs of the debug presets (``debug=fdr``…) are
    left out unless asked.

    Example:
        >>> runs = load_runs(name="digits_small_cnn", status="complete")
        >>> runs.groupby("augment")["test/cls/acc"].agg(["mean", "std"])
    """
    texts = shlex.split(where) if isinstance(where, str) else [str(w) for w in where]
    texts += [filter_text(key, value) for key, value in filters.items()]
    _, listed = select(
        layout.runs_dir(runs_dir),
        status=status,
        where=texts,
        sweep=sweep,
        include_debug=include_debug,
    )
    return runs_frame(listed)


# --------------------------------------------------------------------------- open_run


class EvalCache(Mapping[str, Any]):
    """A run's ``eval_cache/`` by name (``"test"``, ``"ood/held_out/test"``, ``"shift"``).

    Listing the names reads nothing; a file is loaded (``weights_only=True``) the first
    time it is asked for. A set's outputs come back as
    :class:`~sweeplab.evaluation.cache.EvalOutputs` (``member_logits [N, M, C]``,
    ``features [N, M, D]``, ``labels [N]``); other files (``shift``, ``head``, ``odin``)
    as their dict of tensors.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / layout.EVAL_CACHE_DIR
        self._loaded: dict[str, Any] = {}

    def _names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        files = self.path.rglob(f"*{CACHE_SUFFIX}")
        return sorted(p.relative_to(self.path).with_suffix("").as_posix() for p in files)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self.path / f"{name}{CACHE_SUFFIX}").is_file()

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in self:
                known = ", ".join(self._names()) or "none"
                raise KeyError(
                    f"no eval cache {name!r}: {self.path / (name + CACHE_SUFFIX)} does not "
                    f"exist (cached: {known})"
                )
            from sweeplab.evaluation.cache import EvalOutputs, load_tensors

            data = load_tensors(self.run_dir, name)
            if isinstance(data, dict) and "member_logits" in data:
                data = EvalOutputs(data["member_logits"], data["features"], data["labels"])
            self._loaded[name] = data
        return self._loaded[name]

    def __repr__(self) -> str:
        return f"EvalCache({self.path}, {self._names()})"


@dataclass(frozen=True)
class RunData(Run):
    """A run opened for analysis: its record, config, curves, eval cache and plots."""

    @property
    def error(self) -> str | None:
        error = self.record.get("error")
        return None if error is None else str(error)

    @cached_property
    def curves(self) -> pd.DataFrame:
        """``metrics.csv``: one row per logged step (``epoch``, ``step``, metrics)."""
        return pd.DataFrame(read_metrics_csv(self.metrics_file))

    @cached_property
    def eval_cache(self) -> EvalCache:
        return EvalCache(self.path)

    @property
    def plots(self) -> dict[str, Path]:
        """Every file under ``plots/`` by its name there (``"reliability_test.png"``)."""
        if not self.plots_dir.is_dir():
            return {}
        files = sorted(p for p in self.plots_dir.rglob("*") if p.is_file())
        return {p.relative_to(self.plots_dir).as_posix(): p for p in files}

    def __repr__(self) -> str:
        return f"RunData({self.run_id!r}, name={self.name!r}, status={self.status!r}, {self.path})"


def open_run(
    run: str | os.PathLike,
    runs_dir: str | os.PathLike | None = None,
    *,
    require_complete: bool = False,
) -> RunData:
    """A run by directory, run id or unique id prefix, as :class:`RunData`.

    A run that is missing, ambiguous or whose record is corrupt is a one-line
    :class:`RunError` naming what was looked for and where. Failed and running runs
    open too, unless ``require_complete``.
    """
    found = _open_run(run, runs_dir, require_complete=require_complete)
    return RunData(found.path, found.record)


# --------------------------------------------------------------------------- load_table


def load_table(
    spec: str | os.PathLike | TableSpec,
    runs_dir: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> pd.DataFrame:
    """A table spec's cells as a DataFrame, one row per row × column, as ``sweeplab table``
    finds them (same run ids, same means over seeds, in display units).

    ``spec`` is a spec file, a shipped spec's name (``"digits_mixers"``) or a parsed spec.

    ``overrides`` are appended to the spec's base, as on the command line; ``values``
    holds each seed's value and ``run_ids`` the runs the cell reads. A cell whose runs
    are missing has ``mean`` NaN and its count in ``missing``, never a zero.
    """
    from sweeplab.tables.catalog import find_spec
    from sweeplab.tables.cells import resolve
    from sweeplab.tables.render import CSV_FIELDS, against_reference, best_rows
    from sweeplab.tables.spec import TableSpec, load_spec

    if not isinstance(spec, TableSpec):
        spec = load_spec(find_spec(spec))
    if overrides:
        spec = spec.with_extra_overrides(list(overrides))
    table = resolve(spec, runs_dir)
    best = best_rows(table)
    rows = []
    for row in spec.rows:
        for column in spec.columns:
            cell = table.cell(row.label, column.label)
            comparison = against_reference(table, cell)
            rows.append(
                {
                    "row": row.label,
                    "column": column.label,
                    "metric": column.metric,
                    "mean": cell.mean,
                    "std": cell.std,
                    "n": cell.n,
                    "missing": cell.missing,
                    "best": row.label in best[column.label],
                    "reference": None if comparison is None else comparison.reference.value,
                    "difference": None if comparison is None else comparison.difference,
                    "outside_tolerance": None if comparison is None else comparison.outside,
                    "source": None if comparison is None else comparison.reference.source,
                    "values": dict(cell.values),
                    "run_ids": [slot.run_id for slot in cell.group.slots],
                }
            )
    frame = pd.DataFrame(rows, columns=[*CSV_FIELDS, "values", "run_ids"])  # as the CSV has them
    return frame.astype({"mean": float, "std": float})
