"""Corruptions: contract (shape, dtype, determinism, errors), severity ordering, and values
checked by hand or against the reference implementations (Pillow, scipy)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from sweeplab.data.corruptions import (
    CORRUPTIONS,
    corrupt,
    disk_kernel,
    filter_matrix,
    gaussian_filter,
    spatial_scale,
)
from sweeplab.data.digits import load_digits_uint8

NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "fog")
REQUIRED = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
    "contrast", "brightness", "pixelate", "jpeg",
)  # fmt: skip


def natural_batch(channels: int = 3, size: int = 32) -> torch.Tensor:
    """Real digits, upsampled and tinted: smooth shapes, edges and a colour per channel."""
    digits, _ = load_digits_uint8()
    grey = TF.resize(digits[:48], [size, size], antialias=True).float() / 255
    if channels == 1:
        return (grey * 200 + 30).round().to(torch.uint8)
    tint = torch.tensor([0.9, 0.55, 0.25])[None, :, None, None]
    background = torch.tensor([0.15, 0.3, 0.5])[None, :, None, None]
    return ((grey * tint + (1 - grey) * background) * 255).round().to(torch.uint8)


def constant(values: tuple[int, ...], size: int = 8) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8)[None, :, None, None].expand(2, -1, size, size)


def mean_change(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).abs().mean().item()


# ------------------------------------------------------------------------- contract
def test_the_required_corruptions_are_offered():
    assert set(REQUIRED) <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (4, 3, 32, 32), (3, 3, 20, 28)])
def test_shape_and_dtype_are_preserved(name, shape):
    images = torch.randint(
        0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    for severity in (1, 5):
        out = corrupt(images, name, severity, seed=0)
        assert out.shape == images.shape and out.dtype == torch.uint8
        assert out.device == images.device


def test_input_is_not_modified_and_an_empty_batch_passes():
    images = natural_batch()[:4]
    before = images.clone()
    for name in CORRUPTIONS:
        corrupt(images, name, 5, seed=0)
    assert torch.equal(images, before)
    empty = torch.empty(0, 3, 32, 32, dtype=torch.uint8)
    assert corrupt(empty, "jpeg", 3, seed=0).shape == empty.shape


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_same_pixels(name):
    images = natural_batch()[:8]
    assert torch.equal(corrupt(images, name, 3, seed=5), corrupt(images, name, 3, seed=5))


@pytest.mark.parametrize("name", NOISES)
def test_noise_depends_on_the_seed(name):
    images = natural_batch()[:8]
    assert not torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - set(NOISES)))
def test_deterministic_corruptions_ignore_the_seed(name):
    images = natural_batch()[:8]
    assert torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_change_grows_with_severity(name, channels):
    images = natural_batch(channels)
    changes = [mean_change(corrupt(images, name, s, seed=0), images) for s in range(1, 6)]
    assert changes[0] > 0
    assert all(a < b for a, b in itertools.pairwise(changes)), changes


def test_unknown_names_raise_listing_the_corruptions():
    with pytest.raises(ValueError, match=r"fog_of_war.*gaussian_noise, shot_noise.*jpeg"):
        corrupt(natural_batch()[:2], "fog_of_war", 1, seed=0)


@pytest.mark.parametrize("severity", [0, 6, 2.0, True])
def test_severities_outside_one_to_five_raise(severity):
    with pytest.raises(ValueError, match=r"severity must be one of \[1, 2, 3, 4, 5\]"):
        corrupt(natural_batch()[:2], "contrast", severity, seed=0)


def test_bad_images_raise():
    with pytest.raises(TypeError, match="uint8"):
        corrupt(torch.rand(2, 3, 8, 8), "contrast", 1, seed=0)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        corrupt(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), "contrast", 1, seed=0)


# ---------------------------------------------------------------------- by hand
def test_brightness_on_constant_images():
    # Grey 100 + 0.15 (severity 3): 100 + 38.25 → 138.
    assert corrupt(constant((100,)), "brightness", 3, seed=0).unique().tolist() == [138]
    # HSV value 200/255 + 0.3 clips at 1: every channel scales by 255/200, hue kept.
    out = corrupt(constant((200, 100, 50)), "brightness", 5, seed=0)
    assert out[0, :, 0, 0].tolist() == [255, 128, 64]
    # Black has no hue: it becomes grey 0.05 · 255 = 12.75 → 13.
    assert corrupt(constant((0, 0, 0)), "brightness", 1, seed=0).unique().tolist() == [13]


def test_contrast_pulls_each_channel_to_its_mean():
    images = constant((90, 40, 200))
    for severity in range(1, 6):
        assert torch.equal(corrupt(images, "contrast", severity, seed=0), images)
    halves = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    halves[..., 2:] = 200  # mean 100; severity 2 halves the distance to it
    assert corrupt(halves, "contrast", 2, seed=0).unique().tolist() == [50, 150]


def test_noise_statistics_match_the_parameters():
    grey = torch.full((20, 3, 32, 32), 128, dtype=torch.uint8)
    out = corrupt(grey, "gaussian_noise", 3, seed=0).float()
    assert out.std().item() == pytest.approx(0.08 * 255, rel=0.03)
    assert out.mean().item() == pytest.approx(128, abs=0.5)
    impulse = corrupt(grey, "impulse_noise", 5, seed=0)
    assert (impulse == 0).float().mean().item() == pytest.approx(0.035, abs=0.004)
    assert (impulse == 255).float().mean().item() == pytest.approx(0.035, abs=0.004)
    assert ((impulse == 128) | (impulse == 0) | (impulse == 255)).all()
    shot = corrupt(grey, "shot_noise", 5, seed=0).float()  # Poisson(50·0.502) / 50
    assert shot.mean().item() == pytest.approx(128, abs=1)
    assert shot.std().item() == pytest.approx(255 * (128 / 255 / 50) ** 0.5, rel=0.05)


def test_pixelate_matches_pillow_box_resizing():
    images = torch.randint(
        0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    for severity, factor in enumerate((0.95, 0.9, 0.85, 0.75, 0.65), start=1):
        out = corrupt(images, "pixelate", severity, seed=0)
        for image, result in zip(images, out, strict=True):
            pil = Image.fromarray(image.permute(1, 2, 0).numpy())
            side = int(32 * factor)
            expected = pil.resize((side, side), Image.BOX).resize((32, 32), Image.BOX)
            assert torch.equal(result.permute(1, 2, 0), torch.from_numpy(np.array(expected)))


def test_gaussian_blur_matches_scipy_nearest_mode():
    x = torch.rand(2, 3, 11, 9, dtype=torch.float64)
    for sigma in (0.4, 1.0, 2.5):
        expected = scipy.ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="nearest")
        assert np.allclose(gaussian_filter(x, sigma).numpy(), expected, atol=1e-10)


def test_defocus_kernels_and_their_borders():
    # Severities 1-3 blur a single pixel with a 3×3 Gaussian; 5 is a 3×3 box (radius 1.5).
    taps = torch.tensor([np.exp(-1 / (2 * 0.4**2)), 1.0, np.exp(-1 / (2 * 0.4**2))])
    taps /= taps.sum()
    assert torch.allclose(disk_kernel(0.3, 0.4), taps[:, None] * taps[None, :])
    assert torch.allclose(
        disk_kernel(1.5, 0.1)[1:-1, 1:-1], torch.full((3, 3), 1 / 9, dtype=torch.float64)
    )
    assert disk_kernel(1.0, 0.2)[2].tolist() == pytest.approx([0, 0.2, 0.2, 0.2, 0], abs=1e-5)
    # Borders reflect without repeating the edge, as OpenCV's filter2D does.
    images = natural_batch()[:2]
    kernel = disk_kernel(1.0, 0.2).numpy()
    x = images.double().numpy() / 255
    expected = np.stack(
        [
            np.stack([scipy.ndimage.correlate(c, kernel, mode="mirror") for c in image])
            for image in x
        ]
    )
    expected = np.floor(np.clip(expected, 0, 1) * 255 + 0.5)
    out = corrupt(images, "defocus_blur", 4, seed=0).numpy()
    assert np.abs(out - expected).max() <= 1


def test_filter_matrix_border_rules():
    taps = torch.tensor([1.0, 2.0, 3.0])  # out[i] = x[i-1] + 2 x[i] + 3 x[i+1]
    replicate = filter_matrix(taps, 4, "replicate")
    assert replicate[0].tolist() == [3, 3, 0, 0] and replicate[3].tolist() == [0, 0, 1, 5]
    reflect = filter_matrix(taps, 4, "reflect")
    assert reflect[0].tolist() == [2, 4, 0, 0] and reflect[3].tolist() == [0, 0, 4, 2]


def test_spatial_parameters_scale_only_above_32_pixels():
    assert spatial_scale(torch.zeros(1, 1, 8, 8)) == 1.0
    assert spatial_scale(torch.zeros(1, 1, 28, 28)) == 1.0
    assert spatial_scale(torch.zeros(1, 3, 64, 96)) == 2.0


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_matches_pillow_at_the_cifar_c_qualities(channels):
    images = natural_batch(channels)[:4]
    for severity, quality in enumerate((80, 65, 58, 50, 40), start=1):
        out = corrupt(images, "jpeg", severity, seed=0)
        for image, result in zip(images, out, strict=True):
            pixels = image.permute(1, 2, 0).numpy()
            buffer = io.BytesIO()
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(
                buffer, "JPEG", quality=quality
            )
            expected = np.array(Image.open(buffer)).reshape(pixels.shape)
            assert np.array_equal(result.permute(1, 2, 0).numpy(), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_corruptions_run_on_the_batch_device():
    images = natural_batch().cuda()
    for name in CORRUPTIONS:
        out = corrupt(images, name, 3, seed=0)
        assert out.device == images.device and out.dtype == torch.uint8
        assert torch.equal(out, corrupt(images, name, 3, seed=0))
        if name not in NOISES:  # no random draws: the same pixels as on the CPU, up to rounding
            assert (out.cpu().int() - corrupt(images.cpu(), name, 3, seed=0).int()).abs().max() <= 1
