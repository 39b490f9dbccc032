"""Weight-shared supernet training: one set of weights for every subnet of a search space.

Each step trains some subnets of the elastic backbone (``backbone=supernet``) on the
same (mixed) batch and sums their losses:

- ``sampler=uniform``: one subnet drawn uniformly (single-path one-shot, Guo et al. 2020);
- ``sampler=sandwich``: the largest, the smallest and ``num_random`` drawn subnets
  (BigNAS, Yu et al. 2020). The largest learns from the batch's targets; the others,
  with ``inplace_kd``, from the largest's detached predictions: ``kl`` (BigNAS) or the
  adaptive α-divergence of AlphaNet (``alpha``); ``none`` gives every subnet the
  batch's targets.

The subnets of step ``s`` of epoch ``e`` are drawn from (seed, e, s), never from the
global stream, so a resumed run and every DDP rank draw the same ones. With
``full_epochs`` > 0 the first epochs train the largest subnet only and, with
``sort_channels``, its channels are then sorted by importance (OFA's progressive
shrinking, in short) before smaller subnets start to train.

Evaluation is the ordinary one, on the largest subnet. Under ``bn_policy=recalibrate``
its BatchNorm statistics are re-estimated on a fixed set of at most 2,000 training
images before every validation, so the checkpoint holds statistics of the largest
subnet alone; under ``batch`` every evaluation batch is normalised by its own
statistics. Each validation also scores the smallest subnet (``val/nas/smallest/acc``)
under the same policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.base import Mixer
from sweeplab.data.splits import derive_seed
from sweeplab.models.batchnorm import batch_statistics, recompute_batchnorm
from sweeplab.models.channel_order import sort_channels
from sweeplab.models.search_space import Arch
from sweeplab.models.subnet_scoring import BN_POLICIES, predict, scoring_subnet
from sweeplab.models.supernet import Supernet
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.distill_losses import adaptive_alpha_loss, kd_loss
from sweeplab.regimes.registry import register_regime

log = logging.getLogger(__name__)

SAMPLERS = ("uniform", "sandwich")
INPLACE_KD = ("kl", "alpha", "none")
MAX_CALIBRATION_IMAGES = 2000


def calibration_images(datamodule, count: int, seed: int) -> Tensor:
    """A fixed, seeded set of ``count`` (at most all) training images, preprocessed as
    for evaluation: what BatchNorm statistics of a subnet are re-estimated on."""
    images, _ = datamodule.split("train")
    generator = torch.Generator().manual_seed(derive_seed(seed, "nas/bn_calibration") % 2**63)
    index = torch.randperm(images.shape[0], generator=generator)[:count]
    return datamodule.preprocess(images[index], train=False)


def calibration_count(value) -> int:
    """``regime.bn_calibration_images``, checked: a positive count of at most 2,000."""
    count = checks.positive_int("regime.bn_calibration_images", value)
    if count > MAX_CALIBRATION_IMAGES:
        raise ValueError(
            f"regime.bn_calibration_images must be at most {MAX_CALIBRATION_IMAGES}, got {count}"
        )
    return count


@register_regime("supernet")
class SupernetTraining(Regime):
    """A weight-shared supernet, trained by uniform or sandwich sampling with in-place KD."""

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "supernet",
        mixer: Mixer | None = None,
        seed: int = 0,
        sampler: str = "sandwich",
        num_random: int = 2,
        inplace_kd: str = "kl",
        temperature: float = 1.0,
        alpha_min: float = -1.0,
        alpha_max: float = 1.0,
        ratio_clip: float = 5.0,
        bn_policy: str = "recalibrate",
        bn_calibration_images: int = MAX_CALIBRATION_IMAGES,
        full_epochs: int = 0,
        sort_channels: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        self.backbone = build_backbone(backbone)
        if not isinstance(self.backbone, Supernet):
            raise ValueError(
                f"regime=supernet trains an elastic supernet, but backbone={self.backbone.name} "
                f"is a {type(self.backbone).__name__}; use backbone=supernet"
            )
        self.seed = checks.seed("regime.seed", seed)
        self.sampler = checks.one_of("regime.sampler", sampler, SAMPLERS)
        self.num_random = checks.non_negative_int("regime.num_random", num_random)
        self.inplace_kd = checks.one_of("regime.inplace_kd", inplace_kd, INPLACE_KD)
        self.temperature = checks.positive("regime.temperature", temperature)
        self.alpha_range = (float(alpha_min), float(alpha_max))
        if not alpha_min < alpha_max:
            raise ValueError(
                f"regime.alpha_min must be below regime.alpha_max, got {alpha_min} and {alpha_max}"
            )
        self.ratio_clip = checks.positive("regime.ratio_clip", ratio_clip)
        self.bn_policy = checks.one_of("regime.bn_policy", bn_policy, BN_POLICIES)
        self.bn_calibration_images = calibration_count(bn_calibration_images)
        self.full_epochs = checks.non_negative_int("regime.full_epochs", full_epochs)
        self.sort_channels = checks.boolean("regime.sort_channels", sort_channels)
        if self.sort_channels and self.full_epochs == 0:
            raise ValueError(
                "regime.sort_channels sorts the channels of a trained full network, so it needs "
                "regime.full_epochs > 0 (epochs of the largest subnet alone before sampling)"
            )
        self.attach_mixer(mixer, self.backbone)
        self.calibration: Tensor | None = None
        self._eval_batch_size = 512
        self._smallest: nn.Module | None = None
        self._smallest_policy = self.bn_policy

    @property
    def space(self):
        return self.backbone.space

    # -- data ------------------------------------------------------------------------

    def prepare(self, datamodule) -> None:
        """Keep the fixed calibration images (recalibration reads nothing else)."""
        if self.bn_policy == "recalibrate":
            self.calibration = calibration_images(datamodule, self.bn_calibration_images, self.seed)
        self._eval_batch_size = int(getattr(datamodule, "eval_batch_size", 512))

    # -- sampling --------------------------------------------------------------------

    def step_archs(self, epoch: int, step: int) -> list[Arch]:
        """The subnets trained at ``step`` of ``epoch``, the teacher (largest) first."""
        if epoch < self.full_epochs:
            return [self.space.largest()]
        generator = torch.Generator().manual_seed(
            derive_seed(self.seed, f"nas/sample/{epoch}/{step}") % 2**63
        )
        if self.sampler == "uniform":
            return [self.space.sample(generator)]
        drawn = [self.space.sample(generator) for _ in range(self.num_random)]
        return [self.space.largest(), self.space.smallest(), *drawn]

    # -- training --------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.sort_channels and self.current_epoch == self.full_epochs:
            sort_channels(self.backbone, self.trainer.optimizers[0])
            log.info("sorted the supernet's channels by importance before sampling starts")

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = self.mix(x, y, batch_idx)
        archs = self.step_archs(self.current_epoch, batch_idx)
        with self.backbone.using(archs[0]):
            first = mixed.forward(self.backbone)
        loss = self.mixer.loss(first, mixed)
        distil = self.sampler == "sandwich" and self.inplace_kd != "none"
        target = F.softmax(first.detach().float() / self.temperature, dim=-1) if distil else None
        for arch in archs[1:]:
            with self.backbone.using(arch):
                logits = mixed.forward(self.backbone)
            loss = loss + (
                self._distil(logits, target) if distil else self.mixer.loss(logits, mixed)
            )
        return loss

    def _distil(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.inplace_kd == "kl":
            return kd_loss(logits, target, self.temperature)
        return adaptive_alpha_loss(
            logits / self.temperature, target, *self.alpha_range, self.ratio_clip
        )

    # -- validation and evaluation ---------------------------------------------------

    def _statistics(self, model: nn.Module):
        return batch_statistics(model) if self.bn_policy == "batch" else nullcontext()

    def on_validation_epoch_start(self) -> None:
        """Re-estimate the largest subnet's statistics in place, and build the smallest."""
        if self.bn_policy == "recalibrate" and self.calibration is not None:
            with self.backbone.using(self.space.largest()):
                recompute_batchnorm(
                    self.backbone, self.calibration.to(self.device), self._eval_batch_size
                )
        policy = self.bn_policy if self.calibration is not None else "batch"
        self._smallest_policy = policy
        self._smallest = scoring_subnet(
            self.backbone, self.space.smallest(), policy, self.calibration, self._eval_batch_size
        )

    def validation_logits(self, x: Tensor) -> Tensor:
        with self._statistics(self.backbone):
            return self.backbone(x).unsqueeze(1)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        x, y = batch
        if self._smallest is not None:
            logits = predict(self._smallest, x, self._smallest_policy)
            acc = (logits.argmax(dim=1) == y).float().mean()
            self.log(
                "val/nas/smallest/acc", acc, on_epoch=True, batch_size=x.shape[0], sync_dist=True
            )

    def on_validation_epoch_end(self) -> None:
        self._smallest = None

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The largest subnet's logits ``[B, 1, C]`` and pooled features ``[B, 1, D]``."""
        with self.backbone.using(self.space.largest()), self._statistics(self.backbone):
            features = self.backbone.features(x)
            return self.backbone.head(features).unsqueeze(1), features.unsqueeze(1)
