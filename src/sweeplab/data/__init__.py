"""Data modules: uint8 image splits, seeded batching and on-device augmentation.

Every ``conf/data`` option is one of these classes (or a configuration of one):
:class:`DigitsDataModule`, :class:`SyntheticDataModule`, :class:`BenchmarkDataModule`
(CIFAR, SVHN, MNIST, FashionMNIST) and :class:`ImageFolderDataModule`, all built on
:class:`InMemoryDataModule`.
"""

from sweeplab.data.benchmarks import BenchmarkDataModule
from sweeplab.data.datamodule import InMemoryDataModule, SourceData
from sweeplab.data.digits import DigitsDataModule
from sweeplab.data.imagefolder import ImageFolderDataModule
from sweeplab.data.synthetic import SyntheticDataModule

__all__ = [
    "BenchmarkDataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "SourceData",
    "SyntheticDataModule",
]
