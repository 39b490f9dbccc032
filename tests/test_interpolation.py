"""The interpolation curve's pure parts: barrier heights on hand-made curves, the α
grid's checks and the end points of θ(α). The regime end to end is in tests/test_merge.py."""

from __future__ import annotations

import pytest
import torch

from sweeplab.regimes import interpolation as interp

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_linear_curve_has_no_barrier():
    losses = [2.0 - a for a in ALPHAS]
    accuracies = [0.5 + 0.2 * a for a in ALPHAS]
    assert interp.barrier(ALPHAS, losses, higher_is_better=False) == pytest.approx(0.0)
    assert interp.barrier(ALPHAS, accuracies, higher_is_better=True) == pytest.approx(0.0)


def test_a_bump_is_its_height_above_the_chord():
    # chord from 1.0 to 2.0: at α = 0.5 it is 1.5, the curve is 4.0 there
    losses = [1.0, 1.5, 4.0, 1.75, 2.0]
    assert interp.barrier(ALPHAS, losses, higher_is_better=False) == pytest.approx(2.5)
    # accuracy dips from the chord 0.9 → 0.7 (0.8 at α = 0.5) to 0.3
    accuracies = [0.9, 0.85, 0.3, 0.75, 0.7]
    assert interp.barrier(ALPHAS, accuracies, higher_is_better=True) == pytest.approx(0.5)


def test_a_curve_better_than_its_chord_has_barrier_zero():
    # a valley in the loss (and a hump in accuracy) is no barrier
    assert interp.barrier(ALPHAS, [1.0, 0.5, 0.2, 0.5, 1.0], higher_is_better=False) == 0.0
    assert interp.barrier(ALPHAS, [0.5, 0.7, 0.9, 0.7, 0.5], higher_is_better=True) == 0.0


def test_barrier_metrics_are_named_per_split():
    curve = {
        "alphas": [0.0, 0.5, 1.0],
        "val": {"acc": [1.0, 0.5, 1.0], "nll": [0.1, 0.1, 0.1]},
        "test": {"acc": [0.8, 0.8, 0.8], "nll": [0.2, 1.2, 0.4]},
    }
    assert interp.barrier_metrics(curve) == pytest.approx(
        {
            "merge/interp/val/acc_barrier": 0.5,
            "merge/interp/val/nll_barrier": 0.0,
            "merge/interp/test/acc_barrier": 0.0,
            "merge/interp/test/nll_barrier": 0.9,
        }
    )


def test_compute_curve_collects_one_value_per_alpha():
    curve = interp.compute_curve(
        [0.0, 1.0], lambda a: {"val": {"acc": a, "nll": 1 - a}, "test": {"acc": 2 * a}}
    )
    assert curve == {
        "alphas": [0.0, 1.0],
        "val": {"acc": [0.0, 1.0], "nll": [1.0, 0.0]},
        "test": {"acc": [0.0, 2.0]},
    }


@pytest.mark.parametrize("alphas", [[0.0, 0.5], [0.5, 1.0], [0.0, 0.6, 0.4, 1.0], [0, 1.5], []])
def test_alphas_must_run_from_zero_to_one(alphas):
    with pytest.raises(ValueError, match=r"regime\.alphas"):
        interp.check_alphas(alphas)
    assert interp.check_alphas(interp.DEFAULT_ALPHAS)[5] == 0.5


def test_the_end_points_are_the_two_models():
    a = {"w": torch.randn(3, 2), "count": torch.tensor(4)}
    b = {"w": torch.randn(3, 2), "count": torch.tensor(9)}
    assert torch.equal(interp.interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interp.interpolate(a, b, 1.0)["w"], b["w"])
    torch.testing.assert_close(interp.interpolate(a, b, 0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"])
    assert int(interp.interpolate(a, b, 1.0)["count"]) == 4  # counters from A


def test_the_curve_round_trips_through_its_file(tmp_path):
    curve = {"alphas": [0.0, 1.0], "test": {"acc": [0.5, 0.25], "nll": [1.0, 2.0]}}
    path = interp.write_curve(tmp_path / "interpolation.json", curve)
    assert interp.read_curve(path) == curve
