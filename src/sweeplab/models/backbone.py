"""The backbone contract: pooled features, then a classifier head.

Everything downstream reads a model through two calls. ``features(x)`` gives the
pooled penultimate representation ``[B, D]`` that feature-based OOD detectors,
distillation and the eval cache store; ``head(f)`` maps it to logits ``[B, C]``.
``forward`` is exactly their composition, so logits computed from cached features
match the logits of the model itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from sweeplab import checks


class Backbone(nn.Module, ABC):
    """Base class of every sweeplab backbone.

    Subclasses set ``self.head`` and ``self.num_features`` and implement
    ``features``. Constructors take the keyword arguments the runner passes
    (``num_classes``, ``in_chans``, ``image_size``) plus their own options.
    """

    head: nn.Module
    num_features: int

    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, name: str) -> None:
        super().__init__()
        self.num_classes = checks.positive_int("num_classes", num_classes)
        self.in_chans = checks.positive_int("in_chans", in_chans)
        self.image_size = checks.positive_int("image_size", image_size)
        self.name = checks.nonempty_str("backbone.name", name)

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features ``[B, D]`` of images ``[B, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``; by definition ``head(features(x))``."""
        return self.head(self.features(x))

    def mixing_stages(self) -> list[nn.Module]:
        """Modules after whose output manifold mixup may mix, first to last; none by default."""
        return []

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features from one pass, for evaluation that stores both."""
        feats = self.features(x)
        return self.head(feats), feats

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_classes={self.num_classes}, in_chans={self.in_chans}, "
            f"image_size={self.image_size}, num_features={self.num_features}"
        )


def kaiming_init(module: nn.Module) -> None:
    """Kaiming (fan-out) convolutions for ReLU nets, BatchNorm as the identity, as in
    torchvision's ResNet; the conv nets of this package start from it."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters, each shared tensor counted once.

    ``Module.parameters()`` already de-duplicates shared tensors (a timm head that is
    also registered as ``backbone.head`` counts once). Lazy parameters that are not
    materialised yet cannot be counted and raise ``ValueError``.
    """
    total = 0
    for param in module.parameters():
        if isinstance(param, nn.parameter.UninitializedParameter):
            raise ValueError("count_parameters: module has uninitialised (lazy) parameters")
        if trainable_only and not param.requires_grad:
            continue
        total += param.numel()
    return total
