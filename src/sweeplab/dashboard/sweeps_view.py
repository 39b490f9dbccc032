"""Sweeps and Optuna studies as the frames of the dashboard's Sweeps page.

A sweep is one launch of ``sweeplab train -m`` (``<runs_dir>/_sweeps/<dir>/``: its
jobs' outcomes name its runs); ``sweeplab table --launch`` names its sweep directory
after the table spec, and any other sweep is known by its launch time. A study is an
Optuna study of ``sweeplab search`` in ``<runs_dir>/_optuna/<study>.db``; its trials
are ordinary runs, found in the store by the study's base overrides and the trial's
parameters. Either way the page shows one row per run (its settings that differ and
its metrics) and draws them as parallel coordinates; a study also gets Optuna's
parameter importances. Hydra and Optuna are imported only here, when the page opens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sweeplab.dashboard.tables import display, setting, varying_keys
from sweeplab.tracking.store import RunEntry, filter_runs, metric_number

STUDIES_DIR = "_optuna"
RUN = "run_id"
LOG_SPAN = 100.0  # a positive numeric axis spanning this factor or more is drawn in log10


@dataclass(frozen=True)
class SweepOption:
    """One entry of the page's picker: a sweep directory or a study in a SQLite file."""

    kind: str  # "sweep" or "study"
    label: str
    path: Path
    study: str = ""


def sweep_label(name: str, started: str, runs: int) -> str:
    """``cifar10_mixup (2026-01-31 12:00:00, 15 runs)`` for a named sweep; the time alone
    for one Hydra named only by its launch time."""
    from sweeplab.tracking.sweeps import SWEEP_TIME_LENGTH

    stem = name[:-SWEEP_TIME_LENGTH].rstrip("_") if len(name) > SWEEP_TIME_LENGTH else ""
    count = f"{runs} run{'s' * (runs != 1)}"
    return f"{stem} ({started}, {count})" if stem else f"{started} ({count})"


def options(runs_dir: Path) -> list[SweepOption]:
    """Every sweep (newest first), then every study of the store."""
    from sweeplab.tracking.sweeps import scan_sweeps

    found = [
        SweepOption("sweep", "sweep " + sweep_label(s.name, s.started, len(s.outcomes)), s.path)
        for s in reversed(scan_sweeps(runs_dir))
    ]
    for db in sorted((Path(runs_dir) / STUDIES_DIR).glob("*.db")):
        for study in study_names(db):
            found.append(SweepOption("study", f"study {study} ({db.name})", db, study))
    return found


def sweep_runs(option: SweepOption, entries: Sequence[RunEntry]) -> list[RunEntry]:
    """The readable runs a sweep's jobs made or found complete, in store order."""
    from sweeplab.tracking.sweeps import read_outcomes

    ids = {str(o.get("run_id")) for o in read_outcomes(option.path)}
    return [e for e in entries if e.run_id in ids and e.record is not None]


# --------------------------------------------------------------------------- studies


def _storage(db: Path) -> str:
    return f"sqlite:///{db}"


def study_names(db: Path) -> list[str]:
    import optuna

    try:
        return sorted(optuna.study.get_all_study_names(storage=_storage(db)))
    except Exception:  # not an Optuna database: it is simply not offered
        return []


def load_study(option: SweepOption):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=option.study, storage=_storage(option.path))


@dataclass(frozen=True)
class StudyView:
    """A study's complete trials, each with its run when the store has exactly one."""

    trials: pd.DataFrame  # trial, the params, objective, run_id ("" if not found)
    params: list[str]
    metric: str  # the study's objective: the record metric it optimises
    direction: str
    runs: dict[int, RunEntry]  # trial number → its run


def study_view(study, entries: Sequence[RunEntry]) -> StudyView:
    """The complete trials of ``study`` and their runs: the runs matching the study's base
    overrides and the trial's parameters as ``sweeplab search`` passed them."""
    from optuna.trial import TrialState

    space = study.user_attrs.get("sweeplab_space") or {}
    base = [str(o) for o in study.user_attrs.get("sweeplab_base") or []]
    readable = [e for e in entries if e.record is not None and e.status == "complete"]
    rows, runs, params = [], {}, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        params.extend(k for k in trial.params if k not in params)
        where = [*base, *(f"{k}={v!r}" for k, v in trial.params.items())]
        try:
            found = filter_runs(readable, where=where)
        except ValueError:
            found = []
        row = {"trial": trial.number, **trial.params, "objective": trial.value, RUN: ""}
        if len(found) == 1:
            runs[trial.number] = found[0]
            row[RUN] = found[0].run_id
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["trial", *params, "objective", RUN])
    return StudyView(
        trials=frame,
        params=params,
        metric=str(space.get("metric", "objective")),
        direction=str(space.get("direction", study.direction.name.lower())),
        runs=runs,
    )


