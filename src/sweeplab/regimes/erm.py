"""Empirical risk minimisation: one model, cross-entropy on (optionally mixed) batches.

Each training step hands the batch to the mixer (``augment``), runs the backbone on
what it returns and scores the logits with the mixer's loss. ``augment=none`` is
plain hard-label cross-entropy with ``label_smoothing``; the smoothing lives in the
mixer (its targets and its loss), the one place it is applied. Validation and
evaluation never mix.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab.augment.base import MixedBatch, Mixer
from sweeplab.augment.identity import NoMix
from sweeplab.augment.preview import PREVIEW_FILE, write_preview


def _check_optimizer(optimizer: Callable) -> None:
    """Catch impossible optimizer values before training, naming the config key."""
    keywords = optimizer.keywords if isinstance(optimizer, partial) else {}
    lr = keywords.get("lr")
    if lr is not None and not lr > 0:
        raise ValueError(f"regime.optimizer.lr must be > 0, got {lr}")
    weight_decay = keywords.get("weight_decay")
    if weight_decay is not None and weight_decay < 0:
        raise ValueError(f"regime.optimizer.weight_decay must be ≥ 0, got {weight_decay}")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run cannot continue meaningfully."""


def _mixer_for(backbone: nn.Module, mixer: Mixer | None, label_smoothing: float) -> Mixer:
    """The mixer to train with: ``mixer``, checked against the backbone and the regime, or
    the identity with the regime's label smoothing."""
    num_classes = getattr(backbone, "num_classes", None)
    if mixer is None:
        return NoMix(num_classes=num_classes, label_smoothing=label_smoothing)
    if num_classes is not None and mixer.num_classes != num_classes:
        raise ValueError(
            f"the mixer makes targets for {mixer.num_classes} classes but the backbone "
            f"predicts {num_classes}"
        )
    if label_smoothing not in (0.0, mixer.label_smoothing):
        raise ValueError(
            f"regime.label_smoothing={label_smoothing} and augment.label_smoothing="
            f"{mixer.label_smoothing} disagree; set only one (augment.label_smoothing follows "
            "regime.label_smoothing unless set)"
        )
    mixer.check_backbone(backbone)
    return mixer


class ERM(pl.LightningModule):
    """Train ``backbone`` with cross-entropy; expose per-member logits for evaluation.

    ``mixer`` is the batch mixer (``augment``); without one, batches are not mixed
    and ``label_smoothing`` smooths the hard labels.
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "erm",
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"regime.label_smoothing must be in [0, 1), got {label_smoothing}")
        if check_finite_every < 1:
            raise ValueError(
                f"regime.check_finite_every must be a positive integer, got {check_finite_every}"
            )
        _check_optimizer(optimizer)
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.mixer = _mixer_for(backbone, mixer, label_smoothing)
        self.label_smoothing = self.mixer.label_smoothing
        self.check_finite_every = check_finite_every
        self.regime_name = name
        # The epoch's loss sum stays on the device and is read every few steps: a NaN
        # or Inf loss makes the sum non-finite, so one in-place add per step both
        # feeds the epoch mean and watches for divergence, without a host sync.
        self.register_buffer("_loss_sum", torch.zeros(()), persistent=False)
        self._loss_count = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member logits ``[B, 1, C]`` and pooled features ``[B, D]``."""
        features = self.backbone.features(x)
        return self.backbone.head(features).unsqueeze(1), features

    def mix(self, x: Tensor, y: Tensor, batch_idx: int) -> MixedBatch:
        """This step's mix, drawn from (seed, epoch, batch, rank) so a resume repeats it."""
        return self.mixer.mix(
            x,
            y,
            epoch=self.current_epoch,
            batch_index=batch_idx,
            max_epochs=self.trainer.max_epochs,
            rank=self.global_rank,
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        mixed = self.mix(x, y, batch_idx)
        loss = self.mixer.loss(mixed.forward(self.backbone), mixed)
        self.track_loss(loss, x.shape[0], batch_idx)
        return loss

    def on_train_start(self) -> None:
        """Save a picture of one mixed training batch in the run directory, once per run."""
        datamodule = getattr(self.trainer, "datamodule", None)
        path = Path(self.trainer.default_root_dir) / PREVIEW_FILE
        if self.trainer.is_global_zero and datamodule is not None and not path.exists():
            write_preview(self.mixer, datamodule, path, self.device)

    def track_loss(self, loss: Tensor, batch_size: int, batch_idx: int) -> None:
        """Accumulate the epoch's mean loss and watch for NaN/Inf, without syncing."""
        self._loss_sum.add_(loss.detach(), alpha=batch_size)
        self._loss_count += batch_size
        if (batch_idx + 1) % self.check_finite_every == 0:
            self._raise_if_nonfinite()

    def on_train_epoch_start(self) -> None:
        self._loss_sum.zero_()
        self._loss_count = 0

    def on_train_epoch_end(self) -> None:
        self._raise_if_nonfinite()
        mean_loss = (self._loss_sum / max(self._loss_count, 1)).float()
        self.log("train/cls/loss", mean_loss, on_epoch=True, sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True)

    def _raise_if_nonfinite(self) -> None:
        if not bool(torch.isfinite(self._loss_sum)):
            raise NonFiniteLossError(
                f"training loss became NaN or infinite in epoch {self.current_epoch} "
                f"(by global step {self.global_step}); lower regime.optimizer.lr, add warm-up "
                "(regime.scheduler.warmup_epochs) or gradient clipping (trainer.gradient_clip_val)"
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        size = x.shape[0]
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log("val/cls/acc", acc, on_epoch=True, batch_size=size, sync_dist=True)
        self.log(
            "val/cls/nll",
            F.cross_entropy(logits, y),
            on_epoch=True,
            batch_size=size,
            sync_dist=True,
        )

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = max(1, int(min(self.trainer.estimated_stepping_batches, 2**31)))
        max_epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 1
        )
        steps_per_epoch = max(1, total_steps // max_epochs)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
