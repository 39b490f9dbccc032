"""A weight-shared supernet over a residual CNN family, and its subnets as plain models.

Every stage of :class:`Supernet` holds ``max(depths)`` residual blocks at the stage's
full width and the largest kernel. A subnet (:mod:`sweeplab.models.search_space`)
runs the first ``depth`` blocks of each stage, the leading ``width × channels``
channels of every layer and the centre ``kernel × kernel`` taps of every 3×3-or-larger
convolution, so all subnets share one set of weights (OFA, BigNAS). Channels are
leading by position; :func:`sweeplab.models.channel_order.sort_channels` reorders them by
importance so that the leading ones are the ones worth keeping, as OFA does.

:class:`Subnet` is the same network built at one architecture with ordinary layers
and the same parameter names, so a subnet is trained standalone from scratch
(``backbone=subnet backbone.arch=…``), or starts from the supernet's weights
(``init_from=<supernet run>``, :meth:`Supernet.subnet_state`), and
:meth:`Supernet.extract` gives the standalone model whose outputs equal the
supernet's at that architecture.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab.models.backbone import Backbone, kaiming_init
from sweeplab.models.search_space import Arch, SearchSpace, encode


def crop_to(tensor: Tensor, shape: Sequence[int]) -> Tensor:
    """The part of a supernet tensor a subnet uses: leading entries of every dimension,
    the centre taps of a convolution kernel's spatial dimensions."""
    out = tensor
    for dim, size in enumerate(shape):
        start = (tensor.shape[dim] - size) // 2 if tensor.ndim == 4 and dim >= 2 else 0
        out = out.narrow(dim, start, size)
    return out


