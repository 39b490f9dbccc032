"""Losses on mixed batches: soft-target cross-entropy and the decoupled mixup regulariser.

Every mixer trains with :class:`MixLoss`. A batch that was not mixed (``augment=none``,
``prob`` < 1, the last ``off_epoch`` epochs) takes the hard-label path, which is exactly
``F.cross_entropy(logits, y, label_smoothing=ε)``; a mixed one compares the logits with
its soft targets, optionally adding the decoupled regulariser of Liu et al. (2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.batch import MixedBatch


def soft_target_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-row ``−Σ_c t_c log softmax(z)_c`` ``[N]`` of logits and soft targets ``[N, K]``."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


def decoupled_regulariser(logits: Tensor, labels: Tensor, partners: Tensor, lam: Tensor) -> Tensor:
    """Per-row decoupled mixup term ``[N]`` (Liu et al., "Harnessing Hard Mixed Samples
    with Decoupled Regularizer", 2022): ``−log p(a | not b) − log p(b | not a)``.

    Each of the two mixed classes ``a`` and ``b`` is scored by a softmax that leaves the
    other one out, so the term does not depend on λ: a hard mix whose λ is small still
    asks the model to recognise both classes. Rows that mix a class with itself, or that
    hold only one image (λ of 0 or 1), contribute 0.
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.gather(1, partners[:, None]).squeeze(1)
    without_other = logits.scatter(1, partners[:, None], float("-inf"))
    without_own = logits.scatter(1, labels[:, None], float("-inf"))
    term = (torch.logsumexp(without_other, dim=1) - own) + (
        torch.logsumexp(without_own, dim=1) - other
    )
    two_classes = (labels != partners) & (lam > 0) & (lam < 1)
    return torch.where(two_classes, term, torch.zeros_like(term))


class MixLoss:
    """Cross-entropy of a :class:`~sweeplab.augment.batch.MixedBatch`, the one loss of every mixer.

    Args:
        label_smoothing: ε of the hard-label path (the mixer's own smoothing).
        decoupled_weight: η of :func:`decoupled_regulariser` on the mixed rows; 0 gives
            plain soft-target cross-entropy.
        mixed_weight: weight of the mixed rows against the clean ones when a batch holds
            both (RegMixup): ``(CE(clean) + w · CE(mixed)) / (1 + w)``.
    """

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        decoupled_weight: float = 0.0,
        mixed_weight: float = 1.0,
    ) -> None:
        self.label_smoothing = checks.fraction_below_one("augment.label_smoothing", label_smoothing)
        self.decoupled_weight = checks.non_negative("augment.decoupled_weight", decoupled_weight)
        self.mixed_weight = checks.positive("augment.mixed_weight", mixed_weight)

    def __call__(self, logits: Tensor, batch: MixedBatch) -> Tensor:
        if not batch.mixed:
            return F.cross_entropy(logits, batch.labels, label_smoothing=self.label_smoothing)
        clean_rows = batch.clean_rows
        mixed = soft_target_cross_entropy(logits[clean_rows:], batch.target[clean_rows:])
        if self.decoupled_weight > 0:
            partners = batch.labels[batch.partner]
            regulariser = decoupled_regulariser(
                logits[clean_rows:], batch.labels, partners, batch.lam
            )
            mixed = mixed + self.decoupled_weight * regulariser
        if clean_rows == 0:
            return mixed.mean()
        clean = soft_target_cross_entropy(logits[:clean_rows], batch.target[:clean_rows])
        return (clean.mean() + self.mixed_weight * mixed.mean()) / (1.0 + self.mixed_weight)

    def __repr__(self) -> str:
        return (
            f"MixLoss(label_smoothing={self.label_smoothing}, "
            f"decoupled_weight={self.decoupled_weight}, mixed_weight={self.mixed_weight})"
        )
