"""How well a cheap score ranks subnets: rank correlations with a bootstrap interval.

A supernet is useful for search only if the order of its inherited accuracies is the
order of the subnets' accuracies when trained standalone. The measures are those the
weight-sharing literature reports: Kendall's τ (scipy's τ-b, which handles ties),
the *sparse* τ of Yu et al. (2020), which first rounds accuracies to 0.1 % so that
differences below the noise of training count as ties, and Spearman's ρ. With K = 8
subnets a τ is noisy, so each comes with a percentile bootstrap interval over the
subnets (scipy's ``bootstrap``, pairs resampled together).
"""

from __future__ import annotations

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


def bootstrap_interval(
    measure, x: Sequence[float], y: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of ``measure(x, y)`` over the items."""
    a, b = _finite_pair(x, y)
    if a.size < 3:
        return float("nan"), float("nan")
    result = stats.bootstrap(
        (a, b),
        lambda u, v: measure(u, v),
        paired=True,
        vectorized=False,
        n_resamples=resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def rank_report(
    predicted: Sequence[float], actual: Sequence[float], seed: int = 0
) -> dict[str, float]:
    """Every measure of ``predicted`` against ``actual`` with its interval (``…_low/_high``)."""
    report = {}
    for name, measure in MEASURES.items():
        report[name] = measure(predicted, actual)
        with np.errstate(invalid="ignore"):
            low, high = bootstrap_interval(measure, predicted, actual, seed=seed)
        report[f"{name}_low"], report[f"{name}_high"] = low, high
    return report
