"""One training batch after mixing, shared by the mixers that make it and the loss that scores it.

It has a module of its own so that :mod:`sweeplab.augment.losses` can name it without
importing the mixers of :mod:`sweeplab.augment.base`, which import the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor, nn


class FeatureMixing(Protocol):
    """Mixing that happens inside the model (manifold mixup) rather than on its input."""

    stage: int

    def forward(self, model: nn.Module, x: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class MixedBatch:
    """One training batch after mixing: what the model sees and what the loss needs.

    Attributes:
        x: the model's input, ``[B, ...]``; ``[2B, ...]`` for RegMixup (clean rows first).
        target: soft targets ``[len(x), K]``, rows summing to 1, label smoothing included.
        labels: the batch's integer labels ``[B]``.
        lam: ``[B]`` weight of each sample's own label in its mixed row; ``None`` when the
            batch was not mixed, and the loss is plain hard-label cross-entropy.
        partner: ``[B]`` index of the sample each mixed row took the rest from.
        clean_rows: how many leading rows of ``x`` are the unmixed batch (RegMixup).
        feature_mix: mixing at a backbone stage (manifold mixup); ``x`` is then clean.
    """

    x: Tensor
    target: Tensor
    labels: Tensor
    lam: Tensor | None = None
    partner: Tensor | None = None
    clean_rows: int = 0
    feature_mix: FeatureMixing | None = None

    @property
    def mixed(self) -> bool:
        return self.lam is not None

    def forward(self, model: nn.Module) -> Tensor:
        """``model``'s logits for this batch, mixing features inside it where asked to."""
        if self.feature_mix is not None:
            return self.feature_mix.forward(model, self.x)
        return model(self.x)
