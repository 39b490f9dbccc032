"""The detector interface, the linear head that head-based detectors read, and shared math.

A detector is built from hyperparameters, optionally fitted on in-distribution
outputs (and the classifier heads), then scores any :class:`EvalOutputs`. Scores
follow the project's convention: **higher means more OOD**. Feature detectors
work member by member (:class:`MemberwiseDetector`), since ensemble members do
not share a feature space.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sweeplab.checks import is_real
from sweeplab.evaluation.cache import EvalOutputs

# Elements of one similarity or distance block; bounds memory of KNN/Mahalanobis scoring.
CHUNK_ELEMENTS = 1 << 23
# A generically extracted head must reproduce the module this closely (float64 probe).
AFFINE_RTOL = 1e-6


class NotFittedError(RuntimeError):
    """``score`` was called on a detector that needs ``fit`` first."""


@dataclass(frozen=True)
class LinearHead:
    """The classifier that maps cached features to logits: ``features @ weight.T + bias``.

    ReAct, ASH and ViM recompute logits from modified features (clipped, pruned,
    projected), so they need the head as numbers, detached from the model.
    """

    weight: Tensor  # [C, D]
    bias: Tensor  # [C]

    def __post_init__(self) -> None:
        if not isinstance(self.weight, Tensor) or not isinstance(self.bias, Tensor):
            raise ValueError("LinearHead: weight and bias must be tensors")
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(
                f"LinearHead: weight must be [C, D] and bias [C], got "
                f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )
        if not (self.weight.is_floating_point() and self.bias.is_floating_point()):
            raise ValueError("LinearHead: weight and bias must be floating point")

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def num_features(self) -> int:
        return self.weight.shape[1]

    def logits(self, features: Tensor) -> Tensor:
        """``features @ weight.T + bias`` in the dtype and on the device of ``features``."""
        weight = self.weight.to(features)
        return torch.addmm(self.bias.to(features), features, weight.T)

    @classmethod
    def from_module(cls, head: nn.Module, *, in_features: int | None = None) -> LinearHead:
        """The affine map a classifier module computes, as a detached CPU float32 head.

        ``nn.Linear`` is read directly. Any other module that is affine in eval mode
        (timm's 1×1-conv classifiers, BatchNorm before a linear layer, an average of
        linear heads) is read by probing a float64 copy at 0 and at the unit vectors,
        then checked on random inputs; a head that is not affine raises ``ValueError``.
        ``in_features`` is needed only when the input width cannot be read off the module.
        """
        if not isinstance(head, nn.Module):
            raise ValueError(f"LinearHead.from_module: expected an nn.Module, got {type(head)}")
        kind = type(head).__name__
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in head.parameters()):
            raise ValueError(f"LinearHead.from_module: {kind} has uninitialised (lazy) parameters")
        if isinstance(head, nn.Linear):
            weight = head.weight.detach().to("cpu", torch.float32).clone()
            bias = (
                head.bias.detach().to("cpu", torch.float32).clone()
                if head.bias is not None
                else torch.zeros(weight.shape[0])
            )
            return cls(weight, bias)

        width = in_features if in_features is not None else _input_width(head)
        if width is None:
            raise ValueError(
                f"LinearHead.from_module: cannot tell the input width of {kind} (no linear, "
                f"conv or norm layer inside); pass in_features=D"
            )
        probe = copy.deepcopy(head).to(device="cpu", dtype=torch.float64).eval()
        generator = torch.Generator().manual_seed(0)
        check = torch.randn(8, width, generator=generator, dtype=torch.float64) * 3
        with torch.no_grad():
            try:
                bias = probe(torch.zeros(1, width, dtype=torch.float64))
                weight = probe(torch.eye(width, dtype=torch.float64)) - bias
                out = probe(check)
            except Exception as err:
                raise ValueError(
                    f"LinearHead.from_module: {kind} does not map [B, {width}] features to "
                    f"logits ({type(err).__name__}: {err})"
                ) from err
        if out.ndim != 2 or bias.shape[0] != 1:
            raise ValueError(
                f"LinearHead.from_module: {kind} gives {tuple(out.shape)} for [B, {width}] "
                f"features, not [B, C] logits"
            )
        weight, bias = weight.T.contiguous(), bias[0]
        expected = torch.addmm(bias, check, weight.T)
        deviation = (out - expected).abs().max().item()
        if deviation > AFFINE_RTOL * max(1.0, out.abs().max().item()):
            raise ValueError(
                f"LinearHead.from_module: {kind} is not an affine map of the features "
                f"(deviation {deviation:.3g}); ReAct, ASH and ViM need a linear classifier"
            )
        return cls(weight.float(), bias.float())


def _input_width(module: nn.Module) -> int | None:
    """Input width of the first layer that declares one (Linear, Conv, BatchNorm)."""
    for sub in module.modules():
        for attr in ("in_features", "in_channels", "num_features"):
            value = getattr(sub, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass(frozen=True)
class MemberOutputs:
    """One member's logits ``[N, C]`` and features ``[N, D]``, with the labels ``[N]``."""

    logits: Tensor
    features: Tensor
    labels: Tensor


