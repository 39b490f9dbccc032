"""Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018).

Each sample becomes ``λ · x + (1 − λ) · x_partner`` with ``λ ~ Beta(α, α)``, and its
target the same blend of the two labels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.base import Mixer, blend, sample_beta
from sweeplab.augment.batch import MixedBatch


class Mixup(Mixer):
    """Pixel-wise convex combination of each sample with its partner.

    Args:
        alpha: Beta(α, α) concentration of λ; the other options are :class:`Mixer`'s.
    """

    def __init__(self, *, alpha: float = 0.2, **options) -> None:
        super().__init__(**options)
        self.alpha = checks.positive("augment.alpha", alpha)

    def draw_lam(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Partners ``[B]`` and λ ``[B]`` of one batch (CPU tensors)."""
        partner, draw = self.draw_partners(batch_size, generator)
        lam = sample_beta(self.alpha, self.draw_count(batch_size), generator)
        return partner, lam[draw]

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        partner, lam = self.draw_lam(x.shape[0], generator)
        partner, lam = partner.to(x.device), lam.to(x.device)
        share = (1.0 - lam).view(-1, *([1] * (x.ndim - 1)))
        return self.finish(blend(x, x[partner], share), y, partner, lam)
