"""Post-hoc calibrators: no fitting on test, invariants, recovery of a known miscalibration."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from sweeplab.evaluation.calibrators import (
    CALIBRATORS,
    MatrixScaling,
    TemperatureScaling,
    VectorScaling,
)
from sweeplab.metrics.calibration import expected_calibration_error


def _overconfident(n: int = 2000, classes: int = 10, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z) (so z is calibrated), and the logits ``scale · z``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 1.5
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
    return logits * scale, labels


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return F.cross_entropy(logits.double(), labels).item()


def test_registry_keys_are_the_metric_suffixes():
    assert {"ts": TemperatureScaling, "vs": VectorScaling, "ms": MatrixScaling} == CALIBRATORS


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_fitting_on_test_is_an_error(name):
    logits, labels = _overconfident(n=50)
    with pytest.raises(ValueError, match=r"test split is not allowed.*fit calibrators on val"):
        CALIBRATORS[name]().fit(logits, labels, split="test")


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_invalid_inputs_raise(name):
    calibrator = CALIBRATORS[name]()
    with pytest.raises(ValueError, match="empty"):
        calibrator.fit(torch.empty(0, 3), torch.empty(0, dtype=torch.long), split="val")
    with pytest.raises(ValueError, match="expected logits"):
        calibrator.fit(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), split="val")
    with pytest.raises(ValueError, match="NaN"):
        calibrator.fit(torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long), "val")
    with pytest.raises(RuntimeError, match="not fitted"):
        calibrator.transform(torch.zeros(2, 3))


def test_temperature_recovers_the_scale_and_lowers_ece():
    logits, labels = _overconfident(scale=3.0)
    scaling = TemperatureScaling().fit(logits, labels, split="val")
    assert 2.6 < scaling.temperature < 3.4
    before = expected_calibration_error(torch.softmax(logits, 1), labels)
    after = expected_calibration_error(torch.softmax(scaling.transform(logits), 1), labels)
    assert after < before / 3
    assert _nll(scaling.transform(logits), labels) < _nll(logits, labels)


def test_temperature_of_underconfident_logits_is_below_one():
    logits, labels = _overconfident(scale=0.5)
    assert 0.4 < TemperatureScaling().fit(logits, labels, split="val").temperature < 0.6


def test_temperature_scaling_keeps_the_predicted_class():
    logits, labels = _overconfident(scale=3.0, seed=1)
    scaling = TemperatureScaling().fit(logits, labels, split="val")
    assert torch.equal(scaling.transform(logits).argmax(1), logits.argmax(1))
    assert scaling.transform(logits).dtype == logits.dtype
    assert scaling.fit_split == "val"


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_every_calibrator_lowers_validation_nll(name):
    logits, labels = _overconfident(scale=3.0, seed=2)
    calibrator = CALIBRATORS[name]().fit(logits, labels, split="val")
    assert _nll(calibrator.transform(logits), labels) < 0.8 * _nll(logits, labels)


def test_vector_scaling_corrects_a_per_class_bias():
    # A model that adds +2 to class 0's logit; vector scaling's bias should undo most of it.
    logits, labels = _overconfident(scale=1.0, seed=3)
    shifted = logits + torch.tensor([2.0] + [0.0] * 9)
    scaling = VectorScaling().fit(shifted, labels, split="val")
    bias = scaling.params["bias"]
    assert (bias[0] - bias[1:].mean()).item() == pytest.approx(-2.0, abs=0.4)


def test_matrix_scaling_l2_shrinks_the_off_diagonal():
    logits, labels = _overconfident(n=300, seed=4)
    free = MatrixScaling().fit(logits, labels, split="val").params["weight"]
    tied = MatrixScaling(l2=100.0).fit(logits, labels, split="val").params["weight"]

    def off_diagonal(w):
        return (w - torch.diag(torch.diagonal(w))).abs().max().item()

    assert off_diagonal(tied) < 0.01 < off_diagonal(free)


def test_fit_works_on_inference_mode_tensors():
    with torch.inference_mode():
        logits, labels = _overconfident(n=200)
        scaling = TemperatureScaling().fit(logits, labels, split="val")
        calibrated = scaling.transform(logits)
    assert scaling.temperature > 1.0
    assert calibrated.shape == logits.shape


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_fit_is_fast(name):
    # Well under 50 ms per fit on an idle core; the bound leaves room for shared CI machines.
    logits, labels = _overconfident(n=1000, classes=10)
    # The first optimizer of a process imports torch._dynamo (seconds, once); not timed.
    CALIBRATORS[name]().fit(logits[:10], labels[:10], split="val")
    start = time.perf_counter()
    CALIBRATORS[name]().fit(logits, labels, split="val")
    assert time.perf_counter() - start < 0.5
