"""FLOPs and parameters of an architecture, counted once on the standalone subnet.

FLOPs come from torch's ``FlopCounterMode`` on one forward pass of a single image
(a multiply-add counts 2, as torch counts it), so a search compares subnets by the
same measure a user gets from torch; the counts of each architecture are computed
once and kept in a JSON file of the supernet's run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sweeplab.files import atomic_write_text
from sweeplab.models.backbone import count_parameters
from sweeplab.models.search_space import Arch, encode
from sweeplab.models.supernet import Supernet


def forward_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass of ``model`` on one image of ``input_shape`` (C, H, W)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Cost:
    """What one architecture costs: FLOPs per image and parameters."""

    flops: int
    params: int

    @property
    def mflops(self) -> float:
        return self.flops / 1e6


class CostTable:
    """The cost of every architecture asked for, counted once, kept in ``path`` if given."""

    def __init__(self, supernet: Supernet, path: Path | None = None) -> None:
        self.supernet = supernet
        self.path = path
        self.input_shape = (supernet.in_chans, supernet.image_size, supernet.image_size)
        self._costs: dict[str, Cost] = {}
        if path is not None and path.is_file():
            try:
                stored = json.loads(path.read_text())
                self._costs = {arch: Cost(**cost) for arch, cost in stored.items()}
            except (ValueError, TypeError):
                self._costs = {}  # a damaged cache is recounted, never trusted

    def __call__(self, arch: Arch) -> Cost:
        key = encode(arch)
        if key not in self._costs:
            subnet = self.supernet.blank_subnet(arch)
            self._costs[key] = Cost(
                forward_flops(subnet, self.input_shape), count_parameters(subnet)
            )
        return self._costs[key]

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {arch: asdict(cost) for arch, cost in sorted(self._costs.items())}
            atomic_write_text(self.path, json.dumps(data, indent=1))
