"""Reorder a supernet's channels by importance, so smaller widths keep the ones that matter.

An elastic width takes a layer's *leading* channels. After the full network has
trained for a while, OFA sorts each channel group by how much the next layer relies
on it (the L1 norm of the weights that read it) before smaller widths start to
train, so that a narrow subnet inherits the strongest channels rather than
arbitrary ones. A permutation applied consistently to every tensor that writes and
reads a channel group leaves the full network's function unchanged; the optimizer's
per-parameter state (momentum, Adam's moments) is permuted with its parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sweeplab.models.supernet import Supernet


@dataclass
class ChannelGroup:
    """Tensors that write a group of channels (dimension 0) and read it (dimension 1)."""

    writers: list[Tensor] = field(default_factory=list)
    readers: list[Tensor] = field(default_factory=list)

    def importance(self) -> Tensor:
        """Per channel, the L1 norm of all weights that read it."""
        return sum(w.detach().abs().transpose(0, 1).flatten(1).sum(1) for w in self.readers)


def _norm_tensors(norm: nn.BatchNorm2d) -> list[Tensor]:
    return [
        t for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var) if t is not None
    ]


def channel_groups(net: Supernet) -> list[ChannelGroup]:
    """The elastic channel groups: each block's middle, and each stage's residual stream."""
    groups = []
    for i, stage in enumerate(net.stages):
        stream = ChannelGroup()
        for j, block in enumerate(stage.blocks):
            groups.append(
                ChannelGroup([block.conv1.weight, *_norm_tensors(block.bn1)], [block.conv2.weight])
            )
            stream.writers += [block.conv2.weight, *_norm_tensors(block.bn2)]
            if isinstance(block.shortcut, nn.Sequential):
                stream.writers += [block.shortcut[0].weight, *_norm_tensors(block.shortcut[1])]
            if j > 0:
                stream.readers.append(block.conv1.weight)
        if i + 1 < len(net.stages):
            first = net.stages[i + 1].blocks[0]
            stream.readers += [first.conv1.weight, first.shortcut[0].weight]
        else:
            stream.readers.append(net.head.weight)
        groups.append(stream)
    return groups


@torch.no_grad()
def _permute(tensor: Tensor, dim: int, order: Tensor, optimizer) -> None:
    tensor.copy_(tensor.index_select(dim, order))
    state = {} if optimizer is None else optimizer.state.get(tensor, {})
    for key, value in state.items():
        if isinstance(value, Tensor) and value.shape == tensor.shape:
            state[key] = value.index_select(dim, order)


def sort_channels(net: Supernet, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Reorder every elastic channel group of ``net`` by decreasing importance, in place.

    The full architecture computes the same function before and after; ``optimizer``'s
    state for the permuted parameters is permuted alike.
    """
    for group in channel_groups(net):
        order = torch.argsort(group.importance(), descending=True, stable=True)
        for tensor in group.writers:
            _permute(tensor, 0, order, optimizer)
        for tensor in group.readers:
            _permute(tensor, 1, order, optimizer)
