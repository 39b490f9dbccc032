"""ResNet with the CIFAR stem (He et al. 2016, as used across CIFAR papers).

The ImageNet stem (7×7 stride-2 conv + max-pool) shrinks a 32×32 image to 8×8
before the first block; the CIFAR stem is a single 3×3 stride-1 conv with no
pool, so the four stages see 32, 16, 8 and 4 px. A 3×3 stride-2 conv with
padding 1 maps 1 px to 1 px, so 8×8 and 28×28 inputs work as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweeplab import checks
from sweeplab.models.backbone import Backbone, kaiming_init


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chans),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """ResNet of ``BasicBlock`` stages; the defaults are ResNet-18 (512-d features).

    ``layers`` is the number of blocks per stage and ``widths`` their channels;
    the first stage keeps the resolution, each later one halves it.
    ``zero_init_residual`` starts every block as the identity (Goyal et al. 2017).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        zero_init_residual: bool = False,
        name: str = "resnet18_cifar",
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, name=name
        )
        layers = checks.positive_int_list("backbone.layers", layers)
        widths = checks.positive_int_list("backbone.widths", widths)
        if len(layers) != len(widths):
            raise ValueError(
                f"backbone.layers and backbone.widths must have the same length, "
                f"got {len(layers)} and {len(widths)}"
            )
        zero_init_residual = checks.boolean("backbone.zero_init_residual", zero_init_residual)

        self.stem = nn.Sequential(
            nn.Conv2d(self.in_chans, widths[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        chans = widths[0]
        for i, (blocks, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(chans, width, stride)]
            stage += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            chans = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.num_features = chans
        self.head = nn.Linear(chans, self.num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming (fan-out) convolutions, BN as identity, as in torchvision's ResNet."""
        kaiming_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def mixing_stages(self) -> list[nn.Module]:
        """The residual stages."""
        return list(self.stages)
