"""Deep ensembles trained jointly: M members in one module, each its own model.

Each member has its own initialisation (member 0 draws from the run's seeded
stream as ERM's single model does, member m > 0 from ``derive_seed(seed, m)``),
and by default its own data order and its own mixing draws, so the members are
what M separate ERM runs would be (Lakshminarayanan et al., 2017); the loss is the
sum of the members' losses, so each member's gradient is its own.

Members of one architecture can be *vectorised*: their parameters are stacked and
one ``torch.func.vmap`` of ``functional_call`` runs them together, BatchNorm
statistics per member. Parameters always live in the members themselves (the
stack is differentiable and rebuilt each step), so a checkpoint is the same
whichever path trained it and the two paths give the same parameters to float
tolerance. ``vectorize=auto`` takes the vectorised path on CUDA, where it is
faster (``benchmarks/ensemble.py``), and the loop on the CPU, where it is not.
The loop also serves mixed architectures and manifold mixup.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torch.func import functional_call, vmap

from sweeplab.augment.base import Mixer
from sweeplab.augment.manifold import ManifoldMixup
from sweeplab.data.loaders import EpochBatchPlan
from sweeplab.data.splits import derive_seed
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.registry import register_regime

VECTORIZE = ("auto", True, False)


def member_seed(seed: int, member: int, purpose: str) -> int:
    """The seed of one member's ``purpose`` (init, order, mixing), stable across runs.

    31 bits, so the data and mixing streams can derive their own seeds from it.
    """
    return derive_seed(seed, f"ensemble/member{member}/{purpose}") % 2**31


def member_factories(
    backbone: BackboneFactory, num_members: int | None, members: Sequence | None
) -> list[Callable[[], nn.Module]]:
    """One backbone factory per member: M copies of the run's backbone, or ``members``.

    An entry of ``members`` is ``{backbone: <conf/backbone option>, <option>: value}``;
    without ``backbone`` it is the run's backbone with those options overridden.
    """
    if members is None:
        if num_members is None:
            num_members = 4
        if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 2:
            raise ValueError(
                f"regime.num_members must be an integer ≥ 2 (one member is regime=erm), "
                f"got {num_members!r}"
            )
        return [backbone] * num_members
    if isinstance(members, DictConfig | ListConfig):
        members = OmegaConf.to_container(members, resolve=True)
    if not isinstance(members, Sequence) or isinstance(members, str) or len(members) < 2:
        raise ValueError(
            f"regime.members must list at least 2 members ({{backbone: <option>, ...}}), "
            f"got {members!r}"
        )
    if num_members is not None and num_members != len(members):
        raise ValueError(
            f"regime.num_members={num_members} but regime.members lists {len(members)}; "
            "set only one of them"
        )
    factories = []
    for index, entry in enumerate(members):
        if not isinstance(entry, Mapping):
            raise ValueError(f"regime.members[{index}] must be a mapping, got {entry!r}")
        options = dict(entry)
        option = options.pop("backbone", None)
        try:
            factory = backbone.for_option(str(option)) if option is not None else backbone
        except ValueError as exc:
            raise ValueError(f"regime.members[{index}].backbone: {exc}") from None
        factories.append(partial(factory, **options) if options else factory)
    return factories


def _architecture(module: nn.Module) -> tuple:
    """What must agree for members to be stacked: class, parameter and buffer shapes."""
    shapes = tuple((n, tuple(t.shape), t.dtype) for n, t in module.state_dict().items())
    return type(module), shapes


class PaddedHead(nn.Module):
    """A member's head reading the first ``width`` of zero-padded ensemble features."""

    def __init__(self, head: nn.Module, width: int) -> None:
        super().__init__()
        self.head = head
        self.width = width

    def forward(self, features: Tensor) -> Tensor:
        return self.head(features[..., : self.width])


