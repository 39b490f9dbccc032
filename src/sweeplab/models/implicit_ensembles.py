"""Implicit ensembles inside one backbone: BatchEnsemble and Packed-Ensembles layers.

Both turn a built backbone into M members that share one network, by replacing its
``nn.Linear``/``nn.Conv2d`` layers in place (a layer registered under two names,
like a timm classifier that is also ``backbone.head``, is replaced once):

- **BatchEnsemble** (Wen et al. 2020): member ``m`` of a layer has the weight
  ``W ∘ s_m r_mᵀ`` (a shared slow weight, rank-1 fast weights) and its own bias. The
  batch is laid out member-major, ``[M·B, ...]`` with rows ``m·B .. (m+1)·B`` for
  member ``m``; the layer scales its input by ``r_m``, applies ``W`` and scales the
  output by ``s_m``. Everything else (BatchNorm included) is shared.
- **Packed-Ensembles** (Laurent et al. 2023), as torch-uncertainty defines them:
  every layer is ``α`` times wider and grouped into ``M·γ`` groups, so member ``m``
  owns the ``m``-th chunk of channels; the layer that reads the raw input is dense
  (groups = 1, output ``α`` wider) and the classifier maps ``α·D`` features to
  ``M·C`` logits grouped by ``M``. BatchNorm becomes ``α`` wider (per channel, so per
  member). Unlike torch-uncertainty, channel counts that do not divide are an error,
  not silently padded, and ``γ`` is never lowered to keep a minimum group width.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FAST_INITS = ("random_sign", "normal", "ones")


def member_seed(seed: int, member: int, purpose: str = "member") -> int:
    """A 63-bit seed for one member (or pass), stable across processes."""
    key = f"sweeplab/{purpose}/{seed}/{member}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def at_least_two(key: str, value: object) -> int:
    """An ensemble size: an integer ≥ 2, or a one-line error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"{key} must be an integer ≥ 2 for an ensemble, got {value!r}")
    return value


def replace_layers(root: nn.Module, convert: Callable[[str, nn.Module], nn.Module | None]) -> None:
    """Replace every submodule for which ``convert(path, module)`` returns a new one.

    A module registered at several paths is converted once and the same replacement is
    put at each; containers that are not replaced are visited recursively.
    """
    done: dict[int, nn.Module] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            if id(child) in done:
                module._modules[name] = done[id(child)]
                continue
            new = convert(prefix + name, child)
            done[id(child)] = child if new is None else new
            if new is None:
                visit(child, f"{prefix}{name}.")
            else:
                module._modules[name] = new

    visit(root, "")


def tile_members(x: Tensor, num_members: int) -> Tensor:
    """``[B, ...]`` → ``[M·B, ...]``, member-major: every member sees the whole batch."""
    return x.repeat(num_members, *([1] * (x.ndim - 1)))


def untile_members(out: Tensor, num_members: int) -> Tensor:
    """``[M·B, ...]`` (member-major) → ``[B, M, ...]``."""
    return out.view(num_members, -1, *out.shape[1:]).transpose(0, 1)


# -- BatchEnsemble ----------------------------------------------------------------------


