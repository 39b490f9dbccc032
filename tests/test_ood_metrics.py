"""OOD metrics: hand-computed cases, scikit-learn cross-checks (with and without ties), invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from sweeplab.metrics.ood import (
    OOD_CONVENTION,
    aupr_in,
    aupr_out,
    auroc,
    fpr_at_tpr,
    ood_metrics,
    roc_curve,
)

SCORES_IN = torch.tensor([0.1, 0.4, 0.35, 0.8])
SCORES_OUT = torch.tensor([0.9, 0.4, 0.65])


def _sklearn(scores_in, scores_out, drop_intermediate=True):
    """The reference numbers, OOD = 1, computed the way OpenOOD does."""
    y = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    s = np.r_[scores_in.numpy(), scores_out.numpy()].astype(np.float64)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=drop_intermediate)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_out": average_precision_score(y, s),
        "aupr_in": average_precision_score(1 - y, -s),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


def _random_scores(seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores_in = torch.randn(700, generator=generator, dtype=torch.float64)
    scores_out = torch.randn(400, generator=generator, dtype=torch.float64) + 1.0
    if ties:  # a coarse detector: few distinct values, many ID/OOD ties
        scores_in, scores_out = scores_in.mul(2).round(), scores_out.mul(2).round()
    return scores_in, scores_out


def test_hand_computed_case():
    # Pairs (out, in) with out > in: 0.9 beats 4; 0.4 beats 0.1, 0.35 and ties 0.4
    # (one half); 0.65 beats 3 → 9.5 / 12.
    assert auroc(SCORES_IN, SCORES_OUT) == pytest.approx(9.5 / 12)
    # Thresholds from the top: 0.9 (P 1, R 1/3), 0.8 (R unchanged), 0.65 (P 2/3, R 2/3),
    # 0.4 (P 3/5, R 1) → (1 + 2/3 + 3/5) / 3 = 34/45.
    assert aupr_out(SCORES_IN, SCORES_OUT) == pytest.approx(34 / 45)
    # ID positive from the bottom: 0.1 (P 1), 0.35 (P 1), 0.4 with the tied OOD (P 3/4),
    # 0.8 (P 4/6), each a recall step of 1/4 → 41/48.
    assert aupr_in(SCORES_IN, SCORES_OUT) == pytest.approx(41 / 48)
    # Flagging all 3 OOD samples needs threshold 0.4, which also flags ID 0.4 and 0.8.
    assert fpr_at_tpr(SCORES_IN, SCORES_OUT) == pytest.approx(0.5)
    # At 60% recall, threshold 0.65 flags ID 0.8 only.
    assert fpr_at_tpr(SCORES_IN, SCORES_OUT, tpr=0.6) == pytest.approx(0.25)


def test_ood_metrics_bundles_the_same_numbers():
    metrics = ood_metrics(SCORES_IN, SCORES_OUT)
    assert set(metrics) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    assert metrics["auroc"] == pytest.approx(auroc(SCORES_IN, SCORES_OUT))
    assert metrics["aupr_in"] == pytest.approx(aupr_in(SCORES_IN, SCORES_OUT))
    assert metrics["aupr_out"] == pytest.approx(aupr_out(SCORES_IN, SCORES_OUT))
    assert metrics["fpr95"] == pytest.approx(fpr_at_tpr(SCORES_IN, SCORES_OUT))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_sklearn(seed, ties):
    scores_in, scores_out = _random_scores(seed, ties)
    ours = ood_metrics(scores_in, scores_out)
    # With ties scikit-learn's default ROC may drop the exact 95% point; compare the full curve.
    reference = _sklearn(scores_in, scores_out, drop_intermediate=not ties)
    for key in ("auroc", "aupr_in", "aupr_out", "fpr95"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key


def test_fpr95_without_ties_equals_openood_default_curve():
    scores_in, scores_out = _random_scores(3, ties=False)
    reference = _sklearn(scores_in, scores_out, drop_intermediate=True)
    assert fpr_at_tpr(scores_in, scores_out) == pytest.approx(reference["fpr95"], abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_equals_sklearn_full_curve(ties):
    scores_in, scores_out = _random_scores(4, ties)
    fpr, tpr = roc_curve(scores_in, scores_out)
    y = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    ref_fpr, ref_tpr, _ = sk_roc_curve(
        y, np.r_[scores_in.numpy(), scores_out.numpy()], drop_intermediate=False
    )
    np.testing.assert_allclose(fpr.numpy(), ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr.numpy(), ref_tpr, atol=1e-12)


def test_perfect_separation():
    metrics = ood_metrics(torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.5, 0.9]))
    assert metrics == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_reversed_scores_are_the_worst_case():
    metrics = ood_metrics(torch.tensor([0.5, 0.9]), torch.tensor([0.0, 0.1, 0.2]))
    assert metrics["auroc"] == 0.0
    assert metrics["fpr95"] == 1.0


def test_identical_distributions_give_chance_auroc():
    generator = torch.Generator().manual_seed(0)
    scores_in = torch.randn(5000, generator=generator)
    scores_out = torch.randn(5000, generator=generator)
    assert abs(auroc(scores_in, scores_out) - 0.5) < 0.03
    # All scores equal: a single threshold, every pair a tie.
    assert auroc(torch.ones(10), torch.ones(7)) == pytest.approx(0.5)
    assert fpr_at_tpr(torch.ones(10), torch.ones(7)) == pytest.approx(1.0)


def test_auroc_is_invariant_to_monotone_transforms():
    scores_in, scores_out = _random_scores(5, ties=True)
    base = ood_metrics(scores_in, scores_out)
    moved = ood_metrics(torch.exp(scores_in) * 3 + 1, torch.exp(scores_out) * 3 + 1)
    for key in base:
        assert moved[key] == pytest.approx(base[key], abs=1e-12)


def test_infinite_scores_are_ordinary_extremes():
    scores_in = torch.tensor([-math.inf, 0.0, 1.0])
    scores_out = torch.tensor([2.0, math.inf])
    assert auroc(scores_in, scores_out) == 1.0
    assert fpr_at_tpr(scores_in, scores_out) == 0.0


def test_accepts_numpy_and_float32():
    scores_in, scores_out = _random_scores(6, ties=False)
    as_numpy = ood_metrics(scores_in.numpy(), scores_out.float().numpy())
    assert as_numpy["auroc"] == pytest.approx(auroc(scores_in, scores_out), abs=1e-6)


@pytest.mark.parametrize("metric", [auroc, aupr_in, aupr_out, fpr_at_tpr, ood_metrics, roc_curve])
def test_invalid_inputs_raise(metric):
    with pytest.raises(ValueError, match="empty"):
        metric(torch.empty(0), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="empty"):
        metric(torch.tensor([1.0]), torch.empty(0))
    with pytest.raises(ValueError, match="NaN"):
        metric(torch.tensor([0.1, math.nan]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="1-D"):
        metric(torch.zeros(2, 2), torch.tensor([1.0]))


def test_fpr_at_tpr_rejects_an_impossible_level():
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr(SCORES_IN, SCORES_OUT, tpr=0.0)


def test_convention_names_the_positive_class_and_score_direction():
    assert OOD_CONVENTION["positive"] == "ood"
    assert "higher" in OOD_CONVENTION["score"]
    assert {"auroc", "aupr_in", "aupr_out", "fpr95"} <= set(OOD_CONVENTION)
