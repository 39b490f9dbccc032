"""MC-dropout (Gal & Ghahramani 2016): one network, T stochastic passes at evaluation.

Dropout with rate ``regime.dropout`` is applied where ``regime.placement`` says:

- ``head``: on the pooled features, before the classifier (every backbone).
- ``all``: also after every stage the backbone exposes (``mixing_stages()``): each
  hidden ReLU of the MLP, each conv-BN-ReLU block of SmallCNN, each residual stage of
  CifarResNet, each ``feature_info`` module of a timm model.

Training uses dropout as usual. Evaluation keeps dropout on and everything else
(BatchNorm) in eval mode, and returns the T passes as T members ``[B, T, C]`` with the
features each pass's classifier saw ``[B, T, D]``. Pass ``t`` draws its masks from a
seed made of ``(regime.seed, t)`` under ``fork_rng``, so the same input gives the same
predictions on every run, and the global random stream is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.base import Mixer
from sweeplab.augment.manifold import mixing_stages
from sweeplab.models.implicit_ensembles import at_least_two, member_seed
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.registry import register_regime

PLACEMENTS = ("head", "all")


@register_regime("mc_dropout")
class MCDropout(Regime):
    """MC-dropout: dropout kept on at test, T seeded passes as the members.

    Args:
        dropout: rate p in [0, 1); p = 0 makes every pass the deterministic model.
        placement: ``head`` (pooled features) or ``all`` (also after every stage).
        num_passes: T ≥ 2 stochastic passes at evaluation.
        seed: the backbone's initialisation and the passes' masks.
    """

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        dropout: float = 0.1,
        placement: str = "head",
        num_passes: int = 8,
        seed: int = 0,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "mc_dropout",
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        self.dropout = checks.fraction_below_one("regime.dropout", dropout)
        self.placement = checks.one_of("regime.placement", placement, PLACEMENTS)
        self.num_passes = at_least_two("regime.num_passes", num_passes)
        self.seed = checks.seed("regime.seed", seed)
        self.backbone = build_backbone(backbone, seed=self.seed)
        self._sampling = False
        if self.placement == "all":
            stages = mixing_stages(self.backbone)
            if not stages:
                name = getattr(self.backbone, "name", type(self.backbone).__name__)
                raise ValueError(
                    f"regime.placement=all: backbone {name!r} exposes no stages to follow "
                    "with dropout; use regime.placement=head"
                )
            for stage in stages:
                stage.register_forward_hook(self._drop_output)
        self.attach_mixer(mixer, self.backbone)

    def _drop(self, x: Tensor) -> Tensor:
        active = self.training or self._sampling
        return F.dropout(x, self.dropout, training=active) if self.dropout > 0 else x

    def _drop_output(self, module: nn.Module, inputs: tuple, output):
        return self._drop(output) if isinstance(output, Tensor) else output

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.head(self._drop(self.backbone.features(x)))

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = self.mix(x, y, batch_idx)
        return self.mixer.loss(mixed.forward(self), mixed)

    def mixing_stages(self) -> list[nn.Module]:
        """The backbone's stages, so manifold mixup can run this regime as the model."""
        return mixing_stages(self.backbone)

    def _pass(self, x: Tensor, index: int, shared: Tensor | None) -> tuple[Tensor, Tensor]:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(member_seed(self.seed, index, "mc_dropout"))
            features = self.backbone.features(x) if shared is None else shared
            features = self._drop(features)
            return self.backbone.head(features), features

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """T passes with dropout on: logits ``[B, T, C]`` and features ``[B, T, D]``."""
        self._sampling = True
        try:
            shared = self.backbone.features(x) if self.placement == "head" else None
            passes = [self._pass(x, t, shared) for t in range(self.num_passes)]
        finally:
            self._sampling = False
        logits, features = zip(*passes, strict=True)
        return torch.stack(logits, dim=1), torch.stack(features, dim=1)

    def member_heads(self) -> list[nn.Module]:
        return [self.backbone.head] * self.num_passes
