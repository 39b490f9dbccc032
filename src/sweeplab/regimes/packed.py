"""Packed-Ensembles (Laurent et al. 2023): M members as grouped layers of one wide network.

The backbone is rebuilt with every layer ``α`` times wider and grouped into ``M·γ``
groups (the first layer reads the raw input densely, the classifier is grouped by M;
see :mod:`sweeplab.models.implicit_ensembles`). One forward pass computes all
members: pooled features ``[B, α·D]`` whose ``m``-th chunk is member ``m``'s, and
logits ``[B, M·C]``. Each member's loss on the (mixed) batch is averaged; every
member sees the same mix, and manifold mixup mixes the packed hidden states, which
is each member's mix at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.base import Mixer
from sweeplab.models.implicit_ensembles import PackedMemberHead, at_least_two, to_packed
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.registry import register_regime

PROBE_BATCH = 2
PROBE_SEED = 0


def probe_input(backbone: nn.Module) -> Tensor:
    """A fixed input the backbone was sized for, drawn without touching the global RNG."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    size = int(backbone.image_size)
    return torch.randn(PROBE_BATCH, int(backbone.in_chans), size, size, generator=generator)


@register_regime("packed")
class Packed(Regime):
    """Packed-Ensembles: M independent α-wide members packed into grouped layers.

    Args:
        num_members: M ≥ 2.
        alpha: width factor α of every layer (> 0).
        gamma: γ ≥ 1 extra groups per member inside every layer but the first and last.
        seed: member m's weights are drawn from ``(seed, m)``.
    """

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        num_members: int = 4,
        alpha: float = 2.0,
        gamma: int = 1,
        seed: int = 0,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "packed",
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        self.num_members = at_least_two("regime.num_members", num_members)
        self.alpha = checks.positive("regime.alpha", alpha)
        self.gamma = checks.positive_int("regime.gamma", gamma)
        seed = checks.seed("regime.seed", seed)
        plain = build_backbone(backbone, seed=seed)
        self.backbone = to_packed(
            plain,
            probe_input(plain),
            self.alpha,
            self.gamma,
            self.num_members,
            seed=seed,
            name=getattr(plain, "name", type(plain).__name__),
        )
        self.attach_mixer(mixer, self.backbone)

    def _members(self, packed: Tensor) -> Tensor:
        return packed.view(packed.shape[0], self.num_members, -1)

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = self.mix(x, y, batch_idx)
        logits = self._members(mixed.forward(self.backbone))
        losses = [self.mixer.loss(logits[:, m], mixed) for m in range(self.num_members)]
        return sum(losses) / self.num_members

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Member logits ``[B, M, C]`` and member features ``[B, M, α·D/M]``."""
        features = self.backbone.features(x)
        logits = self.backbone.head(features)
        return self._members(logits), self._members(features)

    def member_heads(self) -> list[nn.Module]:
        width = self.member_width()
        return [
            PackedMemberHead(self.backbone.head, m, self.num_members, width)
            for m in range(self.num_members)
        ]

    def member_width(self) -> int:
        """Width of one member's pooled features, α·D/M."""
        probe = probe_input(self.backbone).to(next(self.backbone.parameters()).device)
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            width = self.backbone.features(probe[:1]).shape[1]
        self.backbone.train(was_training)
        return width // self.num_members
