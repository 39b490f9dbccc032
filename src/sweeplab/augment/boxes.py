"""Rectangular boxes on image batches: drawing them, their masks, their area.

A box is four integers ``(top, bottom, left, right)``, half-open and already clipped
to the image, so its area is exactly the number of pixels it covers. Masks come from
broadcasting a row test against a column test: one box per sample costs the same as
one box for the whole batch, with no loop over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def side_range(size: int, low: float, high: float) -> tuple[int, int]:
    """The integer sides within ``[low · size, high · size]``, at least 1 px."""
    shortest = max(1, math.ceil(low * size - 1e-9))
    return shortest, max(shortest, math.floor(high * size + 1e-9))


def centred_boxes(
    rows: Tensor, cols: Tensor, heights: Tensor, widths: Tensor, height: int, width: int
) -> Tensor:
    """Boxes ``[n, 4]`` centred on ``(rows, cols)`` spanning ``± side // 2``, clipped to the
    image (the rule of the CutMix and SaliencyMix code)."""
    top = (rows - heights // 2).clamp(0, height)
    bottom = (rows + heights // 2).clamp(0, height)
    left = (cols - widths // 2).clamp(0, width)
    right = (cols + widths // 2).clamp(0, width)
    return torch.stack([top, bottom, left, right], dim=1)


def placed_boxes(
    heights: Tensor, widths: Tensor, height: int, width: int, generator: torch.Generator
) -> Tensor:
    """Boxes ``[n, 4]`` of the given sides at uniform positions wholly inside the image."""
    count = heights.shape[0]
    top = (torch.rand(count, generator=generator) * (height - heights + 1)).long()
    left = (torch.rand(count, generator=generator) * (width - widths + 1)).long()
    return torch.stack([top, top + heights, left, left + widths], dim=1)


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks ``[n, 1, H, W]``, true inside each box."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_rows = (rows >= boxes[:, 0, None]) & (rows < boxes[:, 1, None])
    in_cols = (cols >= boxes[:, 2, None]) & (cols < boxes[:, 3, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def box_area_fraction(boxes: Tensor, height: int, width: int) -> Tensor:
    """Fraction ``[n]`` of the image each box covers."""
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    return area.float() / (height * width)


def paste_boxes(x: Tensor, partner: Tensor, draw: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` with each sample's box filled from its partner's pixels at the same place.

    ``boxes`` holds one box per draw (one for the whole batch, or one per sample);
    ``draw [B]`` says which each sample uses. Returns the mixed batch and
    ``λ = 1 − pasted area / image area`` per sample ``[B]``.
    """
    height, width = x.shape[-2:]
    boxes = boxes.to(x.device)
    masks = box_masks(boxes, height, width)
    lam = 1.0 - box_area_fraction(boxes, height, width)
    if boxes.shape[0] > 1:
        masks = masks[draw]
    return torch.where(masks, x[partner], x), lam[draw]
