"""Detectors that change the features and recompute logits through the head: ViM, ReAct, ASH.

They need the classifier as a :class:`LinearHead`, one per member of an ensemble:
each member is fitted on its own features through its own head, and the members'
scores are averaged (:class:`MemberwiseDetector`). Logits come from
``head(features)``, which equals the cached logits by the backbone contract.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from sweeplab.checks import is_int
from sweeplab.evaluation.detectors.base import (
    LinearHead,
    MemberOutputs,
    MemberwiseDetector,
    energy,
    number_in,
    percentile,
)


def vim_principal_dim(width: int) -> int:
    """Principal-space size by the rule of ViM's released code: 1000 for D ≥ 2048, 512 for
    D ≥ 768, else D/2."""
    if width >= 2048:
        return 1000
    if width >= 768:
        return 512
    return max(1, width // 2)


@dataclass(frozen=True)
class ViMFit:
    """One member's virtual-logit scale, origin, residual-space basis and head."""

    alpha: float
    origin: Tensor  # [D]
    residual_basis: Tensor  # [D, D - dim]
    head: LinearHead


@dataclass(frozen=True)
class ReActFit:
    """One member's clipping threshold and head."""

    threshold: float
    head: LinearHead


class ViMDetector(MemberwiseDetector):
    """Virtual-logit matching (Wang et al., 2022).

    With origin ``u = −W⁺b`` (where every logit is 0), the principal space is
    spanned by the top ``dim`` eigenvectors of the uncentred covariance of
    ``x − u`` over the training features; the residual norm ``‖(x − u)^{P⊥}‖``
    becomes a virtual logit, scaled by ``α = mean(max logit) / mean(residual norm)``
    on the training set. The paper's ID score is ``logsumexp(z) − α‖x^{P⊥}‖``; this
    returns its negative, ``α‖x^{P⊥}‖ − logsumexp(z)``, so higher means more OOD.
    ``dim = None`` uses :func:`vim_principal_dim`.
    """

    name = "vim"
    needs_head = True
    defaults: ClassVar[dict[str, Any]] = {"dim": None}
    fitted_statistics = "the principal space and α of the training features, and the head"

    def _check(self, hp: dict[str, Any]) -> dict[str, Any]:
        dim = hp["dim"]
        if dim is not None and (not is_int(dim) or dim < 1):
            raise ValueError(f"vim.dim must be a positive integer or null, got {dim!r}")
        return {"dim": dim}

    def _fit_member(self, member: MemberOutputs, head: LinearHead | None) -> ViMFit:
        assert head is not None
        width = member.features.shape[1]
        dim = self.hyperparameters["dim"] or vim_principal_dim(width)
        if dim >= width:
            raise ValueError(
                f"vim.dim must be smaller than the feature width D={width} (the residual "
                f"space would be empty), got {dim}"
            )
        features = member.features.double()
        weight, bias = head.weight.to(features), head.bias.to(features)
        origin = -(torch.linalg.pinv(weight) @ bias)
        centred = features - origin
        covariance = centred.T @ centred / centred.shape[0]
        _, eigenvectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
        residual_basis = eigenvectors[:, : width - dim]
        residual_norm = (centred @ residual_basis).norm(dim=1)
        if residual_norm.mean() <= 0:
            raise ValueError(
                "vim: the training features have no residual outside the principal space"
            )
        max_logit = (features @ weight.T + bias).max(dim=1).values
        alpha = (max_logit.mean() / residual_norm.mean()).item()
        return ViMFit(alpha, origin.float(), residual_basis.float().contiguous(), head)

    def _score_member(self, state: ViMFit, member: MemberOutputs) -> Tensor:
        self._check_head_matches(state.head, member)
        features = member.features.to(device=state.origin.device, dtype=torch.float32)
        residual = ((features - state.origin) @ state.residual_basis).norm(dim=1).double()
        logits = state.head.logits(features.double())
        return state.alpha * residual - torch.logsumexp(logits, dim=1)


