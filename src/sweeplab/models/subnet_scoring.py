"""Score a subnet of a supernet honestly: its own BatchNorm statistics, or batch statistics.

A subnet reads slices of running statistics that every other subnet kept updating
during supernet training, so its accuracy with them says little about the subnet.
Two policies fix that: ``recalibrate`` re-estimates the statistics of the extracted
subnet on a fixed set of training images before it is scored (OFA), and ``batch``
normalises by each evaluation batch's own statistics. The training step, the
validation of the smallest subnet, ``sweeplab nas search`` and the ranking
diagnostics all score subnets through here, so they agree.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from sweeplab.models.batchnorm import batch_statistics, recompute_batchnorm
from sweeplab.models.search_space import Arch
from sweeplab.models.supernet import Supernet

BN_POLICIES = ("recalibrate", "batch")


def scoring_subnet(
    supernet: Supernet, arch: Arch | str, policy: str, calibration: Tensor | None, batch_size: int
) -> nn.Module:
    """The standalone subnet ``arch`` in eval mode, ready to score under ``policy``.

    ``calibration`` (preprocessed training images) is needed for ``recalibrate``; the
    supernet itself is not changed.
    """
    subnet = supernet.extract(arch).eval()
    if policy == "recalibrate":
        if calibration is None:
            raise ValueError("BatchNorm recalibration needs calibration images")
        device = next(subnet.parameters()).device
        recompute_batchnorm(subnet, calibration.to(device), batch_size)
    return subnet


def predict(model: nn.Module, x: Tensor, policy: str) -> Tensor:
    """Logits of ``model`` on ``x`` under ``policy`` (batch statistics for ``batch``)."""
    with batch_statistics(model) if policy == "batch" else nullcontext():
        return model(x)


@torch.no_grad()
def accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, policy: str, batch_size: int, preprocess
) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images``; ``preprocess(x)`` normalises a batch."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, labels.shape[0], batch_size):
        x = preprocess(images[start : start + batch_size]).to(device)
        y = labels[start : start + batch_size].to(device)
        correct += int((predict(model, x, policy).argmax(dim=1) == y).sum())
    return correct / max(labels.shape[0], 1)