class ElasticConv2d(nn.Conv2d):
    """A convolution that runs as its leading ``active_out`` filters over the input's
    channels, with the centre ``active_kernel`` taps (``None``: the full layer)."""

    active_out: int | None = None
    active_kernel: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.active_out or self.out_channels
        kernel = self.active_kernel or self.kernel_size[0]
        weight = crop_to(self.weight, (out, x.shape[1], kernel, kernel))
        return F.conv2d(x, weight, None, self.stride, kernel // 2)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the leading channels its input has; the running statistics of
    those channels are updated in place (they are shared with every larger subnet)."""

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
        use_running = not self.training or self.track_running_stats
        running_mean = (
            self.running_mean[:channels] if use_running and self.running_mean is not None else None
        )
        running_var = (
            self.running_var[:channels] if use_running and self.running_var is not None else None
        )
        return F.batch_norm(
            x,
            running_mean,
            running_var,
            self.weight[:channels],
            self.bias[:channels],
            self.training or self.running_mean is None,
            factor,
            self.eps,
        )


class ElasticLinear(nn.Linear):
    """A linear layer that reads only the leading input features it is given."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the shortcut (a 1×1 conv-BN on a stage's first block)."""

    def __init__(
        self, in_chans: int, out_chans: int, stride: int, kernel: int, project: bool, conv, norm
    ) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = conv(in_chans, out_chans, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = norm(out_chans)
        self.conv2 = conv(out_chans, out_chans, kernel, stride=1, padding=pad, bias=False)
        self.bn2 = norm(out_chans)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so hooks see the activations
        self.shortcut: nn.Module = nn.Identity()
        if project:
            self.shortcut = nn.Sequential(
                conv(in_chans, out_chans, 1, stride=stride, bias=False), norm(out_chans)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Stage(nn.Module):
    """Residual blocks at one resolution; only the first ``depth`` run."""

    def __init__(self, blocks: list[ResidualBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.depth = len(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks[: self.depth]:
            x = block(x)
        return x


class ResidualFamily(Backbone):
    """The network both classes build: a 3×3 stem, the stages (the first keeps the
    resolution, each later one halves it), global average pooling, a linear head."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        name: str,
        space: SearchSpace,
        stages: Sequence[tuple[int, int, int]],
        conv=nn.Conv2d,
        norm=nn.BatchNorm2d,
        linear=nn.Linear,
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, name=name
        )
        self.space = space
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_chans, space.stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(space.stem_width),
            nn.ReLU(inplace=True),
        )
        built, chans = [], space.stem_width
        for i, (depth, width, kernel) in enumerate(stages):
            stride = 1 if i == 0 else 2
            blocks = [ResidualBlock(chans, width, stride, kernel, True, conv, norm)]
            blocks += [
                ResidualBlock(width, width, 1, kernel, False, conv, norm) for _ in range(depth - 1)
            ]
            built.append(Stage(blocks))
            chans = width
        self.stages = nn.ModuleList(built)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.num_features = chans
        self.head = linear(chans, self.num_classes)
        kaiming_init(self)

    def features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def mixing_stages(self) -> list[nn.Module]:
        """The residual stages."""
        return list(self.stages)


def _space(stem_width, widths, depths, width_mults, kernels) -> SearchSpace:
    return SearchSpace.of(widths, depths, width_mults, kernels, stem_width)


class Supernet(ResidualFamily):
    """Every architecture of the search space in one set of weights; runs one at a time.

    The active architecture (the largest unless set) is chosen with
    :meth:`set_arch` or, for a block of code, :meth:`using`.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (1, 2),
        width_mults: Sequence[float] = (0.5, 0.75, 1.0),
        kernels: Sequence[int] = (3, 5),
        stem_width: int = 16,
        name: str = "supernet",
    ) -> None:
        space = _space(stem_width, widths, depths, width_mults, kernels)
        full = [(space.depths[-1], width, space.kernels[-1]) for width in space.widths]
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            name=name,
            space=space,
            stages=full,
            conv=ElasticConv2d,
            norm=ElasticBatchNorm2d,
            linear=ElasticLinear,
        )
        self.arch: Arch = space.largest()
        self.set_arch(self.arch)

    def set_arch(self, arch: Arch | str) -> None:
        """Make ``arch`` (or its text form) the architecture that runs."""
        if isinstance(arch, str):
            arch = self.space.decode(arch, "arch")
        else:
            self.space.check(arch, encode(arch))
        for i, (stage, choice) in enumerate(zip(self.stages, arch, strict=True)):
            stage.depth = choice.depth
            channels = self.space.channels(i, choice.width)
            for block in stage.blocks:
                for conv in (block.conv1, block.conv2):
                    conv.active_out, conv.active_kernel = channels, choice.kernel
                if isinstance(block.shortcut, nn.Sequential):
                    block.shortcut[0].active_out = channels
        self.arch = arch

    @contextmanager
    def using(self, arch: Arch | str) -> Iterator[Supernet]:
        """Run ``arch`` inside the block, then the previous architecture again."""
        previous = self.arch
        self.set_arch(arch)
        try:
            yield self
        finally:
            self.set_arch(previous)

    def subnet_state(self, arch: Arch | str, like: nn.Module | None = None) -> dict[str, Tensor]:
        """The state dict of the standalone subnet ``arch``: the supernet's tensors cropped
        to the subnet's shapes (``like``: an already built subnet to size them by)."""
        model = like if like is not None else self.blank_subnet(arch)
        state = self.state_dict()
        return {
            key: crop_to(state[key], value.shape).clone()
            for key, value in model.state_dict().items()
        }

    def extract(self, arch: Arch | str) -> Subnet:
        """The standalone subnet ``arch`` with the supernet's weights (and statistics)."""
        subnet = self.blank_subnet(arch)
        subnet.load_state_dict(self.subnet_state(arch, like=subnet))
        subnet.train(self.training)
        return subnet.to(next(self.parameters()).device)

    def blank_subnet(self, arch: Arch | str, seed: int | None = None) -> Subnet:
        """The standalone subnet ``arch``, freshly initialised (from ``seed`` if given)
        without touching the global random stream: to count its cost, or to score a
        training-free proxy at initialisation."""
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return Subnet(
                num_classes=self.num_classes,
                in_chans=self.in_chans,
                image_size=self.image_size,
                arch=arch if isinstance(arch, str) else encode(arch),
                widths=self.space.widths,
                depths=self.space.depths,
                width_mults=self.space.width_mults,
                kernels=self.space.kernels,
                stem_width=self.space.stem_width,
            )


class Subnet(ResidualFamily):
    """One architecture of the search space (``arch``, its text form) as a plain network."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        arch: str,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (1, 2),
        width_mults: Sequence[float] = (0.5, 0.75, 1.0),
        kernels: Sequence[int] = (3, 5),
        stem_width: int = 16,
        name: str = "subnet",
    ) -> None:
        space = _space(stem_width, widths, depths, width_mults, kernels)
        chosen = space.decode(arch)
        stages = [
            (choice.depth, space.channels(i, choice.width), choice.kernel)
            for i, choice in enumerate(chosen)
        ]
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            name=name,
            space=space,
            stages=stages,
        )
        self.arch: Arch = chosen
