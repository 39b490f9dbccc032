"""A small conv net for tiny images (8×8 digits up to 32×32 CIFAR).

The default ``sweeplab train`` model. Downsampling is planned from the image
size: a block halves the map only while it is at least 4 px, so an 8×8 digit
goes 8 → 4 → 2 instead of collapsing to nothing, and a 32×32 image still gets
the usual 32 → 16 → 8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweeplab import checks
from sweeplab.models.backbone import Backbone, kaiming_init

MIN_POOL_SIZE = 4  # a map smaller than this is not halved again


def conv_bn_relu(in_chans: int, out_chans: int) -> nn.Sequential:
    """3×3 convolution (no bias, BN follows) → BatchNorm → ReLU, size-preserving."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """One conv-BN-ReLU block per entry of ``widths``, 2×2 max-pool between blocks
    while the map is ≥ 4 px, global average pool → features of size ``widths[-1]``."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        widths: Sequence[int] = (32, 64, 128),
        dropout: float = 0.0,
        name: str = "small_cnn",
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, name=name
        )
        widths = checks.positive_int_list("backbone.widths", widths)
        dropout = checks.fraction_below_one("backbone.dropout", dropout)

        layers: list[nn.Module] = []
        chans, size = self.in_chans, self.image_size
        for i, width in enumerate(widths):
            layers.append(conv_bn_relu(chans, width))
            chans = width
            if i < len(widths) - 1 and size >= MIN_POOL_SIZE:  # the last block feeds the GAP
                layers.append(nn.MaxPool2d(2))
                size //= 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.num_features = chans
        self.head = nn.Linear(chans, self.num_classes)
        self.feature_map_size = size  # spatial size entering the global pool, for reference
        kaiming_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def mixing_stages(self) -> list[nn.Module]:
        """The conv-BN-ReLU blocks."""
        return [m for m in self.body if isinstance(m, nn.Sequential)]
