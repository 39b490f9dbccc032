"""RegMixup (Pinto et al., "Using Mixup as a Regularizer Can Surprisingly Improve Accuracy
and Out-of-Distribution Robustness", NeurIPS 2022).

Mixup as a regulariser rather than a replacement: the model sees the clean batch and a
mixed copy of it, and the loss is the cross-entropy of both. With a large α (the paper
uses 10 or 20) λ stays near 0.5, far from the clean samples. The loss is the mean over
the joint batch, as in the authors' code: ``(CE(clean) + η · CE(mixed)) / (1 + η)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.losses import MixLoss
from sweeplab.augment.mixup import Mixup


class RegMixup(Mixup):
    """Clean batch plus its mixup, in one forward pass of twice the batch size.

    Args:
        alpha: Beta(α, α) concentration of λ.
        mixed_weight: η, the weight of the mixed half's loss against the clean half's.
    """

    def __init__(self, *, alpha: float = 20.0, mixed_weight: float = 1.0, **options) -> None:
        self.mixed_weight = checks.positive("augment.mixed_weight", mixed_weight)
        super().__init__(alpha=alpha, **options)

    def make_loss(self, decoupled_weight: float) -> MixLoss:
        return MixLoss(
            label_smoothing=self.label_smoothing,
            decoupled_weight=decoupled_weight,
            mixed_weight=self.mixed_weight,
        )

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        mixed = super().mix_batch(x, y, generator)
        return MixedBatch(
            x=torch.cat([x, mixed.x]),
            target=torch.cat([self.one_hot(y), mixed.target]),
            labels=y,
            lam=mixed.lam,
            partner=mixed.partner,
            clean_rows=x.shape[0],
        )
