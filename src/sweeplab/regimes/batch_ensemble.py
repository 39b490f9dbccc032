"""BatchEnsemble (Wen et al. 2020): M members in one backbone through rank-1 fast weights.

Every Linear/Conv2d of the backbone gets per-member fast weights ``r_m``, ``s_m`` and
a per-member bias around its shared slow weight (see
:mod:`sweeplab.models.implicit_ensembles`). Training *repeats* the (mixed) batch M
times, so each member trains on its own copy of the same batch, as the reference
CIFAR implementation does; the loss is the mean of the members' losses. Evaluation
repeats the batch too and returns each member's logits ``[B, M, C]`` and pooled
features ``[B, M, D]``. Manifold mixup mixes each member's hidden states with the
same partners and λ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.base import Mixer
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.manifold import FeatureMix
from sweeplab.models.implicit_ensembles import (
    FAST_INITS,
    BatchEnsembleMemberHead,
    at_least_two,
    tile_members,
    to_batch_ensemble,
    untile_members,
)
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.registry import register_regime


def tiled_feature_mix(mixed: MixedBatch, num_members: int) -> MixedBatch:
    """The same mix for a batch repeated ``num_members`` times, member-major."""
    mix = mixed.feature_mix
    if mix is None:
        return mixed
    if not isinstance(mix, FeatureMix):
        raise TypeError(f"regime=batch_ensemble cannot repeat a {type(mix).__name__} mix")
    rows = mixed.x.shape[0]
    partner = torch.cat([mix.partner + m * rows for m in range(num_members)])
    return replace(mixed, feature_mix=FeatureMix(mix.stage, partner, mix.lam.repeat(num_members)))


@register_regime("batch_ensemble")
class BatchEnsemble(Regime):
    """BatchEnsemble: M members sharing slow weights, each with rank-1 fast weights.

    Args:
        num_members: M ≥ 2.
        fast_init: ``random_sign`` (±1), ``normal`` (N(1, fast_init_std)) or ``ones``.
        fast_init_std: σ of the ``normal`` initialisation.
        seed: slow weights from ``seed``, member m's fast weights from ``(seed, m)``.
    """

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        num_members: int = 4,
        fast_init: str = "random_sign",
        fast_init_std: float = 0.5,
        seed: int = 0,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "batch_ensemble",
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        self.num_members = at_least_two("regime.num_members", num_members)
        fast_init = checks.one_of("regime.fast_init", fast_init, FAST_INITS)
        fast_init_std = checks.positive("regime.fast_init_std", fast_init_std)
        seed = checks.seed("regime.seed", seed)
        plain = build_backbone(backbone, seed=seed)
        self.backbone = to_batch_ensemble(plain, self.num_members, fast_init, fast_init_std, seed)
        self.attach_mixer(mixer, self.backbone)

    def member_logits(self, x: Tensor) -> Tensor:
        """Every member's logits ``[B, M, C]``."""
        return untile_members(self.backbone(tile_members(x, self.num_members)), self.num_members)

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = tiled_feature_mix(self.mix(x, y, batch_idx), self.num_members)
        tiled = replace(mixed, x=tile_members(mixed.x, self.num_members))
        logits = untile_members(tiled.forward(self.backbone), self.num_members)
        losses = [self.mixer.loss(logits[:, m], mixed) for m in range(self.num_members)]
        return sum(losses) / self.num_members

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Member logits ``[B, M, C]`` and member features ``[B, M, D]``."""
        features = self.backbone.features(tile_members(x, self.num_members))
        logits = self.backbone.head(features)
        return untile_members(logits, self.num_members), untile_members(features, self.num_members)

    def member_heads(self) -> list[nn.Module]:
        width = int(self.backbone.num_features)
        return [
            BatchEnsembleMemberHead(self.backbone.head, m, self.num_members, width)
            for m in range(self.num_members)
        ]
