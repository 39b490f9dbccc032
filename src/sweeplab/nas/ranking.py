"""How well a cheap score ranks subnets: rank correlations with a bootstrap interval.

A supernet is useful for search only if the order of its inherited accuracies is the
order of the subnets' accuracies when trained standalone. The measures are those the
weight-sharing literature reports: Kendall's τ (scipy's τ-b, which handles ties),
the *sparse* τ of Yu et al. (2020), which first rounds accuracies to 0.1 % so that
differences below the noise of training count as ties, and Spearman's ρ. With K = 8
subnets a τ is noisy, so each comes with a percentile bootstrap interval over the
subnets (scipy's ``bootstrap``, pairs resampled together; the measures are computed
for all resamples at once, and checked against scipy's own in the tests).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

SPARSE_RESOLUTION = 1e-3  # accuracies within 0.1 % are ties in the sparse τ


def _finite_pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"rankings must be two equal-length lists, got {a.shape} and {b.shape}")
    return a, b


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b of two scorings of the same items (NaN if one is constant)."""
    a, b = _finite_pair(x, y)
    return float(stats.kendalltau(a, b).statistic)


def sparse_kendall_tau(
    x: Sequence[float], y: Sequence[float], resolution: float = SPARSE_RESOLUTION
) -> float:
    """τ-b after rounding both scorings to ``resolution`` (accuracies as fractions)."""
    a, b = _finite_pair(x, y)
    return kendall_tau(np.round(a / resolution), np.round(b / resolution))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation ρ."""
    a, b = _finite_pair(x, y)
    return float(stats.spearmanr(a, b).statistic)


MEASURES = {
    "kendall_tau": kendall_tau,
    "sparse_kendall_tau": sparse_kendall_tau,
    "spearman": spearman_rho,
}


def _tau_b_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's τ-b of every pair of rows along ``axis`` at once (for the bootstrap):
    ``Σ sx·sy / sqrt(Σ sx² · Σ sy²)`` over item pairs, ``s`` the sign of a difference."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-2, -1)) / np.sqrt((sx**2).sum((-2, -1)) * (sy**2).sum((-2, -1)))


def _spearman_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    rx = stats.rankdata(np.moveaxis(x, axis, -1), axis=-1)
    ry = stats.rankdata(np.moveaxis(y, axis, -1), axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


VECTORISED = {
    "kendall_tau": _tau_b_along,
    "sparse_kendall_tau": lambda x, y, axis=-1: _tau_b_along(
        np.round(x / SPARSE_RESOLUTION), np.round(y / SPARSE_RESOLUTION), axis
    ),
    "spearman": _spearman_along,
}


def bootstrap_interval(
    name: str, x: Sequence[float], y: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of measure ``name`` over the items (pairs kept).

    A resample that repeats one item, or ties all of them, has no rank correlation; such
    resamples are left out of the percentiles (NaN when none is left).
    """
    a, b = _finite_pair(x, y)
    if a.size < 3:
        return float("nan"), float("nan")
    with warnings.catch_warnings():  # degenerate resamples are handled below
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (a, b),
            VECTORISED[name],
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    distribution = np.asarray(result.bootstrap_distribution)
    if not np.isfinite(distribution).any():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(distribution, [2.5, 97.5])
    return float(low), float(high)


def rank_report(
    predicted: Sequence[float], actual: Sequence[float], seed: int = 0
) -> dict[str, float]:
    """Every measure of ``predicted`` against ``actual`` with its interval (``…_low/_high``)."""
    report = {}
    for name, measure in MEASURES.items():
        report[name] = measure(predicted, actual)
        with np.errstate(invalid="ignore"):
            low, high = bootstrap_interval(name, predicted, actual, seed=seed)
        report[f"{name}_low"], report[f"{name}_high"] = low, high
    return report
