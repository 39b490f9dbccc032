"""FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation", 2020).

The mask is a thresholded low-frequency image: complex Gaussian noise in Fourier space,
attenuated as ``1 / f^δ`` (decay power δ; larger δ, smoother blobs), transformed back,
and its ``round(λ · H · W)`` highest pixels keep the sample's own image. The rest comes
from the partner, so the masked regions take arbitrary shapes rather than boxes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.base import Mixer, sample_beta
from sweeplab.augment.batch import MixedBatch


def low_frequency_images(
    count: int,
    height: int,
    width: int,
    decay_power: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``count`` random grey images ``[n, H, W]`` whose spectrum decays as ``1 / f^δ``.

    The noise is drawn on the CPU from ``generator`` and transformed on ``device``.
    """
    freqs = torch.sqrt(
        torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2
    )
    scale = 1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay_power
    noise = torch.randn(count, *freqs.shape, 2, generator=generator)
    spectrum = torch.view_as_complex(noise * scale[..., None]).to(device)
    return torch.fft.irfft2(spectrum, s=(height, width))


def sorted_rows(values: Tensor) -> Tensor:
    """Each row of ``values [n, P]`` in ascending order.

    On the CPU through NumPy, whose vectorised sort is several times faster than
    ``torch.sort`` for rows of this length; elsewhere ``torch.sort``.
    """
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.numpy(), axis=1))
    return torch.sort(values, dim=1).values


def top_masks(values: Tensor, keep: Tensor) -> Tensor:
    """Boolean ``[n, P]``: true on the ``keep[i]`` largest entries of row ``i`` (continuous
    values have no ties, so exactly that many)."""
    count, size = values.shape
    ascending = torch.cat([sorted_rows(values), values.new_full((count, 1), math.inf)], dim=1)
    threshold = ascending.gather(1, (size - keep)[:, None])
    return values >= threshold


def fourier_masks(
    lam: Tensor,
    height: int,
    width: int,
    decay_power: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Boolean masks ``[n, H, W]``: true on the ``round(λ · H · W)`` highest pixels of a
    low-frequency image, so each mask's mean is within half a pixel of its λ."""
    count = lam.shape[0]
    images = low_frequency_images(count, height, width, decay_power, generator, device)
    keep = torch.round(lam.to(images.device) * height * width).long()
    return top_masks(images.reshape(count, height * width), keep).reshape(count, height, width)


class FMix(Mixer):
    """Mix each image with its partner through a low-frequency Fourier mask.

    Args:
        alpha: Beta(α, α) concentration of λ, the fraction of the own image kept.
        decay_power: δ of the ``1 / f^δ`` spectrum; the paper's default is 3.
    """

    def __init__(self, *, alpha: float = 1.0, decay_power: float = 3.0, **options) -> None:
        super().__init__(**options)
        self.alpha = checks.positive("augment.alpha", alpha)
        self.decay_power = checks.positive("augment.decay_power", decay_power)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        batch, _, height, width = x.shape
        partner, draw = self.draw_partners(batch, generator)
        drawn_lam = sample_beta(self.alpha, self.draw_count(batch), generator)
        own = fourier_masks(drawn_lam, height, width, self.decay_power, generator, x.device)
        lam = own.float().mean(dim=(1, 2))  # exact pixel share, within half a pixel of λ
        partner, draw = partner.to(x.device), draw.to(x.device)
        if own.shape[0] > 1:
            own = own[draw]
        x_mixed = torch.where(own[:, None], x, x[partner])
        return self.finish(x_mixed, y, partner, lam[draw])
