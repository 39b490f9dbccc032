"""Empirical risk minimisation: one model, cross-entropy on (optionally mixed) batches.

Each training step hands the batch to the mixer (``augment``), runs the backbone on
what it returns and scores the logits with the mixer's loss. ``augment=none`` is
plain hard-label cross-entropy with ``label_smoothing``; the smoothing lives in the
mixer (its targets and its loss), the one place it is applied. Validation and
evaluation never mix.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from sweeplab.augment.base import Mixer
from sweeplab.regimes.base import BackboneFactory, NonFiniteLossError, Regime, build_backbone
from sweeplab.regimes.registry import register_regime

__all__ = ["ERM", "NonFiniteLossError"]


@register_regime("erm")
class ERM(Regime):
    """One backbone trained with cross-entropy on the mixer's targets.

    ``backbone`` is the runner's factory (or a built module); ``mixer`` is the batch
    mixer (``augment``); without one, ``label_smoothing`` smooths the hard labels.
    """

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "erm",
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        self.backbone = build_backbone(backbone)
        self.attach_mixer(mixer, self.backbone)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = self.mix(x, y, batch_idx)
        return self.mixer.loss(mixed.forward(self.backbone), mixed)

    def validation_logits(self, x: Tensor) -> Tensor:
        return self(x).unsqueeze(1)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``[B, 1, C]`` and pooled features ``[B, 1, D]``."""
        features = self.backbone.features(x)
        return self.backbone.head(features).unsqueeze(1), features.unsqueeze(1)