class BatchEnsembleLayer(nn.Module):
    """Rank-1 fast weights ``r`` (per input channel) and ``s`` (per output channel) and a
    bias per member around one shared ``nn.Linear`` or ``nn.Conv2d`` (whose own bias moves
    into the per-member bias)."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, num_members: int) -> None:
        super().__init__()
        self.num_members = num_members
        self.layer = layer
        ins = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
        outs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        self.r = nn.Parameter(torch.ones(num_members, ins, device=layer.weight.device))
        self.s = nn.Parameter(torch.ones(num_members, outs, device=layer.weight.device))
        if layer.bias is not None:
            self.bias = nn.Parameter(layer.bias.detach().clone().repeat(num_members, 1))
            layer.bias = None
        else:
            self.register_parameter("bias", None)

    def init_fast_weights(self, kind: str, std: float, generators: list[torch.Generator]) -> None:
        """Random signs ±1, N(1, std) or ones, each member from its own generator."""
        with torch.no_grad():
            for member, generator in enumerate(generators):
                for fast in (self.r, self.s):
                    row = fast[member]
                    if kind == "ones":
                        row.fill_(1.0)
                        continue
                    draw = torch.randn(row.shape, generator=generator)
                    row.copy_(draw.sign() if kind == "random_sign" else 1.0 + std * draw)

    def _member_view(self, fast: Tensor, ndim: int, channel_dim: int) -> Tensor:
        shape = [self.num_members] + [1] * ndim
        shape[1 + channel_dim] = fast.shape[1]
        return fast.view(shape)

    def forward(self, x: Tensor) -> Tensor:
        members = x.view(self.num_members, -1, *x.shape[1:])
        channel_dim = x.ndim - 1 if isinstance(self.layer, nn.Linear) else 1
        r = self._member_view(self.r, x.ndim, channel_dim)
        out = self.layer((members * r).flatten(0, 1))
        out = out.view(self.num_members, -1, *out.shape[1:])
        out = out * self._member_view(self.s, out.ndim - 1, channel_dim)
        if self.bias is not None:
            out = out + self._member_view(self.bias, out.ndim - 1, channel_dim)
        return out.flatten(0, 1)

    def member_weight(self, member: int) -> tuple[Tensor, Tensor | None]:
        """Member ``member``'s effective weight ``W ∘ s rᵀ`` and bias, as a plain layer's."""
        weight = self.layer.weight
        s, r = self.s[member], self.r[member]
        if isinstance(self.layer, nn.Conv2d):
            groups = self.layer.groups
            per_group = weight.shape[1]
            r_of = r.view(groups, 1, per_group).expand(groups, weight.shape[0] // groups, -1)
            scale = s[:, None] * r_of.reshape(weight.shape[0], per_group)
            effective = weight * scale[:, :, None, None]
        else:
            effective = weight * s[:, None] * r[None, :]
        bias = None if self.bias is None else self.bias[member]
        return effective, bias


def to_batch_ensemble(
    backbone: nn.Module,
    num_members: int,
    fast_init: str = "random_sign",
    fast_init_std: float = 0.5,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``backbone`` whose Linear/Conv2d layers are BatchEnsemble layers.

    The copy reads member-major ``[M·B, ...]`` batches; member ``m``'s fast weights come
    from a generator seeded by ``(seed, m)``, layer after layer in module order.
    """
    model = copy.deepcopy(backbone)
    generators = [
        torch.Generator().manual_seed(member_seed(seed, m, "batch_ensemble"))
        for m in range(num_members)
    ]

    def convert(path: str, module: nn.Module) -> nn.Module | None:
        if isinstance(module, nn.Linear | nn.Conv2d):
            layer = BatchEnsembleLayer(module, num_members)
            layer.init_fast_weights(fast_init, fast_init_std, generators)
            return layer
        return None

    replace_layers(model, convert)
    return model


class BatchEnsembleMemberHead(nn.Module):
    """Member ``m``'s classifier of a BatchEnsemble head: features ``[B, D]`` → logits."""

    def __init__(self, head: nn.Module, member: int, num_members: int, in_features: int) -> None:
        super().__init__()
        self.head = head
        self.member = member
        self.num_members = num_members
        self.in_features = in_features

    def forward(self, features: Tensor) -> Tensor:
        logits = self.head(tile_members(features, self.num_members))
        return untile_members(logits, self.num_members)[:, self.member]


# -- Packed-Ensembles -------------------------------------------------------------------


