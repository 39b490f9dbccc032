"""CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", ICCV 2019).

A box of the partner is pasted at the same place; the box has sides ``√(1 − λ)`` of the
image and a uniform centre, and λ is then corrected to the area left after clipping
the box to the image, so the soft label matches the pixels exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.base import Mixer, sample_beta
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.boxes import centred_boxes, paste_boxes, placed_boxes, side_range
from sweeplab.augment.checks import optional_scale_range


def uniform_sides(
    count: int, size: int, scale: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """``count`` integer sides uniform in ``[scale[0] · size, scale[1] · size]``."""
    shortest, longest = side_range(size, *scale)
    return torch.randint(shortest, longest + 1, (count,), generator=generator)


def draw_cutmix_boxes(
    count: int,
    height: int,
    width: int,
    alpha: float,
    minmax: tuple[float, float] | None,
    generator: torch.Generator,
) -> Tensor:
    """``count`` CutMix boxes ``[n, 4]``.

    Without ``minmax``: ``λ ~ Beta(α, α)``, sides ``⌊side · √(1 − λ)⌋``, centre uniform,
    clipped. With ``minmax = (lo, hi)``: each side uniform in ``[lo, hi]`` of the image
    side and the box wholly inside (timm's ``cutmix_minmax``), λ ignored.
    """
    if minmax is not None:
        heights = uniform_sides(count, height, minmax, generator)
        widths = uniform_sides(count, width, minmax, generator)
        return placed_boxes(heights, widths, height, width, generator)
    ratio = (1.0 - sample_beta(alpha, count, generator)).clamp(min=0.0).sqrt()
    rows = torch.randint(0, height, (count,), generator=generator)
    cols = torch.randint(0, width, (count,), generator=generator)
    heights = (height * ratio).long()
    widths = (width * ratio).long()
    return centred_boxes(rows, cols, heights, widths, height, width)


class CutMix(Mixer):
    """Paste a box of the partner into each image.

    Args:
        alpha: Beta(α, α) concentration of λ before the area correction.
        minmax: ``[min, max]`` fractions of the image side for the box sides instead of
            λ-sized boxes; ``null`` for the paper's rule.
    """

    def __init__(
        self, *, alpha: float = 1.0, minmax: tuple[float, float] | None = None, **options
    ) -> None:
        super().__init__(**options)
        self.alpha = checks.positive("augment.alpha", alpha)
        self.minmax = optional_scale_range("augment.minmax", minmax)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        batch, _, height, width = x.shape
        partner, draw = self.draw_partners(batch, generator)
        boxes = draw_cutmix_boxes(
            self.draw_count(batch), height, width, self.alpha, self.minmax, generator
        )
        partner, draw = partner.to(x.device), draw.to(x.device)
        x_mixed, lam = paste_boxes(x, partner, draw, boxes)
        return self.finish(x_mixed, y, partner, lam)