class ReActDetector(MemberwiseDetector):
    """ReAct (Sun et al., 2021): clip features at a percentile of ID activations, then energy.

    The clipping threshold is the ``percentile``-th percentile (paper default 90)
    of all training feature activations; logits are recomputed from the clipped
    features and scored by energy (T = 1). Percentile 100 clips at the training
    maximum, which leaves in-range features untouched (plain Energy).
    """

    name = "react"
    needs_head = True
    defaults: ClassVar[dict[str, Any]] = {"percentile": 90.0}
    default_grid: ClassVar[dict[str, list]] = {"percentile": [80.0, 85.0, 90.0, 95.0, 99.0]}
    fitted_statistics = "the activation clipping threshold from the training features, and the head"

    def _check(self, hp: dict[str, Any]) -> dict[str, Any]:
        p = number_in("react.percentile", hp["percentile"], 0.0, 100.0, high_inclusive=True)
        return {"percentile": p}

    def _fit_member(self, member: MemberOutputs, head: LinearHead | None) -> ReActFit:
        assert head is not None
        return ReActFit(percentile(member.features, self.hyperparameters["percentile"]), head)

    def _score_member(self, state: ReActFit, member: MemberOutputs) -> Tensor:
        self._check_head_matches(state.head, member)
        clipped = member.features.double().clamp(max=state.threshold)
        return energy(state.head.logits(clipped))


def ash(features: Tensor, percentile: float, variant: str = "s") -> Tensor:
    """Activation shaping of ``[N, D]`` features: keep each row's top ``(100 − p)%``.

    The number kept is ``D − round(D·p/100)`` as in the paper's code, but at least 1.
    ``variant`` "p" only prunes; "b" sets the kept entries to ``s₁/k`` (the row sum
    spread evenly); "s" scales the kept entries by ``exp(s₁/s₂)``, the row sum
    before over after pruning.
    """
    width = features.shape[1]
    keep = max(1, width - round(width * percentile / 100.0))
    values, index = features.topk(keep, dim=1)
    sum_before = features.sum(dim=1, keepdim=True)
    if variant == "b":
        values = (sum_before / keep).expand_as(values)
    elif variant == "s":
        sum_after = values.sum(dim=1, keepdim=True)
        ratio = torch.where(sum_after != 0, sum_before / sum_after, torch.ones_like(sum_after))
        values = values * ratio.exp()
    return torch.zeros_like(features).scatter_(1, index, values)


class ASHDetector(MemberwiseDetector):
    """ASH (Djurisic et al., 2023), on the pooled penultimate features, then energy.

    The paper shapes the penultimate activations per sample; the eval cache holds
    pooled features, so that is where ASH is applied here. Default ASH-S with
    p = 90 (the paper's ImageNet ResNet-50 setting; its CIFAR results use 90–95).
    ASH needs no statistics: ``fit`` only binds the head. It assumes non-negative
    (post-ReLU) features; ``fit`` warns when the training features are not.
    """

    name = "ash"
    needs_head = True
    defaults: ClassVar[dict[str, Any]] = {"percentile": 90.0, "variant": "s"}
    default_grid: ClassVar[dict[str, list]] = {
        "percentile": [60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
    }
    fitted_statistics = "the classifier head (pass it to fit)"

    def _check(self, hp: dict[str, Any]) -> dict[str, Any]:
        p = number_in("ash.percentile", hp["percentile"], 0.0, 100.0, high_inclusive=False)
        if hp["variant"] not in ("s", "p", "b"):
            raise ValueError(f"ash.variant must be one of s, p, b; got {hp['variant']!r}")
        return {"percentile": p, "variant": hp["variant"]}

    def _fit_member(self, member: MemberOutputs, head: LinearHead | None) -> LinearHead:
        assert head is not None
        negative = (member.features < 0).double().mean().item()
        if negative > 0:
            warnings.warn(
                f"ash assumes non-negative (post-ReLU) features, but {negative:.1%} of the "
                f"training activations are negative; its scores may be meaningless",
                stacklevel=4,
            )
        return head

    def _score_member(self, head: LinearHead, member: MemberOutputs) -> Tensor:
        self._check_head_matches(head, member)
        shaped = ash(member.features.double(), **self.hyperparameters)
        return energy(head.logits(shaped))
