"""``augment=none``: no mixing; the targets are the (label-smoothed) one-hot labels.

Training with it is exactly hard-label cross-entropy with ``label_smoothing``, the
recipe every mixer is compared against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab.augment.base import Mixer
from sweeplab.augment.batch import MixedBatch


class NoMix(Mixer):
    """The identity mixer: ``(x, y) -> (x, one_hot(y))``."""

    def __init__(self, *, num_classes: int, label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(num_classes=num_classes, label_smoothing=label_smoothing, seed=seed)

    def mix(self, x: Tensor, y: Tensor, **step) -> MixedBatch:
        """The batch as it is; nothing is drawn."""
        return self.unmixed(x, y)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        return self.unmixed(x, y)
