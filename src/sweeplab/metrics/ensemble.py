"""Ensemble metrics as pure functions of member logits ``[N, M, C]``: members and diversity.

Every function reads the members' own softmax probabilities ``p_m = softmax(z_m)``
in float64, and the ensemble prediction is their mean ``p̄ = (1/M) Σ_m p_m``
(:func:`~sweeplab.metrics.classification.ensemble_log_probs`). Entropies and KL
divergences are in nats. The decomposition

    H(p̄) = E_m[H(p_m)] + MI        (predictive = expected entropy + mutual information)

splits the ensemble's uncertainty into what every member is unsure about
(aleatoric, the expected entropy) and what the members disagree on (epistemic,
the mutual information between the prediction and the choice of member;
Depeweg et al. 2018).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab.metrics.calibration import confidence_gap, expected_calibration_error
from sweeplab.metrics.classification import accuracy, brier, check_predictions, nll


def check_member_logits(member_logits: Tensor, labels: Tensor | None = None, min_members=1) -> None:
    """Finite member logits ``[N, M, C]`` with ``N ≥ 1``, ``M ≥ min_members``; labels ``[N]``."""
    if not isinstance(member_logits, Tensor) or member_logits.ndim != 3:
        shape = tuple(member_logits.shape) if isinstance(member_logits, Tensor) else member_logits
        raise ValueError(f"expected member logits [N, M, C], got {shape!r}")
    n, members, classes = member_logits.shape
    if n == 0 or classes == 0:
        raise ValueError(f"cannot score an empty set: member logits {tuple(member_logits.shape)}")
    if members < min_members:
        raise ValueError(
            f"this metric compares members and needs M ≥ {min_members}, got M={members}"
        )
    if not torch.isfinite(member_logits).all():
        raise ValueError("member logits contain NaN or infinite values")
    if labels is not None:
        check_predictions(member_logits[:, 0], labels, "member logits")


def member_log_probs(member_logits: Tensor) -> Tensor:
    """Each member's log-probabilities ``log softmax(z_m)``, ``[N, M, C]`` float64."""
    return torch.log_softmax(member_logits.detach().double(), dim=-1)


def entropy(log_probs: Tensor) -> Tensor:
    """``H(p) = -Σ_c p_c log p_c`` over the last axis (nats), with ``0 log 0 = 0``."""
    probs = log_probs.exp()
    return -torch.where(probs > 0, probs * log_probs, 0.0).sum(dim=-1)


def member_metrics(member_logits: Tensor, labels: Tensor, n_bins: int = 15) -> list[dict]:
    """Each member scored alone: ``[{acc, nll, brier, ece, conf_gap}, …]``, one per member.

    The same definitions as the ensemble's ``cls/*``, ``cal/ece`` (top-label,
    ``n_bins`` equal-width bins) and ``cal/conf_gap`` (mean confidence − accuracy),
    applied to ``p_m`` instead of ``p̄``.
    """
    check_member_logits(member_logits, labels)
    log_probs = member_log_probs(member_logits)
    scores = []
    for m in range(log_probs.shape[1]):
        part = log_probs[:, m]
        scores.append(
            {
                "acc": accuracy(part, labels),
                "nll": nll(part, labels),
                "brier": brier(part, labels),
                "ece": expected_calibration_error(part.exp(), labels, n_bins),
                "conf_gap": confidence_gap(part.exp(), labels),
            }
        )
    return scores


def disagreement(member_logits: Tensor) -> float:
    """Mean over the ``M(M−1)/2`` member pairs of the fraction of samples whose top-1 differ.

    ``D = 2/(M(M−1)) Σ_{m<k} (1/N) Σ_n [argmax p_m(x_n) ≠ argmax p_k(x_n)]``: 0 when
    the members always agree, 1 when every pair differs on every sample.
    """
    check_member_logits(member_logits, min_members=2)
    top = member_logits.argmax(dim=-1)  # [N, M]
    members = top.shape[1]
    differ = (top[:, :, None] != top[:, None, :]).double().mean(dim=0)  # [M, M]
    return (differ.sum() / (members * (members - 1))).item()