@register_regime("ensemble")
class Ensemble(Regime):
    """Deep ensemble: M members trained jointly, vectorised when they share an architecture.

    Args:
        num_members: M (≥ 2) copies of the run's backbone; ``None`` means 4, or as
            many as ``members`` lists.
        members: heterogeneous members, ``[{backbone: mlp}, {backbone: small_cnn}]``.
        seed: the run seed; member m's initialisation, order and mixing derive from it.
        shared_batches: all members see the same batches and the same mixing draws.
        vectorize: ``auto`` (vectorised on CUDA), ``true`` or ``false`` (the loop).
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "ensemble",
        mixer: Mixer | None = None,
        num_members: int | None = None,
        members: Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
        shared_batches: bool = False,
        vectorize: bool | str = "auto",
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        if vectorize not in VECTORIZE:
            raise ValueError(f"regime.vectorize must be auto, true or false, got {vectorize!r}")
        factories = member_factories(backbone, num_members, members)
        # Member 0 draws from the run's stream, as ERM's model does; the others from
        # their own seeds, without disturbing that stream.
        built = [build_backbone(factories[0])]
        built += [
            build_backbone(factory, seed=member_seed(seed, m, "init"))
            for m, factory in enumerate(factories[1:], start=1)
        ]
        self.members = nn.ModuleList(built)
        self.shared_batches = bool(shared_batches)
        self.attach_mixer(mixer, self.members[0])
        for member in self.members[1:]:
            self.mixer.check_backbone(member)
        self.member_mixers = [self.mixer] + [
            self._own_mixer(m) for m in range(1, len(self.members))
        ]
        self.unstackable_reason = self._why_not_stackable()
        if vectorize is True and self.unstackable_reason:
            raise ValueError(f"regime.vectorize=true is impossible: {self.unstackable_reason}")
        self.vectorize = vectorize
        self._orders: dict[int, tuple[int | None, list[Tensor]]] = {}

    @property
    def num_members(self) -> int:
        return len(self.members)

    def _own_mixer(self, member: int) -> Mixer:
        if self.shared_batches:
            return self.mixer
        mixer = copy.deepcopy(self.mixer)
        mixer.seed = member_seed(self.mixer.seed, member, "mix")
        return mixer

    def _why_not_stackable(self) -> str:
        """Why the members cannot be vectorised; empty when they can."""
        if len({_architecture(m) for m in self.members}) > 1:
            return "the members have different architectures (regime.members)"
        if isinstance(self.mixer, ManifoldMixup):
            return "augment=manifold_mixup mixes inside each member"
        return ""

    def vectorized(self) -> bool:
        """Whether this step takes the vectorised path (see the module docstring)."""
        if self.unstackable_reason:
            return False
        if self.vectorize == "auto":
            return self.device.type == "cuda"
        return bool(self.vectorize)

    # -- training --------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        losses = self.member_losses(x, y, batch_idx)
        self.track_loss(losses.mean(), x.shape[0], batch_idx)  # logged per member
        return losses.sum()

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        """The sum of the members' losses: each member's gradient is its own."""
        return self.member_losses(x, y, batch_idx).sum()

    def member_losses(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        """Each member's loss ``[M]`` on its own (mixed) batch."""
        mixed = [
            self.mix(xb, yb, batch_idx, mixer=mixer)
            for (xb, yb), mixer in zip(
                self.member_batches(x, y, batch_idx), self.member_mixers, strict=True
            )
        ]
        if self.vectorized():
            logits = self.stacked_logits(torch.stack([batch.x for batch in mixed]))
        else:
            logits = [
                batch.forward(member) for batch, member in zip(mixed, self.members, strict=True)
            ]
        return torch.stack(
            [
                mixer.loss(logits[m], batch)
                for m, (batch, mixer) in enumerate(zip(mixed, self.member_mixers, strict=True))
            ]
        )

    def member_batches(self, x: Tensor, y: Tensor, batch_idx: int) -> list[tuple[Tensor, Tensor]]:
        """The batch of each member: the loader's for member 0, the others' own orders."""
        if self.shared_batches:
            return [(x, y)] * self.num_members
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is None or not hasattr(datamodule, "split"):
            raise ValueError(
                "regime.shared_batches=false needs sweeplab's in-memory data module to draw "
                "each member's own batches; set regime.shared_batches=true"
            )
        if getattr(self.trainer, "overfit_batches", 0):
            return [(x, y)] * self.num_members  # the same few batches, as the loader does
        images, labels = datamodule.split("train")
        batches = [(x, y)]
        for member in range(1, self.num_members):
            index = self._member_order(member, datamodule, labels.shape[0])[batch_idx]
            member_x = images[index].to(self.device, non_blocking=True)
            batches.append(
                (datamodule.preprocess(member_x, train=True), labels[index].to(self.device))
            )
        return batches

    def _member_order(self, member: int, datamodule, num_samples: int) -> list[Tensor]:
        """Member ``member``'s batches of this epoch: its own shuffle of the train split."""
        epoch = self.current_epoch
        cached = self._orders.get(member)
        if cached is None or cached[0] != epoch:
            plan = EpochBatchPlan(
                num_samples,
                datamodule.batch_size,
                shuffle=True,
                drop_last=datamodule.drop_last,
                seed=member_seed(datamodule.seed, member, "order"),
            )
            cached = (epoch, plan.batches(epoch))
            self._orders[member] = cached
        return cached[1]

    def stacked_logits(self, inputs: Tensor) -> Tensor:
        """Member logits ``[M, B, C]`` of member inputs ``[M, B, ...]`` in one vmapped call.

        The members' parameters and buffers are stacked (differentiably, so gradients
        reach the members); BatchNorm's updated statistics are copied back to each member.
        """
        names = [name for name, _ in self.members[0].named_parameters()]
        params = {
            name: torch.stack([member.get_parameter(name) for member in self.members])
            for name in names
        }
        buffer_names = [name for name, _ in self.members[0].named_buffers()]
        buffers = {
            name: torch.stack([member.get_buffer(name) for member in self.members])
            for name in buffer_names
        }
        skeleton = self._skeleton()
        skeleton.train(self.training)

        def one_member(member_params, member_buffers, x):
            return functional_call(skeleton, (member_params, member_buffers), (x,))

        logits = vmap(one_member, randomness="different")(params, buffers, inputs)
        if self.training:
            with torch.no_grad():
                for name, stacked in buffers.items():
                    for member, value in zip(self.members, stacked, strict=True):
                        member.get_buffer(name).copy_(value)
        return logits

    def _skeleton(self) -> nn.Module:
        """A parameter-free copy of member 0's structure, for ``functional_call``."""
        skeleton = self.__dict__.get("_stack_skeleton")
        if skeleton is None:
            skeleton = copy.deepcopy(self.members[0]).to("meta")
            self.__dict__["_stack_skeleton"] = skeleton  # not a submodule: no state
        return skeleton

    # -- evaluation ------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Member logits ``[B, M, C]``."""
        return self.predict_eval(x)[0]

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Member logits ``[B, M, C]`` and features ``[B, M, D]``.

        Members of different feature widths have theirs zero-padded to the widest
        (:meth:`member_heads` reads each member's own part).
        """
        features = [member.features(x) for member in self.members]
        logits = torch.stack([m.head(f) for m, f in zip(self.members, features, strict=True)], 1)
        width = max(f.shape[1] for f in features)
        features = [F.pad(f, (0, width - f.shape[1])) for f in features]
        return logits, torch.stack(features, dim=1)

    def member_heads(self) -> list[nn.Module]:
        widths = [member.num_features for member in self.members]
        if len(set(widths)) == 1:
            return [member.head for member in self.members]
        return [PaddedHead(m.head, w) for m, w in zip(self.members, widths, strict=True)]
