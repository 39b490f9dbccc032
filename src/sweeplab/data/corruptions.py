"""Common corruptions (Hendrycks & Dietterich, 2019) applied on the fly to uint8 batches.

A shift evaluation needs the test split under each corruption at each of five severities;
storing them (CIFAR-10-C is 19 × 5 copies of the test set) is unnecessary when a whole
batch can be corrupted in torch in well under a second. The severity parameters are those
of CIFAR-10-C (``make_cifar_c.py``); images are corrupted in [0, 1] floats and rounded
back to uint8 (CIFAR-10-C truncates).

Spatial parameters (blur sigmas and disk radii) are CIFAR-10-C's pixel sizes multiplied by
``max(1, min(H, W) / 32)``: larger images get proportionally larger kernels, images of 32
pixels or fewer (28×28 MNIST, 8×8 digits) keep the 32-pixel kernels. Shrunk further they
would fall below a pixel: on 8×8 digits a quarter of CIFAR's σ = 1 px blur is σ = 0.25 px,
which leaves the image as it is, and the aliased disks of defocus blur would stop growing
with severity. Pixelation and fog are relative to the image size already.

Random draws come from a generator on the batch's device seeded from ``(seed, name)``,
not the severity: the severities of one corruption share their draws (larger noise on
the same pattern), so a corrupted image changes monotonically with severity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from sweeplab.data.folder_archives import quiet_codec_deprecation
from sweeplab.data.splits import derive_seed

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 32  # the image side CIFAR-10-C's spatial parameters are given for


# ------------------------------------------------------------------- linear operators
def _border_index(index: Tensor, size: int, mode: str) -> Tensor:
    """Map out-of-range indices inside ``0..size-1``: ``replicate`` (scipy's ``nearest``)
    or ``reflect`` (OpenCV's default ``BORDER_REFLECT_101``, edge not repeated)."""
    if mode == "replicate" or size == 1:
        return index.clamp(0, size - 1)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def filter_matrix(taps: Tensor, size: int, mode: str) -> Tensor:
    """``[size, size]`` matrix of a 1-D correlation with the odd-length ``taps``.

    Filtering becomes a matrix product along one axis (``x @ M.T`` along the width,
    ``M @ x`` along the height), with the border rule folded into the matrix: on the CPU
    that is an order of magnitude faster than ``conv2d`` over ``N·C`` single-channel maps.
    """
    radius = (taps.numel() - 1) // 2
    rows = torch.arange(size)[:, None].expand(size, taps.numel())
    columns = _border_index(rows + torch.arange(-radius, radius + 1)[None], size, mode)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.index_put_((rows, columns), taps.double().expand_as(rows), accumulate=True)
    return matrix


def filter_2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate every channel of ``x [N, C, H, W]`` with the 2-D ``kernel`` (odd sides).

    The kernel is split by SVD into separable rank-1 terms (one for a Gaussian, two or
    three for a blurred disk), each applied as two matrix products.
    """
    height, width = x.shape[-2:]
    u, s, vh = torch.linalg.svd(kernel.double())
    out = None
    for rank in range(int((s > s[0] * 1e-7).sum())):
        rows = filter_matrix(u[:, rank] * s[rank], height, mode).to(x)
        columns = filter_matrix(vh[rank], width, mode).to(x)
        term = rows @ (x @ columns.T)
        out = term if out is None else out.add_(term)
    return out


def gaussian_taps(sigma: float) -> Tensor:
    """scipy's ``gaussian_filter`` taps: radius ``int(4σ + 0.5)``, normalised."""
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else (offsets == 0).double()
    return taps / taps.sum()


def gaussian_filter(x: Tensor, sigma: float) -> Tensor:
    """skimage's ``gaussian(x, sigma)`` per channel of a float ``[N, C, H, W]`` batch
    (border ``nearest``, truncated at 4σ)."""
    taps = gaussian_taps(sigma)
    return filter_2d(x, taps[:, None] * taps[None, :], "replicate")


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """CIFAR-10-C's defocus kernel: an aliased disk, normalised, then blurred by a
    3×3 Gaussian (5×5 beyond radius 8) of σ ``alias_blur``; zero rows and columns cut."""
    extent = 8 if radius <= 8 else math.ceil(radius)
    offsets = torch.arange(-extent, extent + 1, dtype=torch.float64)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).double()
    disk /= disk.sum()
    ksize = 3 if radius <= 8 else 5
    half = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    taps = torch.exp(-(half**2) / (2 * alias_blur**2))
    taps /= taps.sum()
    pad = ksize // 2  # OpenCV pads with BORDER_REFLECT_101, torch's "reflect"
    padded = F.pad(disk[None, None], (pad, pad, pad, pad), mode="reflect")
    blurred = F.conv2d(padded, (taps[:, None] * taps[None, :])[None, None])[0, 0]
    support = blurred.sum(0) > 0
    keep = int(support.nonzero().max()) - extent  # symmetric, so one side decides
    return blurred[extent - keep : extent + keep + 1, extent - keep : extent + keep + 1]


def pil_box_matrix(in_size: int, out_size: int) -> Tensor:
    """``[out_size, in_size]`` weights of Pillow's ``Image.BOX`` resampling of one axis."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out_index in range(out_size):
        center = (out_index + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        for index in range(first, last):
            offset = (index - center + 0.5) / filter_scale
            matrix[out_index, index] = 1.0 if -0.5 < offset <= 0.5 else 0.0
        total = matrix[out_index].sum()
        if total > 0:
            matrix[out_index] /= total
    return matrix


# ----------------------------------------------------------------------- helpers
def _to_unit(images: Tensor) -> Tensor:
    return images.to(torch.float32).div_(255.0)


def _to_uint8(x: Tensor) -> Tensor:
    """[0, 1] floats → uint8, rounding halves up (as Pillow does)."""
    return x.mul(255.0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)


def _round_levels(x: Tensor) -> Tensor:
    """Round 0..255 floats to whole levels, halves up, as Pillow's 8-bit passes do."""
    return x.add_(0.5).floor_().clamp_(0, 255)


def spatial_scale(images: Tensor) -> float:
    """How much larger than CIFAR-10-C's kernels this image's kernels are (never smaller)."""
    return max(1.0, min(images.shape[-2:]) / REFERENCE_SIZE)


# ------------------------------------------------------------------- corruptions
def _gaussian_noise(images: Tensor, std: float, generator: torch.Generator) -> Tensor:
    x = _to_unit(images)
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return _to_uint8(x.add_(noise.mul_(std)))


def _shot_noise(images: Tensor, photons: float, generator: torch.Generator) -> Tensor:
    x = _to_unit(images)
    return _to_uint8(torch.poisson(x.mul_(photons), generator=generator).div_(photons))


def _impulse_noise(images: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """Salt and pepper per channel value: pepper below ``amount / 2``, salt up to ``amount``."""
    draw = torch.rand(images.shape, generator=generator, device=images.device)
    out = torch.where(draw < amount, torch.full_like(images, 255), images)
    return torch.where(draw < amount / 2, torch.zeros_like(images), out)


def _speckle_noise(images: Tensor, std: float, generator: torch.Generator) -> Tensor:
    x = _to_unit(images)
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return _to_uint8(x.addcmul_(x, noise.mul_(std)))


def _gaussian_blur(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    return _to_uint8(gaussian_filter(_to_unit(images), sigma * spatial_scale(images)))


def _defocus_blur(
    images: Tensor, params: tuple[float, float], generator: torch.Generator
) -> Tensor:
    scale = spatial_scale(images)
    kernel = disk_kernel(params[0] * scale, params[1] * scale)
    return _to_uint8(filter_2d(_to_unit(images), kernel, "reflect"))


def plasma_fractal(
    count: int, size: int, decay: float, generator: torch.Generator, device: torch.device
) -> Tensor:
    """``count`` diamond-square height maps ``[count, size, size]`` in [0, 1] (CIFAR-10-C's
    ``plasma_fractal``, batched); ``size`` is a power of two, ``decay`` the roughness."""
    height = torch.zeros(count, size, size, device=device)
    step, wibble = size, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        noise = torch.rand(total.shape, generator=generator, device=device)
        return total / 4 + wibble * (noise * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = height[:, 0:size:step, 0:size:step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        height[:, half:size:step, half:size:step] = wibbled_mean(squares)
        centres = height[:, half:size:step, half:size:step]
        corners = height[:, 0:size:step, 0:size:step]
        left = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        height[:, 0:size:step, half:size:step] = wibbled_mean(left)
        top = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        height[:, half:size:step, 0:size:step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    height -= height.amin(dim=(1, 2), keepdim=True)
    return height / height.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def _fog(images: Tensor, params: tuple[float, float], generator: torch.Generator) -> Tensor:
    """A plasma haze over the image. Its map has the smallest power-of-two side covering
    the image (32 for CIFAR, as in CIFAR-10-C), cropped to it, so the haze has the same
    structure relative to the image at any size."""
    strength, decay = params
    x = _to_unit(images)
    height, width = x.shape[-2:]
    size = 1 << max(1, math.ceil(math.log2(max(height, width))))
    haze = plasma_fractal(x.shape[0], size, decay, generator, x.device)[:, None, :height, :width]
    max_value = x.amax(dim=(1, 2, 3), keepdim=True)
    x = x.add_(haze, alpha=strength)
    return _to_uint8(x.mul_(max_value / (max_value + strength)))


def _brightness(images: Tensor, shift: float, generator: torch.Generator) -> Tensor:
    """Raise HSV value by ``shift`` keeping hue and saturation: every channel scales by
    ``V' / V`` (``V`` the channel maximum, ``V' = min(V + shift, 1)``); black becomes grey
    ``V'``, as skimage's HSV round trip gives."""
    x = _to_unit(images)
    value = x.amax(dim=1, keepdim=True)
    raised = (value + shift).clamp_(max=1.0)
    scaled = x * (raised / value.clamp_min(1e-12))
    return _to_uint8(torch.where(value > 0, scaled, raised.expand_as(x)))


def _contrast(images: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """Pull each channel towards its own spatial mean."""
    x = _to_unit(images)
    means = x.mean(dim=(2, 3), keepdim=True)
    return _to_uint8(x.sub_(means).mul_(factor).add_(means))


def _pixelate(images: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """Pillow ``BOX`` down to ``int(side · factor)`` and back up, each pass rounded to
    8 bits (width first), as ``PIL.Image.resize`` does. On 8×8 images the sizes are
    7, 7, 6, 6, 5: neighbouring severities can coincide."""
    height, width = images.shape[-2:]
    small_height, small_width = max(1, int(height * factor)), max(1, int(width * factor))
    x = images.to(torch.float32)
    for rows, columns in (
        (pil_box_matrix(height, small_height), pil_box_matrix(width, small_width)),
        (pil_box_matrix(small_height, height), pil_box_matrix(small_width, width)),
    ):
        x = _round_levels(x @ columns.T.to(x))
        x = _round_levels(rows.to(x) @ x)
    return x.to(torch.uint8)


def _jpeg(images: Tensor, quality: int, generator: torch.Generator) -> Tensor:
    """libjpeg through ``torchvision.io`` (batched lists), on the CPU whatever the device."""
    with quiet_codec_deprecation():
        encoded = encode_jpeg(list(images.cpu()), quality=quality)
        decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED)
    return torch.stack(decoded).to(images.device)


@dataclass(frozen=True)
class Corruption:
    """One corruption: the function and its parameter at each severity 1..5."""

    apply: Callable[[Tensor, Any, torch.Generator], Tensor]
    levels: Sequence[Any]


REGISTRY: dict[str, Corruption] = {
    "gaussian_noise": Corruption(_gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10)),
    "shot_noise": Corruption(_shot_noise, (500, 250, 100, 75, 50)),
    "impulse_noise": Corruption(_impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
    "defocus_blur": Corruption(
        _defocus_blur, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))
    ),
    "fog": Corruption(_fog, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))),
    "brightness": Corruption(_brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),
    "contrast": Corruption(_contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
    "pixelate": Corruption(_pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),
    "jpeg": Corruption(_jpeg, (80, 65, 58, 50, 40)),
    "speckle_noise": Corruption(_speckle_noise, (0.06, 0.1, 0.12, 0.16, 0.2)),
    "gaussian_blur": Corruption(_gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1.0)),
}
CORRUPTIONS: tuple[str, ...] = tuple(REGISTRY)


def corrupt(images: Tensor, name: str, severity: int, seed: int) -> Tensor:
    """``images`` (uint8 ``[N, C, H, W]``, C = 1 or 3) under corruption ``name`` at
    ``severity`` 1..5, on their device; the same arguments give the same pixels.

    The draws depend on the batch's shape: corrupt a set in one call, or give each chunk
    its own seed.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError("corrupt expects a uint8 tensor [N, C, H, W]")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"corrupt expects 1 or 3 channels, got {images.shape[1]}")
    if images.shape[0] == 0:
        return images.clone()
    generator = torch.Generator(device=images.device)
    generator.manual_seed(derive_seed(int(seed), f"corruption/{name}"))
    corruption = REGISTRY[name]
    return corruption.apply(images, corruption.levels[severity - 1], generator)
