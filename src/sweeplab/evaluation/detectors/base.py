"""The detector interface, the linear head that head-based detectors read, and shared math.

A detector is built from hyperparameters, optionally fitted on in-distribution
outputs (and the classifier head), then scores any :class:`EvalOutputs`. Scores
follow the project's convention: **higher means more OOD**.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
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


class Detector:
    """Base class: ``fit`` on in-distribution outputs, then ``score`` (higher = more OOD).

    Hyperparameters are keyword arguments checked at construction against
    ``defaults``; ``default_grid`` lists the values to select among on a
    validation OOD set. ``fit`` is a no-op for detectors with ``needs_fit = False``,
    so every detector can be driven by the same loop.
    """

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    needs_head: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False
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

    @property
    def is_fitted(self) -> bool:
        return self._fitted or not self.needs_fit

    def fit(self, train: EvalOutputs, head: LinearHead | nn.Module | None = None) -> Detector:
        """Fit on in-distribution outputs (train or val, never test); returns ``self``."""
        if self.needs_head:
            head = self._require_head(head, train)
        if self.needs_fit:
            if train.labels.shape[0] == 0:
                raise ValueError(f"{self.name}: cannot fit on an empty set")
            self._fit(train, head)
            self._fitted = True
        return self

    def score(self, outputs: EvalOutputs) -> Tensor:
        """OOD scores ``[N]`` (float64, higher = more OOD) of ``outputs``.

        float64 so that confidences a hair below 1 do not collapse into ties.
        """
        self._require_fitted()
        return self._score(outputs).to(device="cpu", dtype=torch.float64)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{self.name} needs fitted statistics ({self.fitted_statistics}): call fit() "
                f"on in-distribution training features first"
            )

    def _fit(self, train: EvalOutputs, head: LinearHead | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} sets needs_fit but has no _fit")

    def _score(self, outputs: EvalOutputs) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no _score")

    def _require_head(
        self, head: LinearHead | nn.Module | None, outputs: EvalOutputs
    ) -> LinearHead:
        if head is None:
            raise ValueError(
                f"{self.name} needs the classifier head: call fit(train, "
                f"head=LinearHead.from_module(backbone.head))"
            )
        if not isinstance(head, LinearHead):
            head = LinearHead.from_module(head)
        self._check_head_matches(head, outputs)
        return head

    def _check_head_matches(self, head: LinearHead, outputs: EvalOutputs) -> None:
        """One head explains the logits only of a single model whose widths agree with it."""
        _, members, classes = outputs.member_logits.shape
        if members != 1:
            raise ValueError(
                f"{self.name} recomputes logits through one linear head, so it works on single "
                f"models only; got an ensemble of M={members} members"
            )
        if head.num_features != outputs.features.shape[1] or head.num_classes != classes:
            raise ValueError(
                f"{self.name}: head maps D={head.num_features} features to C={head.num_classes} "
                f"classes, but the outputs have D={outputs.features.shape[1]} and C={classes}"
            )

    def _check_width(self, outputs: EvalOutputs, fitted_width: int) -> None:
        if outputs.features.shape[1] != fitted_width:
            raise ValueError(
                f"{self.name} was fitted on D={fitted_width} features, "
                f"got D={outputs.features.shape[1]}"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"


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
