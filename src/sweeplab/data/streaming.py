"""Streaming image folders: decode on CPU workers batch by batch, for data too big for memory.

The file index is ``torchvision.datasets.ImageFolder``'s; images are decoded with the same
``torchvision.io`` call and resize as the in-memory path, so a data set gives the same
pixels whichever path reads it. Batch order comes from the same :class:`EpochBatchPlan`
as in-memory loaders (no ``DistributedSampler``), so the two paths see the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from sweeplab.data.folder_archives import (
    decode_image_bytes,
    is_image_path,
    quiet_codec_deprecation,
    resize_image,
)
from sweeplab.data.loaders import EpochBatchPlan, PlannedLoader


class FolderImages(ImageFolder):
    """An ``ImageFolder`` split that yields uint8 ``[C, H, W]`` tensors of a fixed shape.

    ``class_names`` comes from the train split, so a test split missing a class still
    indexes the others the same way; hidden files and folders are ignored.
    """

    def __init__(
        self,
        root: Path,
        class_names: list[str],
        channels: int,
        image_size: tuple[int, int] | None,
        expected_shape: tuple[int, ...] | None = None,
    ) -> None:
        self._class_names = list(class_names)
        self.channels = channels
        self.image_size = image_size
        self.expected_shape = expected_shape
        super().__init__(
            str(root),
            loader=self._decode,
            is_valid_file=lambda path: is_image_path(Path(path).name),
            allow_empty=True,
        )

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._class_names, {name: i for i, name in enumerate(self._class_names)}

    def _decode(self, path: str) -> Tensor:
        with quiet_codec_deprecation():
            image = decode_image_bytes(Path(path).read_bytes(), self.channels, path)
        image = resize_image(image, self.image_size)
        if self.expected_shape is not None and tuple(image.shape) != self.expected_shape:
            raise ValueError(
                f"data.image_size must be set: {path} has shape {tuple(image.shape)}, "
                f"other images {self.expected_shape}"
            )
        return image


class SplitDataset(Dataset):
    """The samples ``indices`` of a pool dataset, with their planned (remapped) labels."""

    def __init__(self, pool: Dataset, indices: Tensor, labels: Tensor) -> None:
        self.pool = pool
        self.indices = indices.tolist()
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, _ = self.pool[self.indices[i]]
        return image, self.labels[i]


class _CurrentEpochBatches:
    """A batch sampler whose batches are swapped in at the start of every epoch."""

    def __init__(self, plan: EpochBatchPlan) -> None:
        self.plan = plan
        self.batches: list[list[int]] = []

    def set_epoch(self, epoch: int | None) -> None:
        self.batches = [batch.tolist() for batch in self.plan.batches(epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.plan)


class StreamingBatchLoader(PlannedLoader):
    """``(uint8 images, int64 labels)`` CPU batches decoded by ``num_workers`` processes.

    Same contract as :class:`~sweeplab.data.loaders.TensorBatchLoader`: ``begin_epoch``
    (called when iteration starts) picks the epoch's order, ``None`` the fixed order.
    """

    def __init__(
        self,
        dataset: Dataset,
        plan: EpochBatchPlan,
        begin_epoch: Callable[[], int | None] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(plan, begin_epoch)
        self._sampler = _CurrentEpochBatches(plan)
        self._loader = DataLoader(
            dataset,
            batch_sampler=self._sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._sampler.set_epoch(self.current_epoch())
        yield from self._loader
