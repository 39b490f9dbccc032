"""Calibration metrics: hand-computed cases, torchmetrics cross-checks and invariants."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from sweeplab.metrics.calibration import (
    adaptive_calibration_error,
    calibration_metrics,
    classwise_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    reliability_bins,
)
from sweeplab.metrics.classification import accuracy, brier, nll

# Top-label confidences 0.95 (right), 0.85 (wrong), 0.65 (right), 0.75 (right).
PROBS = torch.tensor([[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.25, 0.75]])
LABELS = torch.tensor([0, 1, 1, 1])


def _random_softmax(n: int, classes: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, classes, generator=generator) * scale, dim=1)


def test_ece_and_mce_by_hand_with_five_bins():
    # Bins [.8, 1]: {.95 right, .85 wrong}: acc .5, conf .9, gap .4, mass .5 → .2
    #      [.6, .8): {.65 right, .75 right}: acc 1, conf .7, gap .3, mass .5 → .15
    assert expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.35)
    assert maximum_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.4)


def test_ece_by_hand_with_fifteen_bins():
    # Every confidence has a bin of its own: gaps .05, .85, .35, .25, each of mass 1/4.
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(1.5 / 4)
    assert maximum_calibration_error(PROBS, LABELS) == pytest.approx(0.85)


def test_confidence_on_an_edge_goes_to_the_bin_above_like_torchmetrics():
    # Four bins with edges 0, .25, .5, .75, 1 (exact in binary), bins [lo, hi):
    # .75 (right) alone in [.75, 1]: gap .25 · 1/4; .5 (wrong) and .6 (right) in
    # [.5, .75): acc .5, conf .55, gap .05 · 2/4; .4 (wrong) in [.25, .5): gap .4 · 1/4.
    probs = torch.tensor([[0.75, 0.25, 0.0], [0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.4, 0.35, 0.25]])
    labels = torch.tensor([0, 1, 0, 2])
    ece = expected_calibration_error(probs, labels, n_bins=4)
    assert ece == pytest.approx(0.0625 + 0.025 + 0.1)
    reference = multiclass_calibration_error(probs, labels, num_classes=3, n_bins=4, norm="l1")
    assert ece == pytest.approx(reference.item(), abs=1e-7)


def test_confidence_of_one_falls_in_the_last_bin():
    # Both in [14/15, 1]: acc .5, conf .975 → .475 (torchmetrics' extra bin for 1.0 gives .525).
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05]])
    labels = torch.tensor([1, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.475)
    assert reliability_bins(probs, labels)["count"][-1] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("classes", [2, 10])
def test_ece_and_mce_match_torchmetrics(seed, classes):
    probs = _random_softmax(2000, classes, seed)
    labels = torch.randint(0, classes, (2000,), generator=torch.Generator().manual_seed(seed))
    assert probs.max() < 1.0
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        reference = multiclass_calibration_error(
            probs, labels, num_classes=classes, n_bins=15, norm=norm
        )
        assert ours(probs, labels, n_bins=15) == pytest.approx(reference.item(), abs=1e-6)


def test_adaptive_ece_by_hand():
    # Sorted confidences .65 (right), .75 (right) | .85 (wrong), .95 (right) in two
    # equal-mass bins: acc 1 vs conf .7 → .3 · 1/2; acc .5 vs conf .9 → .4 · 1/2.
    assert adaptive_calibration_error(PROBS, LABELS, n_bins=2) == pytest.approx(0.35)
    # One bin: |3/4 − 0.8| = 0.05.
    assert adaptive_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(0.05)


def test_adaptive_ece_uneven_groups_put_the_larger_first():
    # Five samples, two bins → sizes 3 and 2. Confidences .6 .7 .8 | .9 .95
    # with outcomes 1 0 1 | 1 1: |2 − 2.1| + |2 − 1.85| = .25, over N = 5.
    probs = torch.tensor([[c, 1 - c] for c in (0.6, 0.7, 0.8, 0.9, 0.95)])
    labels = torch.tensor([0, 1, 0, 0, 0])
    assert adaptive_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.25 / 5)


def test_adaptive_ece_with_more_bins_than_samples_equals_per_sample_gap():
    # Each sample its own bin: mean |correct − conf| = (.05 + .85 + .35 + .25) / 4.
    assert adaptive_calibration_error(PROBS, LABELS, n_bins=15) == pytest.approx(1.5 / 4)


def test_classwise_ece_by_hand():
    # Two bins [0, .5), [.5, 1]. Class 0: p = .9 .3 .2 .6, y=0: 1 1 0 0 →
    # bin 0 {.3, .2}: |1 − .5|; bin 1 {.9, .6}: |1 − 1.5| → (.5 + .5) / 4 = .25.
    # Class 1: p = .1 .7 .8 .4, y=1: 0 0 1 1 → same, .25. Mean over classes .25.
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 0, 1, 1])
    assert classwise_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.25)


def test_classwise_ece_three_classes_by_hand():
    # One bin per class: |freq(y=c) − mean p_c| averaged over classes.
    # freq = (2/3, 1/3, 0), mean p = (.5, .3, .2) → (1/6 + 1/30 + 1/5) / 3.
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.4, 0.4, 0.2]])
    labels = torch.tensor([0, 0, 1])
    expected = (1 / 6 + 1 / 30 + 1 / 5) / 3
    assert classwise_calibration_error(probs, labels, n_bins=1) == pytest.approx(expected)


def test_perfectly_calibrated_bins_give_zero():
    # Confidence .75 everywhere and 3 of 4 right: zero in one equal-width bin. Equal-mass
    # bins are zero only when each holds all four samples; with four bins each sample is
    # alone and the gaps are .25, .25, .25, .75.
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    assert maximum_calibration_error(probs, labels) == pytest.approx(0.0)
    assert adaptive_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0)
    assert adaptive_calibration_error(probs, labels, n_bins=4) == pytest.approx(1.5 / 4)


def test_reliability_bins_are_json_ready_and_consistent_with_ece():
    bins = reliability_bins(PROBS, LABELS, n_bins=5)
    text = json.dumps(bins, allow_nan=False)
    assert json.loads(text) == bins
    assert len(bins["edges"]) == 6 and len(bins["count"]) == 5
    assert bins["count"] == [0, 0, 0, 2, 2]
    assert bins["confidence"][:3] == [None, None, None]
    assert bins["accuracy"][3:] == pytest.approx([1.0, 0.5])
    assert bins["confidence"][3:] == pytest.approx([0.7, 0.9])
    n = sum(bins["count"])
    ece = sum(
        c / n * abs(a - f)
        for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
        if c
    )
    assert ece == pytest.approx(expected_calibration_error(PROBS, LABELS, n_bins=5))


def test_calibration_metrics_keys_and_values():
    log_probs = PROBS.log()
    plain = calibration_metrics(log_probs, LABELS, "test")
    assert set(plain) == {"test/cal/ece", "test/cal/aece", "test/cal/mce", "test/cal/cwece"}
    assert plain["test/cal/ece"] == pytest.approx(1.5 / 4)
    scaled = calibration_metrics(log_probs, LABELS, "test", suffix="_ts")
    assert set(scaled) == {
        f"test/cal/{name}_ts" for name in ("ece", "aece", "mce", "cwece", "nll", "brier", "acc")
    }
    assert scaled["test/cal/nll_ts"] == pytest.approx(nll(log_probs, LABELS))
    assert scaled["test/cal/brier_ts"] == pytest.approx(brier(log_probs, LABELS))
    assert scaled["test/cal/acc_ts"] == pytest.approx(accuracy(log_probs, LABELS))
    assert all(math.isfinite(v) for v in scaled.values())


@pytest.mark.parametrize(
    "metric",
    [
        expected_calibration_error,
        adaptive_calibration_error,
        maximum_calibration_error,
        classwise_calibration_error,
        reliability_bins,
    ],
)
def test_invalid_inputs_raise(metric):
    with pytest.raises(ValueError, match="empty"):
        metric(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="expected probs"):
        metric(PROBS, LABELS[:2])
    with pytest.raises(ValueError, match="NaN"):
        metric(torch.tensor([[math.nan, 0.5]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="n_bins"):
        metric(PROBS, LABELS, n_bins=0)