def pairwise_kl_matrix(member_logits: Tensor) -> Tensor:
    """``K[m, k] = (1/N) Σ_n KL(p_m(x_n) ‖ p_k(x_n))``, ``[M, M]`` float64, zero diagonal."""
    check_member_logits(member_logits)
    log_probs = member_log_probs(member_logits)
    probs = log_probs.exp()
    own = torch.where(probs > 0, probs * log_probs, 0.0).sum(dim=-1)  # [N, M]: Σ p_m log p_m
    cross = torch.einsum("nmc,nkc->nmk", probs, log_probs)  # Σ p_m log p_k
    kl = (own[:, :, None] - cross).mean(dim=0)
    kl.fill_diagonal_(0.0)
    return kl.clamp_(min=0.0)  # rounding can put a zero KL a hair below 0


def pairwise_kl(member_logits: Tensor) -> float:
    """Mean KL over the ``M(M−1)`` **ordered** pairs ``m ≠ k``: ``mean KL(p_m ‖ p_k)`` (nats).

    ``KL(p ‖ q) = Σ_c p_c log(p_c / q_c)`` is not symmetric; averaging over both
    orders of every pair makes the number symmetric in the members (it is half
    the mean symmetrised KL). 0 for identical members.
    """
    check_member_logits(member_logits, min_members=2)
    matrix = pairwise_kl_matrix(member_logits)
    members = matrix.shape[0]
    return (matrix.sum() / (members * (members - 1))).item()


def predictive_entropy_per_sample(member_logits: Tensor) -> Tensor:
    """``H(p̄(x_n))``, the entropy of the mean member probability, ``[N]`` float64."""
    check_member_logits(member_logits)
    log_probs = member_log_probs(member_logits)
    mean = torch.logsumexp(log_probs, dim=1) - torch.log(
        torch.tensor(float(log_probs.shape[1]), dtype=torch.float64)
    )
    return entropy(mean)


def expected_entropy_per_sample(member_logits: Tensor) -> Tensor:
    """``E_m[H(p_m(x_n))] = (1/M) Σ_m H(p_m(x_n))``, ``[N]`` float64."""
    check_member_logits(member_logits)
    return entropy(member_log_probs(member_logits)).mean(dim=1)


def mutual_information_per_sample(member_logits: Tensor) -> Tensor:
    """``MI(x_n) = H(p̄) − E_m[H(p_m)] ≥ 0`` (Jensen: entropy is concave), ``[N]`` float64.

    Clamped at 0, since rounding can put the MI of agreeing members a hair below it.
    """
    predictive = predictive_entropy_per_sample(member_logits)
    return (predictive - expected_entropy_per_sample(member_logits)).clamp_(min=0.0)


def predictive_entropy(member_logits: Tensor) -> float:
    """Mean over samples of ``H(p̄)``: the ensemble's total uncertainty (nats)."""
    return predictive_entropy_per_sample(member_logits).mean().item()


def expected_entropy(member_logits: Tensor) -> float:
    """Mean over samples of ``E_m[H(p_m)]``: what the members are unsure of on average (nats)."""
    return expected_entropy_per_sample(member_logits).mean().item()


def mutual_information(member_logits: Tensor) -> float:
    """Mean over samples of ``H(p̄) − E_m[H(p_m)]``: what the members disagree on (nats)."""
    return mutual_information_per_sample(member_logits).mean().item()


def diversity_metrics(member_logits: Tensor) -> dict[str, float]:
    """``{disagreement, pairwise_kl, mutual_info, expected_entropy, predictive_entropy}``."""
    check_member_logits(member_logits, min_members=2)
    return {
        "disagreement": disagreement(member_logits),
        "pairwise_kl": pairwise_kl(member_logits),
        "mutual_info": mutual_information(member_logits),
        "expected_entropy": expected_entropy(member_logits),
        "predictive_entropy": predictive_entropy(member_logits),
    }
