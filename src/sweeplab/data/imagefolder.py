"""Any image folder or ``.tar.gz`` in the ``[<split>/]<class>/<image>`` layout.

``in_memory: true`` decodes every image once into a cached uint8 array (fast, for data that
fits); ``in_memory: false`` streams batches from disk through CPU workers, for data that
does not. Both give the same splits, labels, batch order and pixels for the same seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.data import checks as data_checks
from sweeplab.data.datamodule import SPLITS, InMemoryDataModule, SourceData
from sweeplab.data.folder_archives import (
    list_image_paths,
    load_image_folder,
    missing_root_error,
    resolve_layout,
    unpack_archive,
)
from sweeplab.data.splits import SplitPart, SplitPlan
from sweeplab.data.streaming import FolderImages, SplitDataset, StreamingBatchLoader


def _require_two_classes(root: Path, class_names: list[str]) -> None:
    """Say what the folder holds when it cannot train a classifier, before any other key
    (``data.held_out_classes``) is blamed for it."""
    if len(class_names) >= 2:
        return
    found = f" ({', '.join(class_names)})" if class_names else ""
    plural = "" if len(class_names) == 1 else "s"
    raise ValueError(
        f"data.root {root} has {len(class_names)} class folder{plural}{found}; "
        "a classifier needs at least 2 (one folder of images per class)"
    )


class ImageFolderDataModule(InMemoryDataModule):
    """Images from a folder or archive; a fixed test split is carved if it has none.

    Args:
        root: the folder or ``.tar.gz`` archive.
        channels: 1 (decoded as grayscale) or 3 (RGB).
        image_size: ``S`` or ``[H, W]`` to resize to; required when image sizes differ.
        in_memory: decode once into memory (``true``) or stream from disk (``false``;
            an archive is unpacked once under ``cache_dir``).
        **kwargs: the options of :class:`InMemoryDataModule`.
    """

    def __init__(
        self,
        *,
        root: str,
        channels: int = 3,
        image_size: int | list[int] | None = None,
        in_memory: bool = True,
        name: str = "imagefolder",
        **kwargs: Any,
    ) -> None:
        channels = data_checks.channels("data.channels", channels)
        super().__init__(name=name, channels=channels, **kwargs)
        self.root = Path(str(root)).expanduser()
        self.image_size = data_checks.image_size("data.image_size", image_size)
        self.in_memory = checks.boolean("data.in_memory", in_memory)
        self._datasets: dict[str, SplitDataset] = {}
        self._held_out_dataset: SplitDataset | None = None
        self._held_out_val_dataset: SplitDataset | None = None

    def load_source(self) -> SourceData:
        root = self.root.resolve()
        if not root.exists():
            raise missing_root_error(root)
        if self.in_memory:
            payload = load_image_folder(
                root, channels=self.channels, image_size=self.image_size, cache_dir=self.cache_dir
            )
            source = SourceData(
                payload["class_names"],
                payload["train_images"],
                payload["train_labels"],
                payload["test_images"],
                payload["test_labels"],
            )
        else:
            source = self._index_folder(root)
        _require_two_classes(root, source.class_names)
        return source

    # ------------------------------------------------------------------ streaming path
    def _index_folder(self, root: Path) -> SourceData:
        if root.is_file():
            if self.cache_dir is None:
                raise ValueError(
                    "data.cache_dir must be set to stream from an archive "
                    "(it is unpacked there once); or unpack it and set data.root to the folder"
                )
            root = unpack_archive(root, self.cache_dir)
        layout = resolve_layout(list_image_paths(root), str(self.root))
        pools = {
            split: FolderImages(
                layout.split_directory(root, split),
                layout.class_names,
                self.channels,
                self.image_size,
            )
            for split in (("train", "test") if layout.has_test_split else ("train",))
        }
        if self.image_size is None:  # every image must match the first one's shape
            shape = tuple(pools["train"][0][0].shape)
            for pool in pools.values():
                pool.expected_shape = shape
        labels = {
            split: torch.tensor(pool.targets, dtype=torch.long) for split, pool in pools.items()
        }
        return SourceData(
            layout.class_names,
            pools["train"],
            labels["train"],
            pools.get("test"),
            labels.get("test"),
        )

    def _build_splits(self, source: SourceData, plan: SplitPlan) -> None:
        if self.in_memory:
            super()._build_splits(source, plan)
            return

        def dataset(part: SplitPart) -> SplitDataset:
            pool = source.train_images if part.pool == "train" else source.test_images
            return SplitDataset(pool, part.indices, part.labels)

        self._datasets = {split: dataset(getattr(plan, split)) for split in SPLITS}
        self._held_out_dataset = dataset(plan.held_out) if plan.held_out is not None else None
        if plan.held_out_val is not None:
            self._held_out_val_dataset = dataset(plan.held_out_val)

    def _image_shape_of(self, source: SourceData) -> tuple[int, int, int]:
        if self.in_memory:
            return super()._image_shape_of(source)
        if self.image_size is not None:
            return (self.channels, *self.image_size)
        return tuple(source.train_images[0][0].shape)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """In-memory: the split's arrays. Streaming: decoded now, in full, so mind its size."""
        if self.in_memory:
            return super().split(name)
        self._require_setup()
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {name!r}")
        return self._materialise(self._datasets[name])

    @property
    def held_out(self) -> tuple[Tensor, Tensor] | None:
        if self.in_memory:
            return super().held_out
        self._require_setup()
        if self._held_out_dataset is None:
            return None
        if self._held_out is None:
            self._held_out = self._materialise(self._held_out_dataset)
        return self._held_out

    @property
    def held_out_val(self) -> tuple[Tensor, Tensor] | None:
        if self.in_memory:
            return super().held_out_val
        self._require_setup()
        if self._held_out_val_dataset is None:
            return None
        if self._held_out_val is None:
            self._held_out_val = self._materialise(self._held_out_val_dataset)
        return self._held_out_val

    def _materialise(self, dataset: SplitDataset) -> tuple[Tensor, Tensor]:
        loader = self._streaming_loader(dataset, train=False)
        batches = list(loader)
        if not batches:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8), torch.empty(
                0, dtype=torch.long
            )
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    def loader(self, name: str, train: bool = False) -> Any:
        if self.in_memory:
            return super().loader(name, train)
        self._require_setup()
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {name!r}")
        return self._streaming_loader(self._datasets[name], train)

    def _streaming_loader(self, dataset: SplitDataset, train: bool) -> StreamingBatchLoader:
        return StreamingBatchLoader(
            dataset,
            self._batch_plan(len(dataset), train),
            self._begin_train_epoch if train else None,
            num_workers=self.num_workers,
        )
