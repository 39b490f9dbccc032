"""Classification metrics: hand-computed cases and scikit-learn cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss

from sweeplab.metrics.classification import (
    accuracy,
    brier,
    classification_metrics,
    ensemble_log_probs,
    nll,
)


def test_hand_computed_two_samples():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    labels = torch.tensor([0, 1])
    log_probs = probs.log()
    assert accuracy(log_probs, labels) == pytest.approx(0.5)
    assert nll(log_probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    # sample 1: 0.3² + 0.2² + 0.1² = 0.14; sample 2: 0.1² + 0.7² + 0.6² = 0.86
    assert brier(log_probs, labels) == pytest.approx((0.14 + 0.86) / 2)


def test_matches_sklearn_on_random_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 1, 7, generator=generator) * 3
    labels = torch.randint(0, 7, (500,), generator=generator)
    metrics = classification_metrics(logits, labels, "test")
    probs = torch.softmax(logits[:, 0].double(), dim=1).numpy()
    assert metrics["test/cls/acc"] == pytest.approx(
        accuracy_score(labels, probs.argmax(1)), abs=1e-12
    )
    assert metrics["test/cls/nll"] == pytest.approx(
        log_loss(labels, probs, labels=range(7)), abs=1e-9
    )
    one_hot = np.eye(7)[labels.numpy()]
    assert metrics["test/cls/brier"] == pytest.approx(
        ((probs - one_hot) ** 2).sum(1).mean(), abs=1e-12
    )


def test_ensemble_averages_probabilities_not_logits():
    member_logits = torch.tensor([[[10.0, 0.0], [0.0, 1.0]]])  # one sample, two members
    expected = (torch.softmax(member_logits[0, 0], 0) + torch.softmax(member_logits[0, 1], 0)) / 2
    assert torch.allclose(ensemble_log_probs(member_logits).exp()[0].float(), expected, atol=1e-6)


def test_nll_stays_finite_when_confidently_wrong():
    logits = torch.tensor([[[1000.0, -1000.0]]])
    value = nll(ensemble_log_probs(logits), torch.tensor([1]))
    assert math.isfinite(value) and value == pytest.approx(2000.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        ensemble_log_probs(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="empty"):
        nll(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