def importances(study, view: StudyView, metric: str | None = None) -> pd.DataFrame:
    """Optuna's parameter importances (fANOVA, seeded) for the objective, or for ``metric``
    of the trials' runs when every complete trial's run has it. Raises ``ValueError`` with
    Optuna's reason when they cannot be computed (e.g. fewer than two trials)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    target = None
    if metric is not None:
        values = {n: metric_number(r.metrics.get(metric)) for n, r in view.runs.items()}
        if len(values) != len(view.trials) or any(v is None for v in values.values()):
            raise ValueError(f"not every trial's run has {metric}")
        target = lambda trial: values[trial.number]  # noqa: E731
    try:
        scores = get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), target=target
        )
    except (RuntimeError, ValueError, optuna.exceptions.OptunaError) as exc:
        raise ValueError(str(exc)) from exc
    return pd.DataFrame(
        {"parameter": list(scores), "importance": [float(v) for v in scores.values()]}
    )


# --------------------------------------------------------------------------- runs and axes


def runs_table(runs: Sequence[RunEntry], metrics: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per run: its id, the settings that differ between the runs, the metrics."""
    keys = varying_keys(runs)
    rows = [
        {RUN: e.run_id, **{k: setting(e, k) for k in keys},
         **{m: metric_number(e.metrics.get(m)) for m in metrics}}
        for e in runs
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=[RUN, *keys, *metrics]), keys


def _numbers(values: Sequence[Any]) -> list[float] | None:
    out = []
    for value in values:
        if isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(number):
            return None
        out.append(number)
    return out


@dataclass(frozen=True)
class Axes:
    """Parallel coordinates in long form: one point per line and axis, and the tick labels."""

    lines: pd.DataFrame  # line, axis, position (0–1), value (text), color (the metric)
    ticks: pd.DataFrame  # axis, position, label
    order: list[str]  # the axes, left to right: the settings, the metric last


def _axis(name: str, values: Sequence[Any]) -> tuple[list[float], list[tuple[float, str]], str]:
    """Positions in [0, 1] of one axis's values, its ticks, and how it is scaled."""
    numbers = _numbers(values)
    if numbers is not None:
        low, high = min(numbers), max(numbers)
        log = low > 0 and high / low >= LOG_SPAN
        scale = (lambda v: math.log10(v)) if log else (lambda v: v)
        lo, hi = scale(low), scale(high)
        span = hi - lo

        def position(v: float) -> float:
            return 0.5 if span == 0 else (scale(v) - lo) / span

        distinct = sorted(set(numbers))
        shown = distinct if len(distinct) <= 6 else [low, high]
        ticks = [(position(v), f"{v:.4g}") for v in shown]
        return [position(v) for v in numbers], ticks, "log" if log else "linear"
    labels = sorted({display(v) for v in values})
    where = {
        label: (i / (len(labels) - 1) if len(labels) > 1 else 0.5) for i, label in enumerate(labels)
    }
    return (
        [where[display(v)] for v in values],
        [(p, label) for label, p in where.items()],
        "categories",
    )


def parallel_axes(table: pd.DataFrame, keys: Sequence[str], metric: str) -> Axes:
    """The rows of ``table`` (``run_id``, ``keys``, ``metric``) as parallel coordinates over
    the keys and the metric, each axis scaled to [0, 1] on its own: numbers linearly (log10
    when positive and spanning ×100 or more), anything else as evenly spaced categories.
    Rows without the metric are left out."""
    rows = table.dropna(subset=[metric]).reset_index(drop=True)
    order = [*keys, metric]
    lines, ticks = [], []
    for name in order:
        values = rows[name].tolist()
        if not values:
            continue
        positions, axis_ticks, scale = _axis(name, values)
        title = f"{name} (log)" if scale == "log" else name
        lines.extend(
            {"line": str(rows.at[i, RUN]), "axis": title, "position": p, "value": display(v),
             "color": float(rows.at[i, metric])}
            for i, (p, v) in enumerate(zip(positions, values, strict=True))
        )  # fmt: skip
        ticks.extend({"axis": title, "position": p, "label": label} for p, label in axis_ticks)
        order[order.index(name)] = title
    return Axes(
        lines=pd.DataFrame(lines, columns=["line", "axis", "position", "value", "color"]),
        ticks=pd.DataFrame(ticks, columns=["axis", "position", "label"]),
        order=order,
    )
