"""SmoothMix (Lee et al., "SmoothMix: a Simple Yet Effective Data Augmentation to Train
Robust Classifiers", CVPR Workshops 2020).

CutMix with a soft edge: the partner enters through a Gaussian blob
``exp(−d² / 2σ²)`` around a uniform centre, with σ uniform in a fraction range of the
image height, so the mix has no sharp boundary for the model to latch on to. λ is the
share of the own image, ``1 − mean(mask)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab.augment.base import Mixer, blend
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.checks import scale_range


def gaussian_masks(rows: Tensor, cols: Tensor, sigmas: Tensor, height: int, width: int) -> Tensor:
    """Masks ``[n, 1, H, W]`` with value ``exp(−d² / 2σ²)`` at distance d from each centre."""
    grid_rows = torch.arange(height, device=rows.device, dtype=torch.float32)
    grid_cols = torch.arange(width, device=rows.device, dtype=torch.float32)
    dist_rows = (grid_rows[None, :] - rows[:, None]) ** 2  # [n, H]
    dist_cols = (grid_cols[None, :] - cols[:, None]) ** 2  # [n, W]
    squared = dist_rows[:, :, None] + dist_cols[:, None, :]
    return torch.exp(-squared / (2 * sigmas[:, None, None] ** 2))[:, None]


class SmoothMix(Mixer):
    """Blend the partner into each image through a Gaussian mask.

    Args:
        sigma: ``[min, max]`` of the Gaussian's σ as a fraction of the image height
            (``[0.25, 0.5]``, as in OpenMixup's implementation).
    """

    def __init__(self, *, sigma: tuple[float, float] = (0.25, 0.5), **options) -> None:
        super().__init__(**options)
        self.sigma = scale_range("augment.sigma", sigma)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        batch, _, height, width = x.shape
        partner, draw = self.draw_partners(batch, generator)
        count = self.draw_count(batch)
        rows = torch.randint(0, height, (count,), generator=generator).float()
        cols = torch.randint(0, width, (count,), generator=generator).float()
        low, high = self.sigma
        sigmas = (low + (high - low) * torch.rand(count, generator=generator)) * height
        partner, draw = partner.to(x.device), draw.to(x.device)
        share = gaussian_masks(
            rows.to(x.device), cols.to(x.device), sigmas.to(x.device), height, width
        )
        lam = 1.0 - share.mean(dim=(1, 2, 3))
        if count > 1:
            share = share[draw]
        return self.finish(blend(x, x[partner], share), y, partner, lam[draw])
