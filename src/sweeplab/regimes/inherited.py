"""A subnet with its supernet's weights, nothing trained: a searched subnet as a run.

``sweeplab nas search`` scores subnets by their val accuracy with inherited weights.
This regime makes one of them a run of the store, so that its test, calibration, OOD
and shift metrics come from the ordinary evaluation and it is a row of tables like
any other run (OFA's deployment without fine-tuning). ``init_from=<supernet run>``
gives the subnet (``backbone=subnet backbone.arch=…``) the supernet's weights cropped
to its architecture; then its BatchNorm statistics are re-estimated on the fixed set
of training images the supernet's own scoring uses (``bn_policy=recalibrate``: the
same count and seed give the same images), or every batch is normalised by its own
statistics (``batch``). Its val accuracy is therefore the search's score of it.

``sweeplab eval run=<supernet run> subnet=<arch>`` composes and runs it.
"""

from __future__ import annotations

from contextlib import nullcontext

from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.base import Mixer
from sweeplab.models.batchnorm import batch_statistics, recompute_batchnorm
from sweeplab.models.subnet_scoring import BN_POLICIES
from sweeplab.models.supernet import Subnet
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.registry import register_regime
from sweeplab.regimes.supernet import (
    MAX_CALIBRATION_IMAGES,
    calibration_count,
    calibration_images,
)


@register_regime("inherit")
class InheritedSubnet(Regime):
    """One subnet of a supernet run, evaluated with the weights it inherits."""

    trains = False
    starts_from_run = True

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        name: str = "inherit",
        seed: int = 0,
        bn_policy: str = "recalibrate",
        bn_calibration_images: int = MAX_CALIBRATION_IMAGES,
        mixer: Mixer | None = None,
    ) -> None:
        """``mixer`` is accepted like every regime's and unused: nothing trains."""
        super().__init__(name=name)
        self.backbone = build_backbone(backbone)
        if not isinstance(self.backbone, Subnet):
            raise ValueError(
                f"regime=inherit evaluates one subnet of a supernet, but backbone="
                f"{self.backbone.name} is a {type(self.backbone).__name__}; use "
                "backbone=subnet backbone.arch=<arch>"
            )
        self.seed = checks.seed("regime.seed", seed)
        self.bn_policy = checks.one_of("regime.bn_policy", bn_policy, BN_POLICIES)
        self.bn_calibration_images = calibration_count(bn_calibration_images)

    def prepare(self, datamodule) -> None:
        """Refuse a subnet that inherited nothing, then recalibrate its BatchNorm."""
        if self.init_source is None:
            raise ValueError(
                "regime=inherit evaluates a subnet with a supernet's weights, so it needs "
                "init_from=<supernet run>; sweeplab eval run=<supernet run> subnet=<arch> sets it"
            )
        if self.bn_policy == "recalibrate":
            images = calibration_images(datamodule, self.bn_calibration_images, self.seed)
            device = next(self.backbone.parameters()).device
            batch_size = int(getattr(datamodule, "eval_batch_size", 512))
            recompute_batchnorm(self.backbone, images.to(device), batch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[B, 1, C]`` and pooled features ``[B, 1, D]``, under the BN policy."""
        policy = batch_statistics(self.backbone) if self.bn_policy == "batch" else nullcontext()
        with policy:
            features = self.backbone.features(x)
            return self.backbone.head(features).unsqueeze(1), features.unsqueeze(1)
