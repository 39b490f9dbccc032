"""Post-hoc calibrators: no fitting on test, invariants, recovery of a known miscalibration,
exact optima (against scipy), and finite, unique fits on separable validation data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize, minimize_scalar

from sweeplab.evaluation.calibrators import (
    CALIBRATORS,
    L2_GRID,
    TEMPERATURE_BOUNDS,
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


def _separable(n: int = 300, classes: int = 10, margin: float = 4.0, seed: int = 0):
    """Logits whose labelled class beats every other by ``margin``: every prediction right."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    rows = torch.arange(n)
    logits[rows, labels] = logits.max(1).values + margin
    return logits, labels


def _confident(n: int = 1000, errors: int = 3):
    """Almost separable logits: a low, flat NLL, where a loose optimiser stops early."""
    logits, labels = _separable(n=n, margin=6.0, seed=5)
    labels[:errors] = (labels[:errors] + 1) % logits.shape[1]
    return logits, labels


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
    free = MatrixScaling(l2=0.0).fit(logits, labels, split="val").params["weight"]
    tied = MatrixScaling(l2=1e4).fit(logits, labels, split="val").params["weight"]

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
def test_fit_is_deterministic(name):
    # Its speed is measured in benchmarks/evaluation.py, not here: a wall-clock bound
    # fails on a loaded machine. The same data must give the same calibrated logits.
    logits, labels = _overconfident(n=1000, classes=10)
    first = CALIBRATORS[name]().fit(logits, labels, split="val").transform(logits)
    second = CALIBRATORS[name]().fit(logits, labels, split="val").transform(logits)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def _scipy_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The NLL-optimal temperature by scipy's bounded Brent search on ``log T``."""
    z, y = logits.double().numpy(), labels.numpy()

    def nll(log_temperature: float) -> float:
        scaled = z * math.exp(-log_temperature)
        top = scaled.max(1, keepdims=True)
        log_norm = np.log(np.exp(scaled - top).sum(1)) + top[:, 0]
        return float(np.mean(log_norm - scaled[np.arange(len(y)), y]))

    low, high = (math.log(t) for t in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        nll, bounds=(low, high), method="bounded", options={"xatol": 1e-12, "maxiter": 2000}
    )
    return math.exp(result.x)


@pytest.mark.parametrize(
    "data",
    [
        lambda: _overconfident(scale=3.0),
        lambda: _overconfident(scale=0.5, seed=1),
        lambda: _overconfident(n=200, classes=3, scale=1.2, seed=2),
        _confident,
        lambda: _confident(n=400, errors=1),
    ],
    ids=["overconfident", "underconfident", "three_classes", "confident", "one_error"],
)
def test_temperature_is_the_nll_optimum(data):
    logits, labels = data()
    fitted = TemperatureScaling().fit(logits, labels, split="val").temperature
    assert fitted == pytest.approx(_scipy_temperature(logits, labels), rel=1e-6)


def test_temperature_of_separable_data_is_the_lower_bound():
    logits, labels = _separable()
    assert TemperatureScaling().fit(logits, labels, "val").temperature == pytest.approx(
        TEMPERATURE_BOUNDS[0], rel=1e-12
    )


class _StartingElsewhere:
    """Starts the optimiser from a random map instead of the identity."""

    def _identity(self, num_classes):
        start = super()._identity(num_classes)
        generator = torch.Generator().manual_seed(1)
        return start + torch.randn(start.shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("cls", [VectorScaling, MatrixScaling])
def test_separable_fit_is_finite_and_unique(cls):
    logits, labels = _separable()
    fitted = cls().fit(logits, labels, "val")
    elsewhere = type("Elsewhere", (_StartingElsewhere, cls), {})().fit(logits, labels, "val")
    by_lbfgs = cls(l2=fitted.chosen_l2)
    by_lbfgs.newton_max_params = 0
    by_lbfgs.fit(logits, labels, "val")
    assert fitted.chosen_l2 in L2_GRID
    for name, value in fitted.params.items():
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(elsewhere.params[name], value, rtol=0, atol=1e-9)
        torch.testing.assert_close(by_lbfgs.params[name], value, rtol=0, atol=1e-5)


def _scipy_maximum_likelihood(cls, logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Log-probabilities of the unregularised NLL minimiser found by scipy's BFGS."""
    z, y = logits.double().numpy(), labels.numpy()
    n, c = z.shape
    onehot = np.eye(c)[y]

    def calibrated(theta):
        if cls is VectorScaling:
            return z * theta[:c] + theta[c:], None
        weight, bias = theta[: c * c].reshape(c, c), theta[c * c :]
        return z @ weight.T + bias, weight

    def nll_and_gradient(theta):
        out, _ = calibrated(theta)
        out = out - out.max(1, keepdims=True)
        log_p = out - np.log(np.exp(out).sum(1, keepdims=True))
        residual = (np.exp(log_p) - onehot) / n
        if cls is VectorScaling:
            gradient = np.concatenate([(residual * z).sum(0), residual.sum(0)])
        else:
            gradient = np.concatenate([(residual.T @ z).ravel(), residual.sum(0)])
        return -(log_p * onehot).sum() / n, gradient

    start = (
        np.concatenate([np.ones(c), np.zeros(c)])
        if cls is VectorScaling
        else np.concatenate([np.eye(c).ravel(), np.zeros(c)])
    )
    result = minimize(
        nll_and_gradient, start, jac=True, method="BFGS", options={"gtol": 1e-11, "maxiter": 5000}
    )
    out, _ = calibrated(result.x)
    return (
        out
        - np.log(np.exp(out - out.max(1, keepdims=True)).sum(1, keepdims=True))
        - out.max(1, keepdims=True)
    )


@pytest.mark.parametrize("cls", [VectorScaling, MatrixScaling])
def test_unpenalised_fit_is_the_maximum_likelihood_fit(cls):
    logits, labels = _overconfident(n=600, classes=5, seed=6)
    fitted = cls(l2=0.0).fit(logits, labels, "val")
    ours = torch.log_softmax(fitted.transform(logits.double()), dim=1).numpy()
    np.testing.assert_allclose(ours, _scipy_maximum_likelihood(cls, logits, labels), atol=1e-6)


def test_penalty_strength_is_chosen_on_val_or_given():
    logits, labels = _overconfident(n=500, seed=7)
    shifted = logits + torch.tensor([2.0] + [0.0] * 9)
    chosen = [VectorScaling().fit(shifted, labels, "val").chosen_l2 for _ in range(2)]
    assert chosen[0] == chosen[1] and chosen[0] in L2_GRID
    assert VectorScaling(l2=0.5).fit(shifted, labels, "val").chosen_l2 == 0.5
    with pytest.raises(ValueError, match="l2 must be"):
        MatrixScaling(l2=-1.0)


@pytest.mark.parametrize("cls", [VectorScaling, MatrixScaling])
def test_a_strong_penalty_gives_temperature_scaling(cls):
    logits, labels = _overconfident(n=500, seed=8)
    temperature = TemperatureScaling().fit(logits, labels, "val")
    shrunk = cls(l2=1e8).fit(logits, labels, "val")
    torch.testing.assert_close(
        shrunk.transform(logits.double()).softmax(1),
        temperature.transform(logits.double()).softmax(1),
        rtol=0,
        atol=1e-5,
    )
