"""Run entries shaped into the frames the dashboard shows.

Everything here is a pure function of run entries and the files beside their
records, so it is tested without a browser; the app only lays the frames out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sweeplab.tracking.layout import METRICS_FILE, PLOTS_DIR
from sweeplab.tracking.metrics_csv import read_metrics_csv
from sweeplab.tracking.run_groups import setting_keys
from sweeplab.tracking.store import MISSING, RunEntry
from sweeplab.tracking.store import metric_number as _number
from sweeplab.tracking.store import setting as store_setting

# The metrics the runs table shows when some listed run has them.
KEY_METRICS = (
    "test/cls/acc",
    "test/cal/ece",
    "test/cal/ece_ts",
    "ood/near/energy/auroc",
    "ood/far/energy/auroc",
    "shift/mean/acc",
)
SEED_KEY = "seed"
RELIABILITY_FILE = f"{PLOTS_DIR}/reliability_test.json"


# --------------------------------------------------------------------------- settings


def display(value: Any) -> str:
    """A setting as text, written one way whichever way the run got it.

    An override's text (``[8,16]``) and a config value (the list ``[8, 16]``) of the
    same setting must read alike in one column, so lists and mappings are parsed
    and written as ``[8, 16]`` / ``{a: 1}``; scalars keep the text they were given.
    """
    if isinstance(value, str):
        if value[:1] not in ("[", "{"):
            return value
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(display(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {display(v)}" for k, v in value.items()) + "}"
    return str(value)


def setting(entry: RunEntry, key: str) -> str:
    """The value a run has for ``key`` as text: its override, its group choice, or its config."""
    value = store_setting(entry, key)
    return "" if value is MISSING else display(value)


def varying_keys(entries: Sequence[RunEntry]) -> list[str]:
    """The settings that can change results and differ between the readable runs.

    Candidates are the runs' override keys, then their config-group choices (so runs
    of two ``experiment=`` recipes show that key); keys that change no metric (paths,
    loggers, progress bars, workers: :func:`~sweeplab.tracking.identity.changes_metrics`)
    are never shown, since a difference there is no difference in results.
    """
    readable = [e for e in entries if e.record is not None]
    return [k for k in setting_keys(readable) if len({setting(e, k) for e in readable}) > 1]


# --------------------------------------------------------------------------- runs table


def present_metrics(entries: Sequence[RunEntry], wanted: Sequence[str] = KEY_METRICS) -> list[str]:
    return [m for m in wanted if any(m in e.metrics for e in entries)]


def runs_frame(entries: Sequence[RunEntry], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: id and status, the key metrics, then the settings that differ
    (:func:`varying_keys`), then name, duration, creation time and a note."""
    keys = varying_keys(entries)
    metrics = present_metrics(entries) if metrics is None else list(metrics)
    rows = []
    for entry in entries:
        row: dict[str, Any] = {"run_id": entry.run_id, "status": entry.status}
        for metric in metrics:
            row[metric] = _number(entry.metrics.get(metric))
        for key in keys:
            row[key] = setting(entry, key) if entry.record is not None else None
        row["name"] = entry.name
        row["duration_s"] = entry.duration_s
        row["created"] = entry.created
        row["note"] = entry.problem or entry.error or ("debug run" if entry.debug_run else "")
        row["path"] = str(entry.path)
        rows.append(row)
    columns = ["run_id", "status", *metrics, *keys, "name", "duration_s", "created", "note", "path"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- metric families


def metric_families(metrics: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The flat metrics of one run as tables per family.

    ``classification`` and ``calibration`` are (split, name) → value;
    ``ood`` is (set, detector) × metric; ``shift`` is (corruption, severity) × metric;
    everything else lands in ``other``.
    """
    cls, cal, ood, shift, other = [], [], {}, {}, []
    for key in sorted(metrics):
        value = _number(metrics[key])
        parts = key.split("/")
        if len(parts) == 3 and parts[1] == "cls":
            cls.append({"split": parts[0], "metric": parts[2], "value": value})
        elif len(parts) == 3 and parts[1] == "cal":
            cal.append({"split": parts[0], "metric": parts[2], "value": value})
        elif len(parts) == 4 and parts[0] == "ood":
            ood.setdefault((parts[1], parts[2]), {})[parts[3]] = value
        elif len(parts) == 4 and parts[0] == "shift":
            shift.setdefault((parts[1], parts[2]), {})[parts[3]] = value
        elif len(parts) == 3 and parts[0] == "shift":
            shift.setdefault(("all", parts[1]), {})[parts[2]] = value
        else:
            other.append({"metric": key, "value": value})

    def grid(cells: dict, names: tuple[str, str]) -> pd.DataFrame:
        rows = [{names[0]: a, names[1]: b, **values} for (a, b), values in cells.items()]
        return pd.DataFrame(rows)

    return {
        "classification": pd.DataFrame(cls),
        "calibration": pd.DataFrame(cal),
        "ood": grid(ood, ("set", "detector")),
        "shift": grid(shift, ("corruption", "severity")),
        "other": pd.DataFrame(other),
    }


# --------------------------------------------------------------------------- run files


def learning_curves(run_dir: Path) -> pd.DataFrame:
    """``metrics.csv`` as a frame indexed by epoch (one row per logged step)."""
    rows = read_metrics_csv(Path(run_dir) / METRICS_FILE)
    return pd.DataFrame(rows)


def reliability(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Reliability bins per variant (``before``, ``after_ts``, …) as frames; empty if absent.

    A bin without samples has no confidence or accuracy and is left out.
    """
    path = Path(run_dir) / RELIABILITY_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    variants = {}
    for variant, bins in raw.items() if isinstance(raw, dict) else ():
        try:
            edges = bins["edges"]
            frame = pd.DataFrame(
                {
                    "bin_center": [(a + b) / 2 for a, b in pairwise(edges)],
                    "count": bins["count"],
                    "confidence": bins["confidence"],
                    "accuracy": bins["accuracy"],
                }
            )
        except (KeyError, TypeError, ValueError):
            continue
        variants[variant] = frame[frame["count"] > 0].dropna().reset_index(drop=True)
    return variants


def pictures(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / PLOTS_DIR).glob("*.png"))


def png_width(path: Path) -> int | None:
    """A PNG's width in pixels, from its header (None if it is not a readable PNG).

    The plots are drawn for their pixel size; shown stretched or shrunk, their labels
    stop being legible, so the page lays them out by this width.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(24)
    except OSError:
        return None
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    return int.from_bytes(header[16:20], "big")


# --------------------------------------------------------------------------- groups


def group_label(entry: RunEntry, keys: Sequence[str]) -> str:
    return " ".join(f"{k}={setting(entry, k)}" for k in keys) or entry.name


def group_runs(entries: Sequence[RunEntry], by: str | None = None) -> dict[str, list[RunEntry]]:
    """Runs grouped by one config key, or (``by=None``) by every varying key but the seed.

    The second form puts the seeds of one recipe together, which is what an
    average over seeds needs. Unreadable runs are left out.
    """
    readable = [e for e in entries if e.record is not None]
    keys = [by] if by else [k for k in varying_keys(readable) if k != SEED_KEY]
    groups: dict[str, list[RunEntry]] = {}
    for entry in readable:
        groups.setdefault(group_label(entry, keys), []).append(entry)
    return groups


def pooled_over(members: Sequence[RunEntry], by: str | None = None) -> list[str]:
    """The result-changing settings besides the seed (and ``by``) that differ inside a group:
    what an average over the group mixes besides seeds, for the page to say."""
    return [k for k in varying_keys(members) if k not in (by, SEED_KEY)]


DATA_KEY = "data"


def scope_options(entries: Sequence[RunEntry]) -> tuple[list[str], dict[str, list[str]]]:
    """The data sets of the readable runs, and the recipes (run names) of each, newest first.

    The Compare page starts on one data set and one recipe, the newest complete run's,
    because averaging or overlaying runs of different data or models is rarely meant.
    """
    recipes: dict[str, list[str]] = {}
    readable = [(i, e) for i, e in enumerate(entries) if e.record is not None]
    newest_first = sorted(readable, key=lambda pair: (pair[1].status != "complete", -pair[0]))
    for _, entry in newest_first:
        names = recipes.setdefault(setting(entry, DATA_KEY), [])
        if entry.name not in names:
            names.append(entry.name)
    return list(recipes), recipes


def in_scope(entries: Sequence[RunEntry], data: str | None, recipe: str | None) -> list[RunEntry]:
    """The readable runs of one data set and one recipe (``None``: any)."""
    return [
        e
        for e in entries
        if e.record is not None
        and (data is None or setting(e, DATA_KEY) == data)
        and (recipe is None or e.name == recipe)
    ]


def aggregate(groups: dict[str, list[RunEntry]], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std and count of each metric per group (runs lacking it are skipped)."""
    rows = []
    for label, members in groups.items():
        row: dict[str, Any] = {"group": label, "runs": len(members)}
        for metric in metrics:
            values = [_number(e.metrics.get(metric)) for e in members]
            series = pd.Series([v for v in values if v is not None], dtype=float)
            row[f"{metric} mean"] = series.mean() if len(series) else None
            row[f"{metric} std"] = series.std(ddof=1) if len(series) > 1 else None
            row[f"{metric} n"] = len(series)
        rows.append(row)
    return pd.DataFrame(rows)


def mean_curve(curves: Sequence[pd.DataFrame], column: str) -> pd.DataFrame:
    """``column`` of several runs' curves averaged per epoch (each run's last value per epoch)."""
    per_run = [
        frame.dropna(subset=[column]).groupby("epoch")[column].last()
        for frame in curves
        if column in frame and "epoch" in frame
    ]
    if not per_run:
        return pd.DataFrame(columns=["epoch", column])
    stacked = pd.concat(per_run, axis=1)
    return pd.DataFrame({"epoch": stacked.index, column: stacked.mean(axis=1).values})