class PackedLinear(nn.Module):
    """A linear layer of ``groups`` independent blocks: input chunk ``g`` → output chunk ``g``.

    ``weight`` is ``[out, in / groups]`` with the rows of group ``g`` together, like a
    grouped convolution's, so a member's rows are one contiguous slice.
    """

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        chunks = x.reshape(*x.shape[:-1], self.groups, self.in_features // self.groups)
        weight = self.weight.view(self.groups, -1, self.in_features // self.groups)
        out = torch.einsum("...gi,goi->...go", chunks, weight).flatten(-2)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


def _packed_width(
    channels: int, factor: float, groups: int, what: str, path: str, keys: str
) -> int:
    width = channels * factor
    if abs(width - round(width)) > 1e-9 or round(width) % groups:
        raise ValueError(
            f"{keys} do not fit layer {path!r}: {what} {channels} × {factor:g} = {width:g} "
            f"is not a whole multiple of {groups} groups"
        )
    return round(width)


def _init_member_rows(
    weight: Tensor, bias: Tensor | None, members: int, generators: list[torch.Generator]
) -> None:
    """PyTorch's default Linear/Conv init, each member's rows from its own generator."""
    rows = weight.shape[0] // members
    fan_in = weight[0].numel()
    bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
    with torch.no_grad():
        for m, generator in enumerate(generators):
            block = weight[m * rows : (m + 1) * rows]
            nn.init.kaiming_uniform_(block, a=math.sqrt(5), generator=generator)
            if bias is not None:
                bias[m * rows : (m + 1) * rows].uniform_(-bound, bound, generator=generator)


def _layers_called(backbone: nn.Module, probe: Tensor) -> list[nn.Module]:
    """The Linear/Conv2d layers in the order a forward pass calls them."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda module, *_: order.append(module))
        for m in backbone.modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone(probe)
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    return order


def to_packed(
    backbone: nn.Module,
    probe: Tensor,
    alpha: float,
    gamma: int,
    num_members: int,
    seed: int = 0,
    name: str = "backbone",
) -> nn.Module:
    """A Packed-Ensembles copy of ``backbone`` (features ``α·D`` wide, logits ``[B, M·C]``).

    ``probe`` is an input batch: a forward pass on it finds the layer that reads the raw
    input, and a second one on the result checks the members really are independent.
    """
    keys = "regime.alpha, regime.gamma and regime.num_members"
    model = copy.deepcopy(backbone)
    if any(True for _ in model.parameters(recurse=False)):
        raise ValueError(
            f"regime=packed cannot pack backbone {name!r}: it holds parameters of its own "
            "(embeddings or tokens) that every member would share"
        )
    called = _layers_called(model, probe)
    if not called:
        raise ValueError(f"regime=packed: backbone {name!r} has no Linear or Conv2d layer to pack")
    first = called[0]
    first_path = next(n for n, m in model.named_modules() if m is first)
    head = getattr(model, "head", None)
    last = {id(m) for m in head.modules()} if isinstance(head, nn.Module) else set()
    generators = [
        torch.Generator().manual_seed(member_seed(seed, m, "packed")) for m in range(num_members)
    ]
    M = num_members

    def widths(path: str, ins: int, outs: int, is_first: bool, is_last: bool) -> tuple:
        groups = 1 if is_first else (M if is_last else M * gamma)
        in_w = ins if is_first else _packed_width(ins, alpha, groups, "input", path, keys)
        out_factor = M if is_last else alpha
        out_w = _packed_width(outs, out_factor, max(groups, M), "output", path, keys)
        return in_w, out_w, groups

    def convert(path: str, module: nn.Module) -> nn.Module | None:
        is_first, is_last = module is first, id(module) in last
        if isinstance(module, nn.Conv2d):
            in_w, out_w, groups = widths(
                path, module.in_channels, module.out_channels, is_first, is_last
            )
            groups *= 1 if is_first else module.groups
            if in_w % groups:
                raise ValueError(
                    f"{keys} do not fit layer {path!r}: its {module.groups} groups × the packed "
                    f"groups do not divide its {in_w} input channels"
                )
            conv = nn.Conv2d(
                in_w,
                out_w,
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            _init_member_rows(conv.weight, conv.bias, M, generators)
            return conv
        if isinstance(module, nn.Linear):
            in_w, out_w, groups = widths(
                path, module.in_features, module.out_features, is_first, is_last
            )
            linear = PackedLinear(in_w, out_w, groups, module.bias is not None)
            _init_member_rows(linear.weight, linear.bias, M, generators)
            return linear
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            width = _packed_width(module.num_features, alpha, M, "BatchNorm width", path, keys)
            return type(module)(
                width,
                eps=module.eps,
                momentum=module.momentum,
                affine=module.affine,
                track_running_stats=module.track_running_stats,
            )
        if any(True for _ in module.parameters(recurse=False)):
            raise ValueError(
                f"regime=packed cannot pack backbone {name!r}: layer {path!r} is a "
                f"{type(module).__name__}; only Linear, Conv2d and BatchNorm layers can be packed"
            )
        return None

    replace_layers(model, convert)
    check_packed_members(model, probe, M, first_path, name)
    return model


def check_packed_members(
    model: nn.Module, probe: Tensor, num_members: int, first_path: str, name: str
) -> None:
    """Raise if changing member 0's channels after the first layer changes another member.

    Layers that mix channels without parameters (concatenating poolings, channel
    shuffles, reshapes into attention heads) would make the members share information.
    """
    first = model.get_submodule(first_path)

    def perturb(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        chunk = output.shape[1] // num_members
        output = output.clone()
        output[:, :chunk] += 1.0
        return output

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                clean = model.features(probe)
                handle = first.register_forward_hook(perturb)
                try:
                    shifted = model.features(probe)
                finally:
                    handle.remove()
            except Exception as err:
                raise ValueError(
                    f"regime=packed cannot pack backbone {name!r}: the packed model fails "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                ) from err
    finally:
        model.train(was_training)
    chunk = clean.shape[1] // num_members
    if not torch.allclose(clean[:, chunk:], shifted[:, chunk:]):
        raise ValueError(
            f"regime=packed cannot pack backbone {name!r}: its forward pass mixes channels "
            "across members (e.g. a concatenating pool or attention heads)"
        )


class PackedMemberHead(nn.Module):
    """Member ``m``'s classifier of a packed head: its feature chunk ``[B, D/M]`` → logits."""

    def __init__(self, head: nn.Module, member: int, num_members: int, in_features: int) -> None:
        super().__init__()
        self.head = head
        self.member = member
        self.num_members = num_members
        self.in_features = in_features

    def forward(self, features: Tensor) -> Tensor:
        width = self.in_features
        full = features.new_zeros(features.shape[0], width * self.num_members)
        full[:, self.member * width : (self.member + 1) * width] = features
        logits = self.head(full)
        return logits.view(features.shape[0], self.num_members, -1)[:, self.member]
