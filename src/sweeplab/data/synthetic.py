"""A generated, learnable classification task of any size, for tests and smoke runs.

Each class has one random prototype image; a sample is its class prototype plus Gaussian
pixel noise. The data depend only on ``data_seed`` (never on the run seed), so runs with
different seeds train on the same images, exactly as with a real data set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.data import checks as data_checks
from sweeplab.data.datamodule import InMemoryDataModule, SourceData
from sweeplab.data.splits import derive_seed


def prototype_images(
    num_samples: int, prototypes: Tensor, noise_std: float, seed: int
) -> tuple[Tensor, Tensor]:
    """``num_samples`` noisy copies of ``prototypes [K, C, H, W]`` (in [0, 1]), balanced classes."""
    generator = torch.Generator().manual_seed(seed)
    num_classes = prototypes.shape[0]
    labels = (torch.arange(num_samples) % num_classes)[
        torch.randperm(num_samples, generator=generator)
    ]
    noise = torch.randn((num_samples, *prototypes.shape[1:]), generator=generator) * noise_std
    images = (prototypes[labels] + noise).clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return images, labels


class SyntheticDataModule(InMemoryDataModule):
    """Prototype-plus-noise images; tiny by default so tests run in milliseconds.

    Args:
        num_train, num_test: sizes of the train pool (val is carved from it) and test set.
        num_classes, image_size, channels: the task's shape.
        noise_std: pixel noise in [0, 1] units; larger is harder.
        data_seed: the only seed the images depend on.
        **kwargs: the options of :class:`InMemoryDataModule`.
    """

    def __init__(
        self,
        *,
        name: str = "synthetic",
        num_train: int = 256,
        num_test: int = 128,
        num_classes: int = 4,
        image_size: int = 8,
        channels: int = 1,
        noise_std: float = 0.35,
        data_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, channels=channels, **kwargs)
        self.num_train = checks.positive_int("data.num_train", num_train)
        self.num_test = checks.positive_int("data.num_test", num_test)
        self.num_source_classes = checks.positive_int("data.num_classes", num_classes)
        self.image_size = data_checks.image_size("data.image_size", image_size)
        self.noise_std = checks.non_negative("data.noise_std", noise_std)
        self.data_seed = checks.seed("data.data_seed", data_seed)
        self._check_num_classes(self.num_source_classes)

    def load_source(self) -> SourceData:
        shape = (self.num_source_classes, self.channels, *self.image_size)
        prototypes = torch.rand(
            shape,
            generator=torch.Generator().manual_seed(derive_seed(self.data_seed, "prototypes")),
        )
        train_images, train_labels = prototype_images(
            self.num_train, prototypes, self.noise_std, derive_seed(self.data_seed, "train")
        )
        test_images, test_labels = prototype_images(
            self.num_test, prototypes, self.noise_std, derive_seed(self.data_seed, "test")
        )
        return SourceData(
            class_names=[f"class_{k}" for k in range(self.num_source_classes)],
            train_images=train_images,
            train_labels=train_labels,
            test_images=test_images,
            test_labels=test_labels,
        )