def split_members(outputs: EvalOutputs) -> list[MemberOutputs]:
    """Each member's part of ``outputs`` (views, no copies)."""
    return [
        MemberOutputs(outputs.member_logits[:, m], outputs.features[:, m], outputs.labels)
        for m in range(outputs.num_members)
    ]


def member_mean(scores: list[Tensor]) -> Tensor:
    """The mean of per-member scores (float64); one member's scores are returned unchanged."""
    if len(scores) == 1:
        return scores[0]
    return torch.stack([s.double() for s in scores]).mean(dim=0)


class Detector:
    """Base class: ``fit`` on in-distribution outputs, then ``score`` (higher = more OOD).

    Hyperparameters are keyword arguments checked at construction against
    ``defaults``; ``default_grid`` lists the values to select among on a
    validation OOD set. ``fit`` is a no-op for detectors with ``needs_fit = False``,
    so every detector can be driven by the same loop.

    What a detector needs is declared here, and evaluation reads these flags,
    never detector names:
    ``needs_fit`` (in-distribution statistics), ``needs_features`` (the cached
    features), ``needs_head`` (each member's classifier as a :class:`LinearHead`),
    ``needs_model`` (the model itself, for input gradients: its scores come from
    :meth:`score_inputs_grid` during the forward passes), and ``single_only`` /
    ``ensemble_only`` (a detector defined only for M = 1, or only for M > 1).
    """

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False
    needs_head: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False
    single_only: ClassVar[bool] = False
    ensemble_only: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    default_grid: ClassVar[dict[str, list]] = {}
    # What fit() computes, for the error raised when score() comes first.
    fitted_statistics: ClassVar[str] = ""

    def __init__(self, **hyperparameters: Any) -> None:
        unknown = sorted(set(hyperparameters) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(
                f"{self.name}: unknown hyperparameter {', '.join(map(repr, unknown))}; "
                f"{self.name} takes: {known}"
            )
        self.hyperparameters: dict[str, Any] = self._check({**self.defaults, **hyperparameters})
        self._fitted = False

    def _check(self, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise the merged hyperparameters (override per detector)."""
        return hyperparameters

    @classmethod
    def unsupported(cls, members: int) -> str:
        """Why this detector cannot score a model of ``members`` members; ``""`` if it can."""
        if cls.single_only and members > 1:
            return f"{cls.name} is defined for single models only, got M={members} members"
        if cls.ensemble_only and members < 2:
            return f"{cls.name} is defined for ensembles only (M > 1), got a single model"
        return ""

    @property
    def is_fitted(self) -> bool:
        return self._fitted or not self.needs_fit

    def fit(
        self,
        train: EvalOutputs,
        head: LinearHead | nn.Module | Sequence[LinearHead | nn.Module] | None = None,
    ) -> Detector:
        """Fit on in-distribution outputs (train or val, never test); returns ``self``.

        ``head`` is the classifier of a single model, or one per member of an ensemble.
        """
        self._check_members(train)
        heads = self._require_heads(head, train) if self.needs_head else None
        if self.needs_fit:
            if train.labels.shape[0] == 0:
                raise ValueError(f"{self.name}: cannot fit on an empty set")
            self._fit(train, heads)
            self._fitted = True
        return self

    def score(self, outputs: EvalOutputs) -> Tensor:
        """OOD scores ``[N]`` (float64, higher = more OOD) of ``outputs``.

        float64 so that confidences a hair below 1 do not collapse into ties.
        """
        self._require_fitted()
        self._check_members(outputs)
        return self._score(outputs).to(device="cpu", dtype=torch.float64)

    @classmethod
    def score_inputs_grid(
        cls,
        member_logits_fn: Callable[[Tensor], Tensor],
        batches: Iterable[tuple[Tensor, Tensor]],
        preprocess: Callable[[Tensor], Tensor],
        settings: list[dict[str, Any]],
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Scores ``[N]`` per setting from the model itself (``needs_model`` detectors)."""
        raise NotImplementedError(f"{cls.__name__} does not score inputs through the model")

    def _check_members(self, outputs: EvalOutputs) -> None:
        reason = self.unsupported(outputs.num_members)
        if reason:
            raise ValueError(reason)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{self.name} needs fitted statistics ({self.fitted_statistics}): call fit() "
                f"on in-distribution training features first"
            )

    def _fit(self, train: EvalOutputs, heads: list[LinearHead] | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} sets needs_fit but has no _fit")

    def _score(self, outputs: EvalOutputs) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no _score")

    def _require_heads(
        self,
        head: LinearHead | nn.Module | Sequence[LinearHead | nn.Module] | None,
        outputs: EvalOutputs,
    ) -> list[LinearHead]:
        """One :class:`LinearHead` per member, each matching its member's widths."""
        heads = list(head) if isinstance(head, list | tuple) else [] if head is None else [head]
        if not heads:
            raise ValueError(
                f"{self.name} needs the classifier head: call fit(train, "
                f"head=LinearHead.from_module(backbone.head)), with one head per member "
                f"for an ensemble"
            )
        heads = [h if isinstance(h, LinearHead) else LinearHead.from_module(h) for h in heads]
        if len(heads) != outputs.num_members:
            raise ValueError(
                f"{self.name} recomputes each member's logits through its own head: got "
                f"{len(heads)} heads for M={outputs.num_members} members"
            )
        for member_head, member in zip(heads, split_members(outputs), strict=True):
            self._check_head_matches(member_head, member)
        return heads

    def _check_head_matches(self, head: LinearHead, member: MemberOutputs) -> None:
        """A head explains a member's logits only if their widths agree."""
        width, classes = member.features.shape[1], member.logits.shape[1]
        if head.num_features != width or head.num_classes != classes:
            raise ValueError(
                f"{self.name}: head maps D={head.num_features} features to C={head.num_classes} "
                f"classes, but the outputs have D={width} and C={classes}"
            )

    def _check_width(self, member: MemberOutputs, fitted_width: int) -> None:
        if member.features.shape[1] != fitted_width:
            raise ValueError(
                f"{self.name} was fitted on D={fitted_width} features, "
                f"got D={member.features.shape[1]}"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"


class MemberwiseDetector(Detector):
    """A detector on features, fitted on each member alone and scored by the members' mean.

    Every member of an ensemble has a feature space (and a head) of its own, so
    statistics pooled over members would compare unrelated coordinates. Each
    member's fitted statistics are kept in ``members``; for M = 1 this is the
    detector on the single model's features.
    """

    needs_fit = True
    needs_features = True

    def _fit(self, train: EvalOutputs, heads: list[LinearHead] | None) -> None:
        self.members = []
        for m, part in enumerate(split_members(train)):
            self.members.append(self._fit_member(part, heads[m] if heads else None))

    def _score(self, outputs: EvalOutputs) -> Tensor:
        return member_mean(
            [self._score_member(state, part) for state, part in self._paired(outputs)]
        )

    def _paired(self, outputs: EvalOutputs) -> list[tuple[Any, MemberOutputs]]:
        """Each member's fitted statistics with its part of ``outputs``."""
        parts = split_members(outputs)
        if len(parts) != len(self.members):
            raise ValueError(
                f"{self.name} was fitted on M={len(self.members)} members, got M={len(parts)}"
            )
        return list(zip(self.members, parts, strict=True))

    def _fit_member(self, member: MemberOutputs, head: LinearHead | None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no _fit_member")

    def _score_member(self, state: Any, member: MemberOutputs) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no _score_member")


def mean_logits(outputs: EvalOutputs) -> Tensor:
    """Logits averaged over members ``[N, C]`` (float64); the logits themselves for M = 1."""
    return outputs.member_logits.double().mean(dim=1)


def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Free energy ``-T·logsumexp(z/T)``: high when no class has a large logit."""
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


def percentile(values: Tensor, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of all elements.

    Two ``kthvalue`` calls instead of ``torch.quantile``, which refuses inputs of
    more than 16M elements (50k train images × 2048 features is 100M).
    """
    flat = values.reshape(-1)
    n = flat.numel()
    position = q / 100.0 * (n - 1)
    low = math.floor(position)
    high = min(low + 1, n - 1)
    v_low = flat.kthvalue(low + 1).values.double().item()
    v_high = flat.kthvalue(high + 1).values.double().item() if high != low else v_low
    return v_low + (v_high - v_low) * (position - low)


def row_blocks(rows: int, row_cost: int) -> Iterator[slice]:
    """Row slices whose ``[block, row_cost]`` intermediate fits in ``CHUNK_ELEMENTS``."""
    step = max(1, CHUNK_ELEMENTS // max(1, row_cost))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def positive_number(key: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def number_in(key: str, value: Any, low: float, high: float, *, high_inclusive: bool) -> float:
    """``value`` as a float in ``[low, high]`` or ``[low, high)``."""
    inside = is_real(value) and low <= value and (value <= high if high_inclusive else value < high)
    if not inside:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{key} must be a number in [{low:g}, {high:g}{bracket}, got {value!r}")
    return float(value)
