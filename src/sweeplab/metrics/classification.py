"""Classification metrics as pure functions of log-probabilities and labels.

Everything takes ``log_probs [N, C]`` (use :func:`ensemble_log_probs` to get them
from per-member logits ``[N, M, C]``), so a single model and an ensemble are
scored by the same code, and NLL stays finite for confidently wrong predictions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ensemble_log_probs(member_logits: Tensor) -> Tensor:
    """Log of the mean member probability: ``log (1/M) Σ_m softmax(z_m)``, computed stably."""
    if member_logits.ndim != 3:
        raise ValueError(
            f"expected member logits [N, M, C], got shape {tuple(member_logits.shape)}"
        )
    members = member_logits.shape[1]
    log_probs = torch.log_softmax(member_logits.double(), dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(members)


def check_predictions(values: Tensor, labels: Tensor, name: str = "log_probs") -> None:
    """Per-class predictions ``[N, C]`` and labels ``[N]`` for the same, non-empty set."""
    if values.ndim != 2 or labels.ndim != 1 or values.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected {name} [N, C] and labels [N], got {tuple(values.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if labels.numel() == 0:
        raise ValueError("cannot score an empty set")


def accuracy(log_probs: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose most probable class is the label."""
    check_predictions(log_probs, labels)
    return (log_probs.argmax(dim=1) == labels).double().mean().item()


def nll(log_probs: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood of the labels (nats)."""
    check_predictions(log_probs, labels)
    return -log_probs.double().gather(1, labels[:, None]).mean().item()


def brier(log_probs: Tensor, labels: Tensor) -> float:
    """Brier score summed over classes, averaged over samples (0 is perfect, 2 is worst)."""
    check_predictions(log_probs, labels)
    probs = log_probs.double().exp()
    one_hot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return (probs - one_hot).pow(2).sum(dim=1).mean().item()


def classification_metrics(member_logits: Tensor, labels: Tensor, split: str) -> dict[str, float]:
    """``{split}/cls/{acc,nll,brier}`` from per-member logits."""
    log_probs = ensemble_log_probs(member_logits)
    return {
        f"{split}/cls/acc": accuracy(log_probs, labels),
        f"{split}/cls/nll": nll(log_probs, labels),
        f"{split}/cls/brier": brier(log_probs, labels),
    }
