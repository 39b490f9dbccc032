"""Static saliency without a second network: the spectral residual (Hou & Zhang, CVPR 2007).

The log amplitude spectrum of natural images is smooth; what sticks out of its local
average (the residual), recombined with the original phase, lights up the regions
that differ from their surroundings. It is a few FFTs of the whole batch at once,
the same method as OpenCV's ``StaticSaliencySpectralResidual`` (which works at 64 px
and blurs the map; so does this, for larger images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

WORKING_SIZE = 64  # larger images are reduced to this side first, as in OpenCV
AMPLITUDE_FLOOR = 1e-3  # of the largest amplitude of the image
EPS = 1e-12


def _mean_filter(x: Tensor, size: int, mode: str) -> Tensor:
    """``size × size`` local mean, padding by ``mode``; sums of shifted slices, which on
    the CPU are several times faster than a stride-1 ``avg_pool2d`` of single-channel maps."""
    height, width = x.shape[-2:]
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    rows = sum(padded[..., i : i + height, :] for i in range(size))
    return sum(rows[..., j : j + width] for j in range(size)) / size**2


def _full_from_half(half: Tensor, width: int) -> Tensor:
    """The full ``[..., H, W]`` of a real image's spectrum property from its ``rfft2`` half,
    by the symmetry ``S[k, l] = S[−k, −l]``."""
    mirrored = half[..., 1 : (width + 1) // 2].flip(-1).flip(-2).roll(1, dims=-2)
    return torch.cat([half, mirrored], dim=-1)


def spectral_residual(x: Tensor) -> Tensor:
    """Saliency maps ``[B, h, w]`` of images ``[B, C, H, W]`` (``h, w ≤ 64``), higher = salient.

    With amplitude ``A``, phase ``P`` and ``M`` the local mean of ``log A``, the map is
    ``|ifft(exp(log A − M + iP))|² = |ifft(F · exp(−M))|²``: one forward and one inverse
    real FFT. The spectrum is periodic, so its local mean wraps around.
    """
    grey = x.float().mean(dim=1, keepdim=True)
    height, width = grey.shape[-2:]
    if max(height, width) > WORKING_SIZE:
        shrink = WORKING_SIZE / max(height, width)
        size = (max(1, round(height * shrink)), max(1, round(width * shrink)))
        grey = F.interpolate(grey, size=size, mode="area")
        height, width = size
    half = torch.fft.rfft2(grey)
    amplitude = half.abs()
    # Exact zeros of the spectrum (a box's sinc nulls) would be −∞ and dominate the mean.
    floor = amplitude.amax(dim=(-2, -1), keepdim=True) * AMPLITUDE_FLOOR + EPS
    log_amplitude = _full_from_half(torch.log(torch.maximum(amplitude, floor)), width)
    local_mean = _mean_filter(log_amplitude, 3, "circular")[..., : half.shape[-1]]
    saliency = torch.fft.irfft2(half * torch.exp(-local_mean), s=(height, width)) ** 2
    blur = 5 if max(height, width) >= WORKING_SIZE else 3
    return _mean_filter(saliency, blur, "replicate")[:, 0]


def saliency_peaks(x: Tensor) -> Tensor:
    """``(row, col)`` ``[B, 2]`` of each image's saliency maximum, in pixels of ``x``."""
    height, width = x.shape[-2:]
    saliency = spectral_residual(x)
    map_height, map_width = saliency.shape[-2:]
    flat = saliency.flatten(1).argmax(dim=1)
    rows = (flat // map_width * height + height // 2) // map_height
    cols = (flat % map_width * width + width // 2) // map_width
    return torch.stack([rows, cols], dim=1)
