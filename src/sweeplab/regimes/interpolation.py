"""Interpolation curves between two runs: linear mode connectivity and WiSE-FT's α sweep.

Along θ(α) = (1 − α) θ_A + α θ_B (a weighted uniform soup of the two runs), accuracy
and NLL are measured on val and test at every α of ``regime.alphas``. The curve is a
diagnostic, not a selection: it may read test because nothing is chosen from it;
the α whose weights become the run's checkpoint is ``regime.alpha``, fixed by the user.

The barrier is how far the curve rises above (loss) or falls below (accuracy) the
straight line between its end points (Frankle et al. 2020; Entezari et al. 2022):

- loss barrier:     max_α [L(α) − ((1 − α) L(0) + α L(1))]
- accuracy barrier: max_α [((1 − α) A(0) + α A(1)) − A(α)]

Both are ≥ 0 (the end points give 0) and 0 for runs that are linearly connected.
They are recorded as ``merge/interp/<split>/nll_barrier`` and
``merge/interp/<split>/acc_barrier``; the curve itself as ``interpolation.json``
in the run directory and, with ``eval.plots``, ``plots/interpolation.png``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from sweeplab.files import atomic_write_text
from sweeplab.regimes import merge_methods as mm

PREFIX = "merge/interp"
SPLITS = ("val", "test")
METRICS = ("acc", "nll")
DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """``alphas`` as ascending floats in [0, 1] that include both end points."""
    values = [float(a) for a in alphas]
    if not values or any(not 0.0 <= a <= 1.0 for a in values):
        raise ValueError(f"regime.alphas must be numbers in [0, 1], got {values}")
    if values != sorted(set(values)) or values[0] != 0.0 or values[-1] != 1.0:
        raise ValueError(
            f"regime.alphas must be ascending, without repeats, from 0 to 1 "
            f"(the two runs), got {values}"
        )
    return values


def interpolate(state_a: mm.State, state_b: mm.State, alpha: float) -> dict[str, Tensor]:
    """(1 − α) θ_A + α θ_B on float entries; counters from A (α = 0 is A, α = 1 is B)."""
    return mm.weighted_average([state_a, state_b], [1.0 - float(alpha), float(alpha)])


def barrier(alphas: Sequence[float], values: Sequence[float], higher_is_better: bool) -> float:
    """The largest gap between the chord from α = 0 to α = 1 and the curve, on its bad side.

    >>> barrier([0, 0.5, 1], [1.0, 3.0, 2.0], higher_is_better=False)  # loss: 3 − 1.5
    1.5
    >>> barrier([0, 0.5, 1], [1.0, 0.5, 0.5], higher_is_better=True)  # accuracy: 0.75 − 0.5
    0.25
    """
    if len(alphas) != len(values) or len(alphas) < 2:
        raise ValueError(f"need one value per α (≥ 2), got {len(alphas)} α, {len(values)} values")
    first, last = float(values[0]), float(values[-1])
    gaps = []
    for alpha, value in zip(alphas, values, strict=True):
        line = (1.0 - float(alpha)) * first + float(alpha) * last
        gaps.append(line - float(value) if higher_is_better else float(value) - line)
    return max(0.0, max(gaps))


def compute_curve(
    alphas: Sequence[float], score: Callable[[float], Mapping[str, Mapping[str, float]]]
) -> dict[str, Any]:
    """``{"alphas": [...], split: {metric: [...]}}`` from ``score(α) -> {split: {metric: v}}``."""
    curve: dict[str, Any] = {"alphas": [float(a) for a in alphas]}
    for alpha in curve["alphas"]:
        for split, values in score(alpha).items():
            for metric, value in values.items():
                curve.setdefault(split, {}).setdefault(metric, []).append(float(value))
    return curve


def barrier_metrics(curve: Mapping[str, Any]) -> dict[str, float]:
    """``merge/interp/<split>/{nll,acc}_barrier`` of every split the curve holds."""
    metrics = {}
    for split in SPLITS:
        if split not in curve:
            continue
        values = curve[split]
        metrics[f"{PREFIX}/{split}/nll_barrier"] = barrier(curve["alphas"], values["nll"], False)
        metrics[f"{PREFIX}/{split}/acc_barrier"] = barrier(curve["alphas"], values["acc"], True)
    return metrics


def write_curve(path: str | os.PathLike, curve: Mapping[str, Any]) -> Path:
    """The curve as JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(curve, indent=1, sort_keys=True) + "\n")
    return path


def read_curve(path: str | os.PathLike) -> dict[str, Any]:
    """A curve written by :func:`write_curve`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
