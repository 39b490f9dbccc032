"""ROC curves as data beside their picture: ``plots/ood_<set>_roc.json``.

A PNG with ten detectors' curves on one axis is hard to read, and a reader cannot
hide the curves it does not care about. So the evaluation also writes each OOD
set's curves as points, and the dashboard draws the detectors a person picks.
A curve has one point per distinct score (thousands); it is thinned to points
about ``step`` apart along the curve (|Δfpr| + |Δtpr|), which keeps its corners
and both end points and stays a few hundred points at most. numpy only, so the
dashboard reads these files without torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sweeplab.files import atomic_write_text

STEP = 0.005
SUFFIX = "_roc.json"


def roc_json_path(plots_dir: str | os.PathLike, ood_set: str) -> Path:
    return Path(plots_dir) / f"ood_{ood_set}{SUFFIX}"


def thin(fpr: Any, tpr: Any, step: float = STEP) -> tuple[list[float], list[float]]:
    """The points of a ROC curve at least ``step`` apart along it, end points kept."""
    fpr = np.asarray(fpr, dtype=float).ravel()
    tpr = np.asarray(tpr, dtype=float).ravel()
    if fpr.shape != tpr.shape or fpr.size == 0:
        raise ValueError(f"a ROC curve needs as many fpr as tpr values, got {fpr.size}, {tpr.size}")
    length = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(fpr)) + np.abs(np.diff(tpr)))])
    bucket = np.floor(length / step)
    keep = np.flatnonzero(np.diff(bucket, prepend=-1.0) > 0)
    keep = np.union1d(keep, [fpr.size - 1])
    return fpr[keep].round(6).tolist(), tpr[keep].round(6).tolist()


def write_roc_points(
    path: str | os.PathLike,
    curves: Mapping[str, tuple[Any, Any]],
    aurocs: Mapping[str, float] | None = None,
) -> Path:
    """``{detector: {"fpr": [...], "tpr": [...], "auroc": a}}`` as JSON, atomically."""
    payload = {}
    for detector, (fpr, tpr) in curves.items():
        xs, ys = thin(fpr, tpr)
        payload[detector] = {"fpr": xs, "tpr": ys}
        if aurocs and detector in aurocs:
            payload[detector]["auroc"] = float(aurocs[detector])
    path = Path(path)
    atomic_write_text(path, json.dumps(payload, sort_keys=True) + "\n")
    return path


def read_roc_points(path: str | os.PathLike) -> dict[str, dict[str, list[float]]]:
    """The curves of one file; ``{}`` when it is missing or not a mapping of curves."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(name): curve
        for name, curve in data.items()
        if isinstance(curve, dict)
        and isinstance(curve.get("fpr"), list)
        and isinstance(curve.get("tpr"), list)
        and len(curve["fpr"]) == len(curve["tpr"])
    }
