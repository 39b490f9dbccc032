"""A picture of what the mixer does: mixed training samples with their soft labels.

At the start of training the regime mixes one batch of training images the way the
first step will, and saves up to 16 of them, denormalised, each titled with its
largest soft-label weights, as ``plots/mixed_samples.png`` in the run directory (the
runner sends every ``plots/*.png`` to the loggers). ``augment=none`` writes it too: it
shows the clean training inputs, which is how a wrong normalisation or a transposed
image is caught before a sweep is spent on it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sweeplab.augment.base import Mixer, step_seed
from sweeplab.augment.batch import MixedBatch
from sweeplab.files import atomic_write_bytes
from sweeplab.tracking.layout import PLOTS_DIR

PREVIEW_FILE = Path(PLOTS_DIR) / "mixed_samples.png"
MAX_IMAGES = 16
COLUMNS = 4
LABELS_SHOWN = 2
MIN_WEIGHT_SHOWN = 0.005
DATAMODULE_API = ("split", "loader", "preprocess", "class_names", "mean", "std")


def training_batch(datamodule: Any, device: torch.device, seed: int) -> tuple[Tensor, Tensor]:
    """One batch of preprocessed training images and their labels, chosen from ``seed``.

    Images in memory are sampled at random (a split may be sorted by class); other
    sources give the first batch of the train split. No augmentation stream is touched.
    """
    images, labels = datamodule.split("train")
    batch_size = int(getattr(datamodule, "batch_size", 64))
    if isinstance(images, Tensor):
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(labels.shape[0], generator=generator)[:batch_size]
        x, y = images[index], labels[index]
    else:
        x, y = next(iter(datamodule.loader("train")))
    x = datamodule.preprocess(x.to(device), train=False)
    return x, y.to(device)


def mix_preview(mixer: Mixer, x: Tensor, y: Tensor) -> MixedBatch:
    """The batch mixed with the first training step's draws, mixing even when ``prob`` < 1."""
    generator = torch.Generator().manual_seed(step_seed(mixer.seed, 0, 0, 0))
    return mixer.mix_batch(x, y, generator)


def caption(target: Tensor, class_names: Sequence[str]) -> str:
    """The largest soft-label weights of one sample, one ``class: weight`` per line."""
    weights, classes = target.topk(min(LABELS_SHOWN, target.shape[0]))
    lines = [
        f"{class_names[int(c)]}: {float(w):.2f}"
        for w, c in zip(weights, classes, strict=True)
        if float(w) >= MIN_WEIGHT_SHOWN
    ]
    return "\n".join(lines)


def render(
    mixed: MixedBatch,
    class_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    title: str,
) -> bytes:
    """A PNG grid of up to 16 mixed samples, denormalised to [0, 1], with their labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows_start = mixed.clean_rows  # RegMixup: show the mixed half
    images = mixed.x[rows_start : rows_start + MAX_IMAGES].detach().float().cpu()
    targets = mixed.target[rows_start : rows_start + MAX_IMAGES].detach().float().cpu()
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    count = images.shape[0]
    columns = min(COLUMNS, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(1.9 * columns, 2.2 * rows + 0.6))
    FigureCanvasAgg(figure)
    for i in range(count):
        axes = figure.add_subplot(rows, columns, i + 1)
        picture = (images[i] * std_t + mean_t).clamp(0.0, 1.0)
        if picture.shape[0] == 3:
            axes.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            axes.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes.set_title(caption(targets[i], class_names), fontsize=8)
        axes.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_preview(
    mixer: Mixer, datamodule: Any, path: str | Path, device: torch.device
) -> Path | None:
    """Mix one training batch and write its picture to ``path`` atomically.

    Returns ``None`` (and writes nothing) for a data module that is not a sweeplab one.
    """
    if not all(hasattr(datamodule, name) for name in DATAMODULE_API):
        return None
    x, y = training_batch(datamodule, device, mixer.seed)
    mixed = mix_preview(mixer, x, y)
    title = f"{type(mixer).__name__}: training samples and their largest soft-label weights"
    if mixed.feature_mix is not None:
        title += f"\n(mixed after backbone stage {mixed.feature_mix.stage}; inputs shown unmixed)"
    png = render(mixed, datamodule.class_names, datamodule.mean, datamodule.std, title)
    path = Path(path)
    atomic_write_bytes(path, png)
    return path
