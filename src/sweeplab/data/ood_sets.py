"""Out-of-distribution evaluation sets: where the images come from and how they are fitted.

Each entry of ``eval.ood.sets`` (``conf/eval/ood_sets/<data>.yaml``) builds one
:class:`OODSet`. ``load(datamodule, "test")`` gives the images OOD metrics are reported
on; ``load(datamodule, "val")`` a disjoint part used only to choose detector
hyperparameters, or ``None`` when the set has none. Images come back as uint8
``[N, C, H, W]`` in the in-distribution shape (see :func:`adapt_images`), so they go
through the model's own preprocessing like any test batch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from sweeplab import checks
from sweeplab.data import checks as data_checks
from sweeplab.data.corruptions import gaussian_filter
from sweeplab.data.folder_archives import SPLIT_DIR_NAMES, is_archive, load_image_folder
from sweeplab.data.splits import derive_seed
from sweeplab.data.torchvision_sets import TORCHVISION_DATASETS, load_torchvision_split
from sweeplab.disk_faults import CorruptArchiveError

log = logging.getLogger(__name__)

GROUPS = ("near", "far")
PARTS = ("val", "test")


def option_key(name: str | None, option: str) -> str:
    """The config key of a set's option: ``eval.ood.sets.<name>.<option>``.

    A set built without a name (outside a config) has no key; its option goes by its bare name.
    """
    return option if name is None else f"eval.ood.sets.{name}.{option}"


def adapt_images(images: Tensor, shape: tuple[int, int, int], name: str) -> Tensor:
    """Fit uint8 ``images [N, C, H, W]`` to the model's ``(C, H, W)``.

    Colour becomes grey by averaging the channels, grey becomes colour by repeating it,
    and a different size is resized (antialiased bilinear, on the uint8 batch). Every
    change is logged at INFO with the set's ``name``, so an adapted set is never taken
    for a native one.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"OOD set {name}: expected uint8 images [N, C, H, W]")
    channels, height, width = (int(v) for v in shape)
    source = tuple(images.shape[1:])
    notes = []
    if images.shape[1] != channels:
        if channels == 1:
            images = images.float().mean(dim=1, keepdim=True).round_().to(torch.uint8)
            notes.append(f"{source[0]} channels averaged to grey")
        elif images.shape[1] != 1:
            raise ValueError(
                f"OOD set {name} has {source[0]} channels and the model takes {channels}: "
                "only grey ↔ colour is converted"
            )
    if tuple(images.shape[2:]) != (height, width):
        images = TF.resize(images, [height, width], antialias=True)
        notes.append(f"resized {source[1]}×{source[2]} → {height}×{width} (antialiased bilinear)")
    if images.shape[1] != channels:
        images = images.expand(-1, channels, -1, -1)
        notes.append(f"grey repeated to {channels} channels")
    if notes:
        log.info("OOD set %s adapted to the model's input: %s", name, "; ".join(notes))
    return images.contiguous()


