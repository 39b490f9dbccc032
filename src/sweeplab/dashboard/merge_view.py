"""A merge run's ingredients and interpolation curve, as the frames of the Run page's merge view.

A merge (``regime=merge``) is judged against what it was made from: each ingredient
run's own val and test numbers, which of them a greedy soup kept, and the output
ensemble of the same ingredients (``merge/ensemble/test/…``). An interpolation
(``regime.method=interpolate``) also wrote its curve between the two runs to
``interpolation.json``. Everything here reads the records and that file; the merge
code itself needs torch and is never imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sweeplab.tracking.layout import INTERPOLATION_FILE
from sweeplab.tracking.store import RunEntry, config_value, metric_number

INGREDIENT_METRICS = ("val/cls/acc", "val/cls/nll", "test/cls/acc", "test/cls/nll", "test/cal/ece")
ENSEMBLE_PREFIX = "merge/ensemble/"
KEPT_METRIC = "merge/greedy/kept_runs"
BASE_METRIC = "merge/base_run"
CURVE_METRICS = {"acc": "accuracy", "nll": "NLL"}


def regime_name(entry: RunEntry) -> str | None:
    regime = entry.config.get("regime")
    name = regime.get("name") if isinstance(regime, dict) else regime
    return ((entry.record or {}).get("choices") or {}).get("regime", name)


def is_merge(entry: RunEntry) -> bool:
    return regime_name(entry) == "merge"


def method(entry: RunEntry) -> str:
    value = config_value(entry.config, "regime.method")
    return str(value) if isinstance(value, str) else ""


def _ids(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if isinstance(value, str) and value else []


def kept_runs(entry: RunEntry) -> list[str] | None:
    """The ingredients a greedy soup kept, when the record says (``merge/greedy/kept_runs``
    as comma-separated ids, in its metrics or its ``merge`` summary); else None."""
    for holder in (entry.metrics, (entry.record or {}).get("merge") or {}):
        value = (
            holder.get(KEPT_METRIC, holder.get("kept_runs")) if isinstance(holder, dict) else None
        )
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [str(v) for v in value]
    return None


def ingredients_frame(entry: RunEntry, lookup: Callable[[str], RunEntry | None]) -> pd.DataFrame:
    """One row per model: the merge, the ingredients' output ensemble, each ingredient, the
    base (task-vector methods) and any other source run of the record (a shared
    ``init_from``), with their val/test metrics and, for a greedy soup whose record says,
    whether each ingredient was kept."""
    # regime.base, or the ingredients' shared init_from the merge took as its base
    base = _ids(config_value(entry.config, "regime.base")) or _ids(entry.metrics.get(BASE_METRIC))
    pinned = config_value(entry.config, "regime.runs")  # the ids, in the merge's order
    sources = _ids((entry.record or {}).get("sources"))
    runs = _ids(pinned) if isinstance(pinned, list) else [s for s in sources if s not in base]
    kept = kept_runs(entry)
    rows: list[dict[str, Any]] = [
        {"model": f"merge ({method(entry) or 'merge'})", "run": entry.run_id, "role": "merge",
         **{m: metric_number(entry.metrics.get(m)) for m in INGREDIENT_METRICS}}
    ]  # fmt: skip
    ensemble = {
        m: metric_number(entry.metrics.get(ENSEMBLE_PREFIX + m)) for m in INGREDIENT_METRICS
    }
    if any(v is not None for v in ensemble.values()):
        rows.append({"model": "output ensemble", "run": "", "role": "baseline", **ensemble})
    others = [s for s in sources if s not in runs and s not in base]  # e.g. a shared init_from
    for role, ids in (("ingredient", runs), ("base", base), ("source", others)):
        for run_id in ids:
            source = lookup(run_id)
            metrics = source.metrics if source is not None else {}
            rows.append(
                {
                    "model": f"{role} {run_id}",
                    "run": run_id,
                    "role": role,
                    **{m: metric_number(metrics.get(m)) for m in INGREDIENT_METRICS},
                    "in store": source is not None,
                }
            )
    frame = pd.DataFrame(rows)
    if kept is not None:
        frame["kept"] = [
            (row["run"] in kept) if row["role"] == "ingredient" else None
            for row in rows
        ]  # fmt: skip
    if "in store" not in frame:
        frame["in store"] = None
    return frame


# --------------------------------------------------------------------------- interpolation


@dataclass(frozen=True)
class Interpolation:
    """``interpolation.json`` as a long frame: alpha, split, metric, value (+ the chord)."""

    curve: pd.DataFrame  # alpha, split, metric, value, chord
    runs: list[str]  # [A, B]: alpha = 0 is A, alpha = 1 is B
    alpha: float | None  # the alpha whose weights are the run's checkpoint
    bn: str


class InterpolationFileError(ValueError):
    """``interpolation.json`` exists but is not a curve; the message says what is wrong."""


def interpolation(run_dir: Path) -> Interpolation | None:
    """The run's interpolation curve, or None when the run wrote none."""
    path = Path(run_dir) / INTERPOLATION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InterpolationFileError(f"{INTERPOLATION_FILE} cannot be read: {exc}") from exc
    try:
        alphas = [float(a) for a in data["alphas"]]
        rows = []
        for split in ("val", "test"):
            for metric in CURVE_METRICS:
                values = (data.get(split) or {}).get(metric)
                if values is None:
                    continue
                if len(values) != len(alphas):
                    raise ValueError(
                        f"{split}/{metric} has {len(values)} values for {len(alphas)} α"
                    )
                first, last = float(values[0]), float(values[-1])
                rows.extend(
                    {"alpha": a, "split": split, "metric": CURVE_METRICS[metric], "value": float(v),
                     "chord": (1 - a) * first + a * last}
                    for a, v in zip(alphas, values, strict=True)
                )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise InterpolationFileError(f"{INTERPOLATION_FILE} is not a curve: {exc}") from exc
    alpha = data.get("alpha")
    return Interpolation(
        curve=pd.DataFrame(rows, columns=["alpha", "split", "metric", "value", "chord"]),
        runs=[str(r) for r in data.get("runs") or []],
        alpha=float(alpha) if isinstance(alpha, int | float) else None,
        bn=str(data.get("bn", "")),
    )


def barriers(metrics: dict[str, Any]) -> pd.DataFrame:
    """``merge/interp/<split>/{acc,nll}_barrier`` as split × barrier."""
    rows = []
    for split in ("val", "test"):
        row = {
            "split": split,
            "accuracy barrier": metric_number(metrics.get(f"merge/interp/{split}/acc_barrier")),
            "NLL barrier": metric_number(metrics.get(f"merge/interp/{split}/nll_barrier")),
        }
        if row["accuracy barrier"] is not None or row["NLL barrier"] is not None:
            rows.append(row)
    return pd.DataFrame(rows, columns=["split", "accuracy barrier", "NLL barrier"])
