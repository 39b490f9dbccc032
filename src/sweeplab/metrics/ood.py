"""Out-of-distribution detection metrics as pure functions of detector scores.

A detector scores every sample, **higher meaning more OOD**, and OOD is the
positive class. Every metric is read off one sort of the pooled scores: each
distinct score is a threshold ("flag as OOD if score ≥ t"), and ties between an
ID and an OOD sample move both counts at once, as in scikit-learn's ROC and
precision-recall curves.
"""

from __future__ import annotations

import torch
from torch import Tensor

OOD_CONVENTION: dict[str, str] = {
    "positive": "ood",
    "score": "higher means more OOD",
    "auroc": "area under the ROC curve, ties between an ID and an OOD score count one half",
    "aupr_out": "average precision with OOD as the positive class",
    "aupr_in": "average precision with ID as the positive class and scores negated",
    "fpr95": "fraction of ID samples flagged OOD at the highest threshold that flags ≥ 95% of OOD samples",
}


def _check(scores: Tensor, name: str) -> Tensor:
    scores = torch.as_tensor(scores).detach().cpu().to(torch.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor of scores, got shape {tuple(scores.shape)}")
    if scores.numel() == 0:
        raise ValueError(f"{name} is empty: OOD metrics need at least one ID and one OOD score")
    if torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN scores; the detector output is invalid")
    return scores


def _value_counts(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor]:
    """ID and OOD sample counts per distinct score, in ascending score order (one sort)."""
    scores_in = _check(scores_in, "scores_in")
    scores_out = _check(scores_out, "scores_out")
    values, inverse = torch.unique(
        torch.cat([scores_in, scores_out]), sorted=True, return_inverse=True
    )
    is_out = torch.cat([torch.zeros_like(scores_in), torch.ones_like(scores_out)])
    out_counts = torch.zeros_like(values).index_add_(0, inverse, is_out)
    in_counts = torch.zeros_like(values).index_add_(0, inverse, 1.0 - is_out)
    return in_counts, out_counts


def _curve(positives: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """Cumulative true/false positives, thresholds taken from the last entry backwards.

    Entry ``k`` counts the samples at or beyond the ``k``-th threshold.
    """
    return positives.flip(0).cumsum(0), negatives.flip(0).cumsum(0)


def _average_precision(true_pos: Tensor, false_pos: Tensor) -> float:
    """``Σ_k (R_k − R_{k−1}) P_k`` over thresholds (scikit-learn's step-wise AP, no interpolation)."""
    precision = true_pos / (true_pos + false_pos)
    recall_step = torch.diff(true_pos, prepend=true_pos.new_zeros(1)) / true_pos[-1]
    # Rounding in the sum can overshoot 1 by an ulp; an AP is a probability.
    return min(1.0, (recall_step * precision).sum().item())


def _roc(in_counts: Tensor, out_counts: Tensor) -> tuple[Tensor, Tensor]:
    true_pos, false_pos = _curve(out_counts, in_counts)
    zero = true_pos.new_zeros(1)
    tpr = torch.cat([zero, true_pos / true_pos[-1]])
    fpr = torch.cat([zero, false_pos / false_pos[-1]])
    return fpr, tpr


def _fpr_at(fpr: Tensor, tpr: Tensor, level: float) -> float:
    return fpr[int(torch.nonzero(tpr >= level)[0])].item()


def roc_curve(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor]:
    """ROC curve ``(fpr, tpr)`` (float64), starting at (0, 0), one point per distinct score.

    Unlike scikit-learn's default, collinear points are kept, so the curve
    has every threshold.
    """
    return _roc(*_value_counts(scores_in, scores_out))


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Probability that an OOD sample scores above an ID sample (ties count one half)."""
    fpr, tpr = roc_curve(scores_in, scores_out)
    return min(1.0, torch.trapezoid(tpr, fpr).item())


def aupr_out(scores_in: Tensor, scores_out: Tensor) -> float:
    """Average precision for finding OOD samples (OOD positive)."""
    in_counts, out_counts = _value_counts(scores_in, scores_out)
    return _average_precision(*_curve(out_counts, in_counts))


def aupr_in(scores_in: Tensor, scores_out: Tensor) -> float:
    """Average precision for finding ID samples (ID positive, scores negated)."""
    in_counts, out_counts = _value_counts(scores_in, scores_out)
    return _average_precision(*_curve(in_counts.flip(0), out_counts.flip(0)))


def fpr_at_tpr(scores_in: Tensor, scores_out: Tensor, tpr: float = 0.95) -> float:
    """Fraction of ID samples flagged OOD at the first ROC point whose TPR is ≥ ``tpr``.

    This is OpenOOD's FPR@95 (``fpr[argmax(tpr >= 0.95)]`` on scikit-learn's
    ``roc_curve``) computed on the full curve: scikit-learn drops collinear
    points by default, which can skip the exact threshold when ID and OOD scores
    tie; without ties the two agree.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    return _fpr_at(*roc_curve(scores_in, scores_out), tpr)


def ood_metrics(scores_in: Tensor, scores_out: Tensor) -> dict[str, float]:
    """``auroc``, ``aupr_in``, ``aupr_out`` and ``fpr95`` for one detector on one OOD set."""
    in_counts, out_counts = _value_counts(scores_in, scores_out)
    fpr, tpr = _roc(in_counts, out_counts)
    return {
        "auroc": torch.trapezoid(tpr, fpr).item(),
        "aupr_in": _average_precision(*_curve(in_counts.flip(0), out_counts.flip(0))),
        "aupr_out": _average_precision(*_curve(out_counts, in_counts)),
        "fpr95": _fpr_at(fpr, tpr, 0.95),
    }
