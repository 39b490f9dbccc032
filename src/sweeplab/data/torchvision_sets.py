"""torchvision's own data set classes, converted to the uint8 NCHW contract.

Each class stores its pixels differently (CIFAR: ndarray NHWC + list ``targets``;
MNIST/FashionMNIST: tensor NHW + tensor ``targets``; SVHN: ndarray NCHW + ``labels`` and
a ``split`` argument); :class:`TorchvisionSpec` records which, so one converter serves all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to construct one torchvision data set class and read its arrays."""

    class_name: str  # attribute of torchvision.datasets
    channels: int
    num_classes: int
    storage: str  # layout of ``.data``: "NHWC", "NHW" or "NCHW"
    labels_attribute: str = "targets"
    split_argument: str = "train"  # "train" (a bool) or "split" ("train"/"test")


TORCHVISION_DATASETS: dict[str, TorchvisionSpec] = {
    "cifar10": TorchvisionSpec("CIFAR10", 3, 10, "NHWC"),
    "cifar100": TorchvisionSpec("CIFAR100", 3, 100, "NHWC"),
    "svhn": TorchvisionSpec("SVHN", 3, 10, "NCHW", "labels", "split"),
    "mnist": TorchvisionSpec("MNIST", 1, 10, "NHW"),
    "fashion_mnist": TorchvisionSpec("FashionMNIST", 1, 10, "NHW"),
}


def to_uint8_nchw(data: np.ndarray | Tensor, storage: str) -> Tensor:
    """Pixels stored as ``storage`` → a contiguous uint8 ``[N, C, H, W]`` tensor."""
    images = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {images.dtype}")
    if storage == "NHWC":
        images = images.permute(0, 3, 1, 2)
    elif storage == "NHW":
        images = images.unsqueeze(1)
    elif storage != "NCHW":
        raise ValueError(f"unknown storage layout {storage!r}")
    return images.contiguous()


def load_torchvision_split(
    spec: TorchvisionSpec, root: Path, train: bool, download: bool
) -> tuple[Tensor, Tensor, list[str]]:
    """``(images uint8 NCHW, labels int64, class names)`` of one split."""
    dataset_class = getattr(torchvision.datasets, spec.class_name)
    split_kwargs = (
        {"split": "train" if train else "test"}
        if spec.split_argument == "split"
        else {"train": train}
    )
    try:
        dataset = dataset_class(root=str(root), download=download, **split_kwargs)
    except RuntimeError as error:
        if "download=True" not in str(error):
            raise
        raise FileNotFoundError(
            f"torchvision's {spec.class_name} files are not under {root} ({error}). "
            "Set data.download=true to fetch them (needs internet), point data.root at the "
            "folder that holds them, or use data.source=archive with a local image archive."
        ) from error
    images = to_uint8_nchw(dataset.data, spec.storage)
    labels = torch.as_tensor(np.asarray(getattr(dataset, spec.labels_attribute)), dtype=torch.long)
    class_names = getattr(dataset, "classes", None) or [str(k) for k in range(spec.num_classes)]
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{spec.class_name}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    return images, labels, list(class_names)
