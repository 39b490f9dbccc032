"""Detectors on the pooled penultimate features alone: Mahalanobis and KNN.

Both compare a sample with statistics of the in-distribution training features,
so both need ``fit``. On an ensemble each member is fitted on its own features
and the members' scores are averaged (:class:`MemberwiseDetector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from sweeplab.checks import positive_int
from sweeplab.evaluation.cache import EvalOutputs
from sweeplab.evaluation.detectors.base import (
    LinearHead,
    MemberOutputs,
    MemberwiseDetector,
    member_mean,
    row_blocks,
)


@dataclass(frozen=True)
class MahalanobisFit:
    """One member's centre, whitening map and whitened class means (float32)."""

    center: Tensor  # [D]
    whiten: Tensor  # [D, K]
    means_w: Tensor  # [classes, K]
    means_sq: Tensor  # [classes]


class MahalanobisDetector(MemberwiseDetector):
    """Mahalanobis distance to the closest class mean (Lee et al., 2018), feature-only.

    Class means and one shared (tied) covariance of the training features; the
    score is ``min_c (x − μ_c)ᵀ Σ⁺ (x − μ_c)``, the squared distance as in the
    paper's confidence score (squaring does not change any ranking metric). The
    paper's input preprocessing and layer ensemble are not applied. Σ⁺ is the
    pseudo-inverse with the usual relative cutoff (``D·eps·λ_max``), so directions
    the training features never vary in (dead units) are ignored instead of
    dividing by zero. Covariance and eigendecomposition are float64; scoring runs in
    float32 on features centred and whitened once at fit time.
    """

    name = "mahalanobis"
    fitted_statistics = "class means and a shared covariance of the training features"

    def _fit_member(self, member: MemberOutputs, head: LinearHead | None) -> MahalanobisFit:
        features = member.features.double()
        labels = member.labels
        if labels.is_floating_point() or (labels < 0).any():
            raise ValueError("mahalanobis: fit needs integer class labels ≥ 0 (an ID set)")
        classes, index = torch.unique(labels, return_inverse=True)
        counts = torch.bincount(index, minlength=classes.numel()).double()
        means = features.new_zeros(classes.numel(), features.shape[1])
        means = means.index_add_(0, index, features) / counts[:, None]
        residual = features - means[index]
        covariance = residual.T @ residual / features.shape[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        cutoff = features.shape[1] * torch.finfo(torch.float64).eps * eigenvalues.max().clamp_min(0)
        keep = eigenvalues > cutoff
        if not keep.any():
            raise ValueError("mahalanobis: the training features do not vary; cannot fit")
        # ‖(x − μ)·W‖² = (x − μ)ᵀ Σ⁺ (x − μ) with W = V Λ^{-1/2} over the kept eigenpairs.
        whiten = eigenvectors[:, keep] / eigenvalues[keep].sqrt()
        center = features.mean(dim=0)  # centring first keeps the float32 expansion accurate
        means_w = ((means - center) @ whiten).float()
        return MahalanobisFit(center.float(), whiten.float(), means_w, means_w.pow(2).sum(dim=1))

    def _score_member(self, state: MahalanobisFit, member: MemberOutputs) -> Tensor:
        self._check_width(member, state.center.shape[0])
        device = state.whiten.device
        features = member.features.to(device=device, dtype=torch.float32)
        scores = torch.empty(features.shape[0], dtype=torch.float32, device=device)
        row_cost = state.means_w.shape[0] + state.whiten.shape[1]
        for rows in row_blocks(features.shape[0], row_cost):
            z = (features[rows] - state.center) @ state.whiten
            sq = z.pow(2).sum(dim=1, keepdim=True) - 2 * z @ state.means_w.T + state.means_sq
            scores[rows] = sq.min(dim=1).values.clamp_min(0)
        return scores


class KNNDetector(MemberwiseDetector):
    """Deep nearest neighbours (Sun et al., 2022): distance to the k-th nearest training feature.

    Features are L2-normalised, so the distance is ``sqrt(2 − 2·cos)`` and comes
    from a similarity matmul, done in blocks so that 10k queries against 50k
    training features stay within a few tens of MB. ``k`` defaults to the paper's
    CIFAR setting of 50 and is capped by the number of training features.
    """

    name = "knn"
    defaults: ClassVar[dict[str, Any]] = {"k": 50}
    default_grid: ClassVar[dict[str, list]] = {"k": [1, 5, 10, 20, 50, 100, 200, 500, 1000]}
    fitted_statistics = "the L2-normalised training features"

    def _check(self, hp: dict[str, Any]) -> dict[str, Any]:
        return {"k": positive_int("knn.k", hp["k"])}

    def _fit_member(self, member: MemberOutputs, head: LinearHead | None) -> Tensor:
        return F.normalize(member.features.float(), dim=1)  # the member's feature bank

    def _score_member(self, bank: Tensor, member: MemberOutputs) -> Tensor:
        return self._grid_member(bank, member, [self.hyperparameters])[0]

    def score_grid(self, outputs: EvalOutputs, settings: list[dict[str, Any]]) -> list[Tensor]:
        """Scores for several ``k`` from one top-k search per member (choosing ``k`` on a grid)."""
        self._require_fitted()
        self._check_members(outputs)
        per_member = [
            self._grid_member(bank, part, settings) for bank, part in self._paired(outputs)
        ]
        return [
            member_mean([scores[i] for scores in per_member]).to(device="cpu", dtype=torch.float64)
            for i in range(len(settings))
        ]

    def _grid_member(
        self, bank: Tensor, member: MemberOutputs, settings: list[dict[str, Any]]
    ) -> list[Tensor]:
        self._check_width(member, bank.shape[1])
        ks = [min(self._check({**self.defaults, **s})["k"], bank.shape[0]) for s in settings]
        queries = F.normalize(member.features.to(device=bank.device, dtype=torch.float32), dim=1)
        nearest = torch.empty(queries.shape[0], max(ks), dtype=torch.float32, device=bank.device)
        for rows in row_blocks(queries.shape[0], bank.shape[0]):
            nearest[rows] = (queries[rows] @ bank.T).topk(max(ks), dim=1).values
        return [(2 - 2 * nearest[:, k - 1]).clamp_min(0).sqrt().double().cpu() for k in ks]