class OODSet:
    """An evaluation set of OOD images in a ``group`` (``near`` or ``far``).

    Args:
        group: ``near`` (semantic shift, similar images) or ``far`` (different images);
            the metrics average the sets of each group.
        name: the set's key in ``eval.ood.sets``, used in log lines and error messages.
    """

    default_name = "ood"

    def __init__(self, group: str, name: str | None = None) -> None:
        self.name = str(name) if name is not None else self.default_name
        self.group = checks.one_of(option_key(name, "group"), group, GROUPS)

    def load(self, datamodule: Any, split: str) -> Tensor | None:
        """uint8 ``[N, C, H, W]`` images in ``datamodule.image_shape``, or ``None`` (no
        such part); ``split`` is ``test`` (reported) or ``val`` (for choosing only)."""
        checks.one_of("split", split, PARTS)
        images = self._images(datamodule, split)
        if images is None:
            return None
        return adapt_images(images, tuple(datamodule.image_shape), self.name)

    def _images(self, datamodule: Any, split: str) -> Tensor | None:
        """The images of one part before adaptation."""
        raise NotImplementedError(f"{type(self).__name__} must implement _images()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, group={self.group!r})"


class HeldOutClasses(OODSet):
    """Near-OOD: the classes held out of training (``data.held_out_classes``).

    Test part: their test samples (``datamodule.held_out``). Val part: their samples in
    the training pool (``datamodule.held_out_val``), never trained on and disjoint from
    the test part.
    """

    default_name = "held_out"

    def __init__(self, group: str = "near", name: str | None = None) -> None:
        super().__init__(group, name)

    def _images(self, datamodule: Any, split: str) -> Tensor | None:
        if not getattr(datamodule, "held_out_classes", ()):
            raise ValueError(
                f"OOD set {self.name} needs held-out classes but data.held_out_classes is "
                f"empty: set them (e.g. data.held_out_classes=[8,9]) or drop the set "
                f"(eval.ood.sets.{self.name}=null)"
            )
        held = datamodule.held_out if split == "test" else datamodule.held_out_val
        if held is None or held[0].shape[0] == 0:
            return None
        return held[0]


class SyntheticNoise(OODSet):
    """Far-OOD: generated images of the in-distribution shape, deterministic from ``seed``.

    The kinds of Outlier Exposure (Hendrycks et al., 2019), per pixel and channel:
    ``gaussian`` N(0.5, 0.25²) clipped to [0, 1]; ``uniform`` U[0, 1]; ``blobs``
    Bernoulli(0.7) pixels blurred (σ = 1.5 px at 32 px and below, proportional above)
    with values under 0.75 set to 0: amorphous shapes with sharp edges. The val part is
    drawn from a seed derived for it, so it never repeats a test image.

    Args:
        kind: ``gaussian``, ``uniform`` or ``blobs``.
        count: images in the test part.
        val_count: images in the val part; ``None`` means ``count``, 0 no val part.
        seed: the only seed the images depend on.
    """

    KINDS = ("gaussian", "uniform", "blobs")

    def __init__(
        self,
        group: str = "far",
        kind: str = "gaussian",
        count: int = 1000,
        val_count: int | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        self.kind = checks.one_of(option_key(name, "kind"), kind, self.KINDS)
        self.default_name = f"{self.kind}_noise"
        super().__init__(group, name)
        self.count = checks.positive_int(option_key(name, "count"), count)
        self.val_count = (
            self.count
            if val_count is None
            else checks.non_negative_int(option_key(name, "val_count"), val_count)
        )
        self.seed = checks.non_negative_int(option_key(name, "seed"), seed)

    def _images(self, datamodule: Any, split: str) -> Tensor | None:
        count = self.count if split == "test" else self.val_count
        if count == 0:
            return None
        return self.generate(count, tuple(datamodule.image_shape), split)

    def generate(self, count: int, shape: tuple[int, int, int], split: str) -> Tensor:
        """``count`` uint8 images of ``shape`` for part ``split``."""
        generator = torch.Generator().manual_seed(
            derive_seed(self.seed, f"ood_noise/{self.kind}/{split}")
        )
        size = (count, *shape)
        if self.kind == "gaussian":
            pixels = torch.randn(size, generator=generator).mul_(0.25).add_(0.5)
        elif self.kind == "uniform":
            pixels = torch.rand(size, generator=generator)
        else:
            coins = (torch.rand(size, generator=generator) < 0.7).float()
            pixels = gaussian_filter(coins, 1.5 * max(1.0, min(shape[1:]) / 32))
            pixels = torch.where(pixels < 0.75, torch.zeros_like(pixels), pixels)
        return pixels.mul_(255.0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)


class SampledSet(OODSet):
    """An OOD set read from stored images: a seeded sample for test, a disjoint one for val.

    The test part is drawn from the pool ``split`` names; the val part from the other
    pool when the source has two (train and test), else from what the test part left.
    A val part from the same source tunes detectors on the test distribution; set
    ``val_count: 0`` for a stricter protocol.

    Args:
        split: ``test``/``testing`` or ``train``/``training``: the pool of the test part.
        count: test images (``None``: the whole pool).
        val_count: val images (``None``: all that are left; 0: no val part).
        seed: decides which images are sampled.
    """

    def __init__(
        self,
        group: str,
        split: str = "test",
        count: int | None = None,
        val_count: int | None = 1000,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__(group, name)
        self.split = SPLIT_DIR_NAMES[
            checks.one_of(option_key(name, "split"), split, SPLIT_DIR_NAMES)
        ]
        self.count = (
            None if count is None else checks.positive_int(option_key(name, "count"), count)
        )
        self.val_count = (
            None
            if val_count is None
            else checks.non_negative_int(option_key(name, "val_count"), val_count)
        )
        self.seed = checks.non_negative_int(option_key(name, "seed"), seed)
        self._parts: dict[str, Tensor | None] | None = None

    def _pools(self) -> dict[str, Tensor]:
        """uint8 images by pool (``train``, and ``test`` where the source has one)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _pools()")

    def _images(self, datamodule: Any, split: str) -> Tensor | None:
        if self._parts is None:
            self._parts = self._sample(self._pools())
        return self._parts[split]

    def _sample(self, pools: dict[str, Tensor]) -> dict[str, Tensor | None]:
        pool = pools.get(self.split)
        if pool is None:
            if len(pools) > 1:
                raise ValueError(f"OOD set {self.name} has no {self.split} split")
            pool = next(iter(pools.values()))
        order = self._permutation(pool.shape[0], "test")
        test_count = pool.shape[0] if self.count is None else min(self.count, pool.shape[0])
        test = pool[order[:test_count].sort().values]
        others = [images for images in pools.values() if images is not pool]
        if others:
            val_pool, val_order = others[0], self._permutation(others[0].shape[0], "val")
        else:
            val_pool, val_order = pool, order[test_count:]
        if self.val_count is not None:
            val_order = val_order[: self.val_count]
        val = val_pool[val_order.sort().values] if val_order.numel() else None
        return {"test": test, "val": val}

    def _permutation(self, size: int, part: str) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, f"ood_sample/{part}"))
        return torch.randperm(size, generator=generator)

    def _missing(self, root: Path, why: str = "no image folder or archive") -> FileNotFoundError:
        return FileNotFoundError(
            f"OOD set {self.name}: {why} at {root}. Point paths.data_dir at the folder that "
            f"holds {root.name!r} (e.g. `paths.data_dir=../shared/data`), set its root, or "
            f"drop the set (`eval.ood.sets.{self.name}=null`)."
        )


class ImageFolderSet(SampledSet):
    """Images from an image folder or ``.tar.gz`` archive, read like ``data=imagefolder``.

    The layout is ``[<top>/][<split>/]<class>/<image>`` (see
    :mod:`sweeplab.data.folder_archives`); class labels are ignored. The folder is decoded
    once and cached under ``cache_dir``, sharing the cache of a data module that reads the
    same archive with the same channels.

    Args:
        root: the folder or archive.
        channels: decode as grey (1) or RGB (3); :func:`adapt_images` converts after.
        image_size: resize while decoding (an int or ``[H, W]``); needed when the images
            differ in size (Textures, Places365).
        cache_dir: where decoded arrays are cached; ``None`` decodes on every load.
        **kwargs: ``group``, ``split``, ``count``, ``val_count``, ``seed``, ``name``
            (see :class:`SampledSet`).
    """

    def __init__(
        self,
        root: str,
        group: str = "far",
        channels: int = 3,
        image_size: int | list[int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.root = Path(str(root)).expanduser()
        self.default_name = self.root.name
        super().__init__(group, name=name, **kwargs)
        self.channels = data_checks.channels(option_key(name, "channels"), channels)
        self.image_size = data_checks.image_size(option_key(name, "image_size"), image_size)
        self.cache_dir = None if cache_dir is None else str(cache_dir)

    def _pools(self) -> dict[str, Tensor]:
        root = self.root.resolve()
        if not root.exists():
            raise self._missing(root)
        try:
            payload = load_image_folder(
                root, channels=self.channels, image_size=self.image_size, cache_dir=self.cache_dir
            )
        except CorruptArchiveError as error:  # its own kind: the command says it in one line
            raise CorruptArchiveError(error.archive, error.cause, f"OOD set {self.name}") from error
        except ValueError as error:
            raise ValueError(f"OOD set {self.name} ({root}): {error}") from error
        pools = {"train": payload["train_images"]}
        if payload["test_images"] is not None:
            pools["test"] = payload["test_images"]
        return pools


class TorchvisionSet(SampledSet):
    """A torchvision data set (``cifar10``, ``cifar100``, ``svhn``, ``mnist``,
    ``fashion_mnist``) under ``root``, read like ``data.source=torchvision``.

    Args:
        dataset: one of ``TORCHVISION_DATASETS``.
        root: torchvision's data directory (an archive path there means its folder).
        download: let torchvision fetch missing files (needs internet).
        **kwargs: ``group``, ``split``, ``count``, ``val_count``, ``seed``, ``name``
            (see :class:`SampledSet`).
    """

    def __init__(
        self,
        dataset: str,
        root: str,
        group: str = "far",
        download: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.spec = TORCHVISION_DATASETS[
            checks.one_of(option_key(name, "dataset"), dataset, TORCHVISION_DATASETS)
        ]
        self.dataset = dataset
        self.default_name = dataset
        super().__init__(group, name=name, **kwargs)
        root_path = Path(str(root)).expanduser()
        self.root = root_path.parent if is_archive(root_path) else root_path
        self.download = checks.boolean(option_key(name, "download"), download)

    def _pools(self) -> dict[str, Tensor]:
        pools = {}
        for pool in ("test", "train"):
            try:
                images, _, _ = load_torchvision_split(
                    self.spec, self.root, train=pool == "train", download=self.download
                )
            except FileNotFoundError as error:
                raise self._missing(
                    self.root.resolve(), f"no torchvision {self.spec.class_name} files"
                ) from error
            pools[pool] = images
        return pools
