"""Members against their ensemble, read back from a run's flat metrics.

The report's ``plots/ensemble_members.png`` and the dashboard's Run page draw
the same bars from the same rows, so the picture in W&B and the one on the
dashboard cannot disagree. Only the record's metrics are read (no eval cache):
per-member OOD AUROC is not among them, so that panel shows the ensemble alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

MEMBER_PREFIX = "ens/member_"
MEMBER_MEAN = "member mean"
ENSEMBLE = "ensemble"
# (label, key under split/ for the ensemble and under ens/member_<m>/<split>/ for members)
PANELS = (("acc", "cls/acc"), ("nll", "cls/nll"), ("ece", "cal/ece"))
DIVERSITY = ("disagreement", "pairwise_kl", "mutual_info", "expected_entropy", "predictive_entropy")
# The near-OOD detector shown, the first one the run has.
OOD_DETECTORS = ("energy", "msp")

_MEMBER_KEY = re.compile(r"^ens/member_(\d+)/")


def member_indices(metrics: Mapping[str, Any]) -> list[int]:
    """The members with metrics of their own (``ens/member_<m>/…``), in order."""
    return sorted({int(m.group(1)) for key in metrics if (m := _MEMBER_KEY.match(key))})


def has_members(metrics: Mapping[str, Any]) -> bool:
    return bool(member_indices(metrics))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def near_ood_detector(metrics: Mapping[str, Any]) -> str | None:
    """The detector whose near-OOD AUROC is shown: energy, else msp, else none."""
    return next((d for d in OOD_DETECTORS if f"ood/near/{d}/auroc" in metrics), None)


def near_auroc_label(detector: str) -> str:
    return f"near-OOD AUROC ({detector})"


def comparison_rows(metrics: Mapping[str, Any], split: str = "test") -> list[dict[str, Any]]:
    """One row per (model, metric): each member, the member mean and the ensemble.

    Rows are ``{"model", "kind" (member | member mean | ensemble), "metric", "value"}``
    for ``acc``, ``nll`` and ``ece`` of ``split``, plus ``near-OOD AUROC (<detector>)``
    for the ensemble only. Missing or non-finite values are left out.
    """
    rows: list[dict[str, Any]] = []

    def add(model: str, kind: str, metric: str, key: str) -> None:
        value = _number(metrics.get(key))
        if value is not None:
            rows.append({"model": model, "kind": kind, "metric": metric, "value": value})

    members = member_indices(metrics)
    for label, key in PANELS:
        for m in members:
            add(f"member {m}", "member", label, f"{MEMBER_PREFIX}{m}/{split}/{key}")
        add(MEMBER_MEAN, MEMBER_MEAN, label, f"ens/member_mean/{split}/{key}")
        add(ENSEMBLE, ENSEMBLE, label, f"{split}/{key}")
    detector = near_ood_detector(metrics)
    if detector is not None:
        add(ENSEMBLE, ENSEMBLE, near_auroc_label(detector), f"ood/near/{detector}/auroc")
    return rows


def diversity(metrics: Mapping[str, Any], split: str = "test") -> dict[str, float]:
    """The diversity numbers of ``split`` that the run has, ``name -> value``."""
    values = {name: _number(metrics.get(f"ens/{split}/{name}")) for name in DIVERSITY}
    return {name: value for name, value in values.items() if value is not None}


def comparison_frame(metrics: Mapping[str, Any], split: str = "test"):
    """:func:`comparison_rows` as a ``pandas.DataFrame`` (the dashboard's bar chart)."""
    import pandas as pd

    return pd.DataFrame(
        comparison_rows(metrics, split), columns=["model", "kind", "metric", "value"]
    )


def diversity_frame(metrics: Mapping[str, Any]):
    """Diversity per split, one row per name, a column per split that has any."""
    import pandas as pd

    columns = {split: diversity(metrics, split) for split in ("val", "test")}
    frame = pd.DataFrame({split: values for split, values in columns.items() if values})
    return frame.rename_axis("diversity").reset_index()
