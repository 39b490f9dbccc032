"""A multilayer perceptron on flattened pixels: the simplest baseline.

Useful as a sanity check for a recipe (does mixup help even without
convolutions?) and as the cheapest member for ensemble and calibration tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweeplab import checks
from sweeplab.models.backbone import Backbone


class MLP(Backbone):
    """Flatten → (Linear → ReLU → Dropout) per hidden width → features.

    The input width is fixed by ``in_chans * image_size ** 2``, so any square image
    size works; an empty ``hidden`` list makes a linear classifier on raw pixels.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        name: str = "mlp",
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, name=name
        )
        hidden = checks.positive_int_list("backbone.hidden", hidden, allow_empty=True)
        dropout = checks.fraction_below_one("backbone.dropout", dropout)

        width = self.in_chans * self.image_size * self.image_size
        layers: list[nn.Module] = [nn.Flatten(1)]
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        self.body = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def mixing_stages(self) -> list[nn.Module]:
        """The activation of each hidden layer."""
        return [m for m in self.body if isinstance(m, nn.ReLU)]
