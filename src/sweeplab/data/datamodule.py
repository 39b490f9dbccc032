"""The base data module: uint8 splits in memory, seeded batching, augmentation on device.

Subclasses only say where the images come from (:meth:`InMemoryDataModule.load_source`);
everything that decides what a run sees (the val split, held-out classes, the subset,
the batch order of each epoch, the augmentation draws) lives here, derived from ``seed``
alone, so results do not depend on the data set class, the device or a resume.

Batches leave the loader as CPU uint8 tensors and become float only on the device, in
:meth:`InMemoryDataModule.preprocess` (called from ``on_after_batch_transfer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.data import checks as data_checks
from sweeplab.data.loaders import (
    EPOCH_SEED_STRIDE,
    EpochBatchPlan,
    TensorBatchLoader,
    distributed_rank_and_world_size,
)
from sweeplab.data.splits import SplitPart, SplitPlan, derive_seed, plan_splits
from sweeplab.data.transforms import (
    horizontal_flip,
    normalize,
    random_crop,
    sample_crop_and_flip,
    to_unit_float,
)

SPLITS = ("train", "val", "test")
AUGMENT_SEED_OFFSET = 7  # the augmentation stream of an epoch differs from its order stream


@dataclass(frozen=True)
class SourceData:
    """What a subclass provides: a train pool, an optional official test pool, class names.

    ``*_images`` are uint8 ``[N, C, H, W]`` tensors for in-memory sources; a streaming
    subclass may hold datasets there instead (see ``ImageFolderDataModule``).
    """

    class_names: list[str]
    train_images: Any
    train_labels: Tensor
    test_images: Any = None
    test_labels: Tensor | None = None


class InMemoryDataModule(pl.LightningDataModule):
    """Base class of every ``conf/data`` option.

    Args:
        name: display name of the data set (run names, records).
        seed: run seed; decides the val split, ``train_subset``, the batch order of every
            epoch (``seed * 1_000_003 + epoch``) and the augmentation draws.
        channels: image channels, fixed by the subclass (validates ``mean``/``std``).
        batch_size: training batch size (per process under DDP).
        eval_batch_size: batch size of val/test loaders; evaluation never drops or pads.
        val_fraction: fraction of each class of the training pool carved out as val.
        train_subset: keep this many training samples (after carving val).
        held_out_classes: original labels removed from train/val/test; their test samples
            become :attr:`held_out` (a near-OOD set) and the rest are relabelled 0..K-1.
        random_crop_padding: zero padding of the train-time random crop; 0 disables it.
        horizontal_flip: flip training images left-right with probability 0.5.
        mean, std: per-channel normalisation in [0, 1] units; ``None`` means 0 and 1.
        drop_last: drop the last incomplete training batch.
        num_workers: loader worker processes; only streaming data modules use them.
        cache_dir: where decoded arrays are cached; ``None`` decodes on every setup.
    """

    def __init__(
        self,
        *,
        name: str,
        seed: int,
        channels: int,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        val_fraction: float = 0.1,
        train_subset: int | None = None,
        held_out_classes: Sequence[int] = (),
        random_crop_padding: int = 0,
        horizontal_flip: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_last: bool = True,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.name = str(name)
        self.seed = checks.seed("data.seed", seed)
        self.channels = checks.positive_int("data.channels", channels)
        self.batch_size = checks.positive_int("data.batch_size", batch_size)
        self.eval_batch_size = checks.positive_int("data.eval_batch_size", eval_batch_size)
        self.val_fraction = checks.open_fraction("data.val_fraction", val_fraction)
        self.train_subset = (
            None if train_subset is None else checks.positive_int("data.train_subset", train_subset)
        )
        self.held_out_classes = data_checks.class_list("data.held_out_classes", held_out_classes)
        self.random_crop_padding = checks.non_negative_int(
            "data.random_crop_padding", random_crop_padding
        )
        self.horizontal_flip = checks.boolean("data.horizontal_flip", horizontal_flip)
        self.mean = data_checks.per_channel("data.mean", mean, self.channels, default=0.0)
        self.std = data_checks.per_channel(
            "data.std", std, self.channels, default=1.0, positive=True
        )
        self.drop_last = checks.boolean("data.drop_last", drop_last)
        self.num_workers = checks.non_negative_int("data.num_workers", num_workers)
        self.cache_dir = None if cache_dir is None else str(cache_dir)

        self._augment_generator = torch.Generator()
        self._epochs_started = 0  # the epoch counter used without a trainer
        self._normalizers: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._held_out: tuple[Tensor, Tensor] | None = None
        self._held_out_val: tuple[Tensor, Tensor] | None = None
        self._class_names: list[str] | None = None
        self._image_shape: tuple[int, int, int] | None = None
        self._source: SourceData | None = None  # kept between prepare_data and setup

    # ----------------------------------------------------------------- for subclasses
    def load_source(self) -> SourceData:
        """Load (decoding or reading a cache) the train pool, test pool and class names."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_source()")

    def _check_num_classes(self, num_classes: int) -> None:
        """Validate ``held_out_classes`` against the number of classes, as soon as known."""
        data_checks.held_out_classes_within(
            "data.held_out_classes", self.held_out_classes, num_classes
        )

    def _take(self, source: SourceData, part: SplitPart) -> Any:
        """The images of one planned split; streaming subclasses return a dataset here."""
        images = source.train_images if part.pool == "train" else source.test_images
        return images[part.indices]

    def _image_shape_of(self, source: SourceData) -> tuple[int, int, int]:
        return tuple(source.train_images.shape[1:])

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Decode once (and write the cache); Lightning calls this on one process per node."""
        if self._source is None and not self._splits:
            self._source = self.load_source()

    def setup(self, stage: str | None = None) -> None:
        """Build the splits; idempotent, so later calls (any stage, any process) are free."""
        if self._class_names is not None:
            return
        source = self._source if self._source is not None else self.load_source()
        self._source = None
        self._check_num_classes(len(source.class_names))
        plan = plan_splits(
            source.train_labels,
            source.test_labels,
            num_classes=len(source.class_names),
            seed=self.seed,
            val_fraction=self.val_fraction,
            train_subset=self.train_subset,
            held_out_classes=self.held_out_classes,
        )
        self._build_splits(source, plan)
        self._image_shape = self._image_shape_of(source)
        self._class_names = [source.class_names[c] for c in plan.kept_classes]

    def _build_splits(self, source: SourceData, plan: SplitPlan) -> None:
        for split in SPLITS:
            part: SplitPart = getattr(plan, split)
            self._splits[split] = (self._take(source, part), part.labels)
        if plan.held_out is not None:
            self._held_out = (self._take(source, plan.held_out), plan.held_out.labels)
        if plan.held_out_val is not None:
            self._held_out_val = (self._take(source, plan.held_out_val), plan.held_out_val.labels)

    def train_dataloader(self) -> TensorBatchLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader:
        return self.loader("val")

    def test_dataloader(self) -> TensorBatchLoader:
        return self.loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        return self.preprocess(x, train=training), y

    # -------------------------------------------------------------------- the contract
    def _require_setup(self) -> None:
        if self._class_names is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before reading the data")

    @property
    def class_names(self) -> list[str]:
        self._require_setup()
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self._require_setup()
        return self._image_shape

    @property
    def held_out(self) -> tuple[Tensor, Tensor] | None:
        """Test samples of the held-out classes with their original labels, or ``None``."""
        self._require_setup()
        return self._held_out

    @property
    def held_out_val(self) -> tuple[Tensor, Tensor] | None:
        """Held-out-class samples of the training pool (never trained on, disjoint from
        :attr:`held_out`): the val part of the near-OOD set, or ``None``."""
        self._require_setup()
        return self._held_out_val

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(images uint8 [N, C, H, W], labels int64 [N])`` of ``train``, ``val`` or ``test``."""
        self._require_setup()
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {name!r}")
        return self._splits[name]

    def loader(self, name: str, train: bool = False) -> TensorBatchLoader:
        """Batches of a split: shuffled and sharded per epoch if ``train``, else in order."""
        images, labels = self.split(name)
        plan = self._batch_plan(labels.shape[0], train)
        return TensorBatchLoader(images, labels, plan, self._begin_train_epoch if train else None)

    def _batch_plan(self, num_samples: int, train: bool) -> EpochBatchPlan:
        if not train:
            return EpochBatchPlan(num_samples, self.eval_batch_size, shuffle=False, drop_last=False)
        plan = EpochBatchPlan(
            num_samples, self.batch_size, shuffle=True, drop_last=self.drop_last, seed=self.seed
        )
        if len(plan) == 0:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the "
                f"{plan.samples_per_rank()} training samples per process and "
                "data.drop_last is true: every epoch would be empty"
            )
        return plan

    def _begin_train_epoch(self) -> int | None:
        """Epoch whose order the train loader uses now; re-seeds the augmentation stream.

        The epoch is the trainer's ``current_epoch`` when attached (so a resumed run repeats
        the uninterrupted order), else a counter of train iterations. Rank 0 (and a single
        process) seeds the augmentation with ``seed * 1_000_003 + epoch + 7``. Returns
        ``None`` (the fixed order) while Lightning overfits a few batches, which must be the
        same batches every epoch.
        """
        trainer = self.trainer
        if trainer is not None:
            epoch = int(trainer.current_epoch)
        else:
            epoch = self._epochs_started
            self._epochs_started += 1
        augment_seed = self.seed * EPOCH_SEED_STRIDE + epoch + AUGMENT_SEED_OFFSET
        rank, _ = distributed_rank_and_world_size()
        if rank > 0:  # other ranks hold other images: give them their own draws too
            augment_seed = derive_seed(augment_seed, f"augment/rank{rank}")
        self._augment_generator.manual_seed(augment_seed)
        if trainer is not None and getattr(trainer, "overfit_batches", 0):
            return None
        return epoch

    def preprocess(self, x: Tensor, train: bool) -> Tensor:
        """uint8 ``[B, C, H, W]`` → normalised float32 on ``x.device``, augmented if ``train``."""
        if x.dtype != torch.uint8:
            raise TypeError(f"preprocess expects uint8 images, got {x.dtype}")
        if train and (self.random_crop_padding > 0 or self.horizontal_flip):
            offsets, flips = sample_crop_and_flip(
                x.shape[0], self.random_crop_padding, self._augment_generator
            )
            params = torch.cat([offsets, flips[:, None].long()], dim=1).to(x.device)
            x = random_crop(x, params[:, :2], self.random_crop_padding)
            if self.horizontal_flip:
                x = horizontal_flip(x, params[:, 2].bool())
        mean, std = self._normalizer(x.device)
        return normalize(to_unit_float(x), mean, std)

    def _normalizer(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Mean and std as device tensors, built once per device (no copy per step)."""
        if device not in self._normalizers:
            self._normalizers[device] = (
                torch.tensor(self.mean, dtype=torch.float32, device=device),
                torch.tensor(self.std, dtype=torch.float32, device=device),
            )
        return self._normalizers[device]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed})"
