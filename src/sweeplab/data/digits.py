"""scikit-learn's handwritten digits: a real data set that ships with a package.

1,797 grayscale 8×8 images, 10 classes, no download. There is no official test split, so
a stratified 20% is carved with a constant seed: every run seed is tested on the same
360 images, and seeds differ only in their val split, order and initialisation.
"""

from __future__ import annotations

from typing import Any

import torch

from sweeplab.data.datamodule import InMemoryDataModule, SourceData

DIGITS_MAX_VALUE = 16  # load_digits pixel values are counts in 0..16


def load_digits_uint8() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as uint8 ``[1797, 1, 8, 8]`` (``round(v · 255 / 16)``) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).double() * (255.0 / DIGITS_MAX_VALUE)
    return images.round().to(torch.uint8).unsqueeze(1), torch.from_numpy(digits.target).long()


class DigitsDataModule(InMemoryDataModule):
    """``load_digits`` with a fixed stratified test split; all other options as the base."""

    NUM_CLASSES = 10

    def __init__(self, *, name: str = "digits", **kwargs: Any) -> None:
        super().__init__(name=name, channels=1, **kwargs)
        self._check_num_classes(self.NUM_CLASSES)

    def load_source(self) -> SourceData:
        images, labels = load_digits_uint8()
        return SourceData(
            class_names=[str(d) for d in range(self.NUM_CLASSES)],
            train_images=images,
            train_labels=labels,
        )
