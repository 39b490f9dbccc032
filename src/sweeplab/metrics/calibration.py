"""Calibration metrics as pure functions of probabilities and labels.

Inputs are ``probs [N, C]`` (rows sum to 1) and integer ``labels [N]``; everything
is computed in float64.

Binning convention, shared by every equal-width metric here: ``n_bins`` intervals
``[e_k, e_{k+1})`` over ``[0, 1]``, closed on the left, so a value exactly on an
edge goes to the bin above it. This is how torchmetrics bins
(``torch.bucketize(conf, edges, right=True) - 1``), which makes
:func:`expected_calibration_error` equal its ``multiclass_calibration_error``.
The one difference is a confidence of exactly 1.0: torchmetrics gives it a
bin of its own beyond the last edge, here the last bin is closed
(``[e_{n-1}, 1]``) and takes it, so there are always exactly ``n_bins`` bins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab.metrics.classification import accuracy, brier, check_predictions, nll


def _check(probs: Tensor, labels: Tensor, n_bins: int) -> tuple[Tensor, Tensor]:
    check_predictions(probs, labels, "probs")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    probs = probs.detach().to(torch.float64)
    if not torch.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or infinite values")
    return probs, labels.detach().long()


def bin_edges(n_bins: int = 15) -> Tensor:
    """The ``n_bins + 1`` equal-width edges over ``[0, 1]`` (float64)."""
    return torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)


def _bin_index(values: Tensor, n_bins: int) -> Tensor:
    """Equal-width bin of each value: ``[e_k, e_{k+1})``, the last bin closed at 1."""
    index = torch.bucketize(values, bin_edges(n_bins), right=True) - 1
    return index.clamp_(0, n_bins - 1)


def _top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence and whether that top label is correct (as 0/1 float64)."""
    confidence, prediction = probs.max(dim=1)
    return confidence, (prediction == labels).to(torch.float64)


def _bin_sums(
    values: Tensor, hits: Tensor, index: Tensor, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin sample count, sum of predicted probability and sum of outcomes."""
    count = torch.zeros(size, dtype=torch.float64).index_add_(0, index, torch.ones_like(values))
    total = torch.zeros(size, dtype=torch.float64).index_add_(0, index, values)
    observed = torch.zeros(size, dtype=torch.float64).index_add_(0, index, hits)
    return count, total, observed


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Top-label ECE: ``Σ_k |B_k|/N · |acc(B_k) − conf(B_k)|`` over equal-width bins.

    The mass-weighted gap of a bin is ``|Σ correct − Σ conf| / N``, so empty bins
    contribute nothing without special cases.
    """
    probs, labels = _check(probs, labels, n_bins)
    confidence, correct = _top_label(probs, labels)
    _, total, observed = _bin_sums(confidence, correct, _bin_index(confidence, n_bins), n_bins)
    return ((observed - total).abs().sum() / labels.numel()).item()


def maximum_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Top-label MCE: the largest ``|acc − conf|`` over the non-empty equal-width bins."""
    probs, labels = _check(probs, labels, n_bins)
    confidence, correct = _top_label(probs, labels)
    count, total, observed = _bin_sums(confidence, correct, _bin_index(confidence, n_bins), n_bins)
    filled = count > 0
    return ((observed[filled] - total[filled]).abs() / count[filled]).max().item()


def adaptive_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Top-label ECE over equal-mass bins, robust to confidences crowding near 1.

    Sorted confidences are split into ``n_bins`` groups whose sizes differ by at
    most one, the larger groups first (``numpy.array_split``); ties are split by
    position in a stable sort. With fewer samples than bins the extra bins are empty.
    """
    probs, labels = _check(probs, labels, n_bins)
    confidence, correct = _top_label(probs, labels)
    confidence, order = torch.sort(confidence, stable=True)
    correct = correct[order]
    n = labels.numel()
    base, extra = divmod(n, n_bins)
    sizes = torch.full((n_bins,), base, dtype=torch.long)
    sizes[:extra] += 1
    index = torch.repeat_interleave(torch.arange(n_bins), sizes)
    _, total, observed = _bin_sums(confidence, correct, index, n_bins)
    return ((observed - total).abs().sum() / n).item()


def classwise_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Class-wise ECE (Kull et al. 2019): every class's probability binned, not only the top one.

    For class ``c``: ``Σ_k |B_ck|/N · |freq(y = c in B_ck) − mean p_c(B_ck)|`` over
    equal-width bins of ``p_c``; the result is the mean over classes.
    """
    probs, labels = _check(probs, labels, n_bins)
    n, classes = probs.shape
    hits = torch.nn.functional.one_hot(labels, classes).to(torch.float64)
    index = _bin_index(probs, n_bins) + n_bins * torch.arange(classes)
    _, total, observed = _bin_sums(
        probs.reshape(-1), hits.reshape(-1), index.reshape(-1), classes * n_bins
    )
    return ((observed - total).abs().sum() / (n * classes)).item()


def confidence_gap(probs: Tensor, labels: Tensor) -> float:
    """Signed top-label gap: mean confidence ``(1/N) Σ_n max_c p_c(x_n)`` minus accuracy.

    Positive is over-confident, negative under-confident (ECE hides the sign);
    Wen et al. 2021 find ensembles of mixup-trained members under-confident.
    """
    probs, labels = _check(probs, labels, 1)
    confidence, correct = _top_label(probs, labels)
    return (confidence.mean() - correct.mean()).item()


def reliability_bins(
    probs: Tensor, labels: Tensor, n_bins: int = 15
) -> dict[str, list[float | int | None]]:
    """Per-bin count, mean confidence and accuracy for a reliability diagram, JSON-ready.

    ``confidence`` and ``accuracy`` are ``None`` for empty bins (JSON has no NaN).
    """
    probs, labels = _check(probs, labels, n_bins)
    confidence, correct = _top_label(probs, labels)
    count, total, observed = _bin_sums(confidence, correct, _bin_index(confidence, n_bins), n_bins)
    counts = [int(c) for c in count.tolist()]
    return {
        "edges": bin_edges(n_bins).tolist(),
        "count": counts,
        "confidence": [t / c if c else None for t, c in zip(total.tolist(), counts, strict=True)],
        "accuracy": [o / c if c else None for o, c in zip(observed.tolist(), counts, strict=True)],
    }


def calibration_metrics(
    log_probs: Tensor, labels: Tensor, split: str, suffix: str = "", *, n_bins: int = 15
) -> dict[str, float]:
    """``{split}/cal/{ece,aece,mce,cwece}{suffix}`` from log-probabilities.

    With a suffix (after a post-hoc calibrator, e.g. ``"_ts"``) the calibrated
    model's ``nll``, ``brier`` and ``acc`` are added under ``cal/`` too; without one
    they are the uncalibrated ``{split}/cls/...`` metrics and are not repeated.
    """
    probs = log_probs.detach().to(torch.float64).exp()
    metrics = {
        f"{split}/cal/ece{suffix}": expected_calibration_error(probs, labels, n_bins),
        f"{split}/cal/aece{suffix}": adaptive_calibration_error(probs, labels, n_bins),
        f"{split}/cal/mce{suffix}": maximum_calibration_error(probs, labels, n_bins),
        f"{split}/cal/cwece{suffix}": classwise_calibration_error(probs, labels, n_bins),
    }
    if suffix:
        metrics[f"{split}/cal/nll{suffix}"] = nll(log_probs, labels)
        metrics[f"{split}/cal/brier{suffix}"] = brier(log_probs, labels)
        metrics[f"{split}/cal/acc{suffix}"] = accuracy(log_probs, labels)
    return metrics
