"""BatchNorm running statistics recomputed on data: after a merge, and per NAS subnet.

Averaged or shared running statistics do not describe the activations of the model
they sit in: a weight merge mixes several models' statistics, and every subnet of a
weight-shared supernet reads slices of statistics the other subnets kept updating.
Both are fixed the same way (Li et al. 2020; OFA): a forward pass in train mode over
a fixed set of training images, with a cumulative average instead of a momentum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, images: Tensor, batch_size: int) -> int:
    """Replace every BatchNorm's running statistics by those of ``images`` (the
    cumulative average over batches, momentum ``None``); returns how many layers."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    model.eval()
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        for chunk in images.split(batch_size):
            model(chunk)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return len(layers)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every BatchNorm normalises by the statistics of the batch it
    sees, also in eval mode, and leaves its running statistics as they were: the
    ``batch`` policy of scoring a subnet of a supernet."""
    layers = batchnorm_layers(model)
    saved = [
        (layer.training, layer.momentum, layer.num_batches_tracked.clone()) for layer in layers
    ]
    for layer in layers:
        layer.train()
        layer.momentum = 0.0  # running = (1 - 0) · running + 0 · batch: unchanged
    try:
        yield model
    finally:
        for layer, (training, momentum, tracked) in zip(layers, saved, strict=True):
            layer.train(training)
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(tracked)
