"""ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and
True Labels", 2020).

Instead of a crop of the partner, the whole partner image is shrunk to a patch of
``τ · H × τ · W`` (``τ`` uniform in the scale range) and pasted at a uniform position,
so the partner's object is always in the patch; λ is the area left to the own image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sweeplab.augment.base import Mixer
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.boxes import box_area_fraction, box_masks, placed_boxes, side_range
from sweeplab.augment.checks import scale_range


def resize_into_boxes(images: Tensor, boxes: Tensor) -> Tensor:
    """Each image ``[B, C, H, W]`` resized (bilinear) into its box ``[B, 4]`` of an
    ``H × W`` canvas; pixels outside the box are don't-care.

    One ``grid_sample`` for the batch: the sampling grid maps each box onto the
    whole source image, the same pixel centres ``F.interpolate`` would use.
    """
    batch, _, height, width = images.shape
    boxes = boxes.to(images.device, images.dtype)
    rows = torch.arange(height, device=images.device, dtype=images.dtype)
    cols = torch.arange(width, device=images.device, dtype=images.dtype)
    top, bottom, left, right = boxes.unbind(dim=1)
    grid_y = 2 * (rows[None, :] - top[:, None] + 0.5) / (bottom - top)[:, None] - 1  # [B, H]
    grid_x = 2 * (cols[None, :] - left[:, None] + 0.5) / (right - left)[:, None] - 1  # [B, W]
    grid = torch.stack(
        [
            grid_x[:, None, :].expand(batch, height, width),
            grid_y[:, :, None].expand(batch, height, width),
        ],
        dim=-1,
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ResizeMix(Mixer):
    """Paste each partner, resized into a patch, into the image.

    Args:
        scale: ``[min, max]`` of ``τ``, the patch side as a fraction of the image side
            (the paper's ``(0.1, 0.8)``).
    """

    def __init__(self, *, scale: tuple[float, float] = (0.1, 0.8), **options) -> None:
        super().__init__(**options)
        self.scale = scale_range("augment.scale", scale)

    def draw_boxes(self, count: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        """Patch boxes ``[n, 4]`` with sides ``τ · side`` rounded into the scale range."""
        low, high = self.scale
        tau = low + (high - low) * torch.rand(count, generator=generator)
        heights = (tau * height).round().long().clamp(*side_range(height, low, high))
        widths = (tau * width).round().long().clamp(*side_range(width, low, high))
        return placed_boxes(heights, widths, height, width, generator)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        batch, _, height, width = x.shape
        partner, draw = self.draw_partners(batch, generator)
        boxes = self.draw_boxes(self.draw_count(batch), height, width, generator)[draw]
        partner, boxes = partner.to(x.device), boxes.to(x.device)
        patches = resize_into_boxes(x[partner], boxes)
        x_mixed = torch.where(box_masks(boxes, height, width), patches, x)
        lam = 1.0 - box_area_fraction(boxes, height, width)
        return self.finish(x_mixed, y, partner, lam)
