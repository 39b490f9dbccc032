"""Standard benchmarks (CIFAR-10/100, SVHN, MNIST, FashionMNIST) from either of two sources.

``source: archive`` reads a local image folder or ``.tar.gz`` archive in the
``<split>/<class>/<image>`` layout (no internet needed), decoding it once into a cache.
``source: torchvision`` uses torchvision's data set classes under ``root``, with
``download: true`` for machines that can reach the internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeplab import checks
from sweeplab.data.datamodule import InMemoryDataModule, SourceData
from sweeplab.data.folder_archives import is_archive, load_image_folder, missing_root_error
from sweeplab.data.torchvision_sets import TORCHVISION_DATASETS, load_torchvision_split

SOURCES = ("archive", "torchvision")


class BenchmarkDataModule(InMemoryDataModule):
    """One of :data:`TORCHVISION_DATASETS`, held in memory as uint8.

    Args:
        dataset: ``cifar10``, ``cifar100``, ``svhn``, ``mnist`` or ``fashion_mnist``;
            fixes the channels and the number of classes.
        root: the archive or image folder (``source=archive``), or torchvision's data
            directory (``source=torchvision``; an archive path there means its folder).
        source: ``archive`` or ``torchvision``.
        download: let torchvision download missing files (``source=torchvision`` only).
        **kwargs: the options of :class:`InMemoryDataModule`.
    """

    def __init__(
        self,
        *,
        dataset: str,
        root: str,
        source: str = "archive",
        download: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        spec = TORCHVISION_DATASETS[checks.one_of("data.dataset", dataset, TORCHVISION_DATASETS)]
        super().__init__(name=name or dataset, channels=spec.channels, **kwargs)
        self.dataset = dataset
        self.spec = spec
        self.source = checks.one_of("data.source", source, SOURCES)
        self.root = Path(str(root)).expanduser()
        self.download = checks.boolean("data.download", download)
        self._check_num_classes(self.spec.num_classes)

    def load_source(self) -> SourceData:
        if self.source == "torchvision":
            return self._load_torchvision()
        return self._load_archive()

    def _load_archive(self) -> SourceData:
        root = self.root.resolve()
        if not root.exists():
            raise missing_root_error(root)
        payload = load_image_folder(
            root, channels=self.channels, image_size=None, cache_dir=self.cache_dir
        )
        if len(payload["class_names"]) != self.spec.num_classes:
            raise ValueError(
                f"data.root {root} has {len(payload['class_names'])} classes "
                f"({payload['class_names'][:5]}…) but data.dataset={self.dataset} has "
                f"{self.spec.num_classes}"
            )
        return SourceData(
            class_names=payload["class_names"],
            train_images=payload["train_images"],
            train_labels=payload["train_labels"],
            test_images=payload["test_images"],
            test_labels=payload["test_labels"],
        )

    def _load_torchvision(self) -> SourceData:
        root = self.root.parent if is_archive(self.root) else self.root
        train_images, train_labels, class_names = load_torchvision_split(
            self.spec, root, train=True, download=self.download
        )
        test_images, test_labels, _ = load_torchvision_split(
            self.spec, root, train=False, download=self.download
        )
        return SourceData(class_names, train_images, train_labels, test_images, test_labels)
