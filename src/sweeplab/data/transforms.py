"""Batched image transforms on device tensors: crop, flip, scale, normalise.

Pure functions of the batch and explicit random parameters, so the same parameters give the
same pixels on any device. Random parameters come from a CPU generator
(:func:`sample_crop_and_flip`) and travel to the batch's device in one small copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_crop_and_flip(
    batch_size: int, padding: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Per-sample crop offsets ``[B, 2]`` (row, column) in ``0..2·padding`` and flip flags ``[B]``.

    Offsets are drawn first, then flips: a fixed order, so a seeded generator reproduces both.
    """
    offsets = torch.randint(0, 2 * padding + 1, (batch_size, 2), generator=generator)
    flips = torch.rand(batch_size, generator=generator) < 0.5
    return offsets, flips


def random_crop(x: Tensor, offsets: Tensor, padding: int) -> Tensor:
    """Zero-pad ``x [B, C, H, W]`` by ``padding`` and crop ``H×W`` at ``offsets [B, 2]``.

    Offset ``(padding, padding)`` returns the image unchanged; ``(0, 0)`` shifts the content
    ``padding`` pixels down and right.
    """
    if padding == 0:
        return x
    batch, channels, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(x.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=x.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(width, device=x.device)  # [B, W]
    return padded[
        torch.arange(batch, device=x.device)[:, None, None, None],
        torch.arange(channels, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def horizontal_flip(x: Tensor, flips: Tensor) -> Tensor:
    """Mirror left-right the samples of ``x [B, C, H, W]`` where ``flips [B]`` is true."""
    return torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)


def to_unit_float(x: Tensor) -> Tensor:
    """uint8 pixels in 0..255 → float32 in [0, 1]."""
    return x.to(torch.float32).div_(255.0)


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """``(x - mean) / std`` per channel of a float batch ``[B, C, H, W]``."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
