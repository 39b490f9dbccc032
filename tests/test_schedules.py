"""Learning-rate schedules: values at known steps, and bad values."""

from __future__ import annotations

import itertools

import pytest
import torch

from sweeplab.regimes.schedules import warmup_constant, warmup_cosine, warmup_multistep


def _lrs(make, steps, **kwargs):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = make(optimizer, total_steps=steps, steps_per_epoch=10, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_starts_at_base_and_ends_at_min():
    lrs = _lrs(warmup_cosine, 100, min_lr_ratio=0.1)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_warmup_is_linear():
    lrs = _lrs(warmup_cosine, 100, warmup_epochs=1)  # 10 warm-up steps
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0)


def test_multistep_milestones():
    lrs = _lrs(warmup_multistep, 100, milestones=[0.5, 0.75], gamma=0.1)
    assert lrs[49] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.1)
    assert lrs[75] == pytest.approx(0.01)


def test_constant():
    assert set(_lrs(warmup_constant, 20)) == {1.0}


@pytest.mark.parametrize(
    ("make", "kwargs", "key"),
    [
        (warmup_cosine, {"warmup_epochs": -1}, "warmup_epochs"),
        (warmup_cosine, {"min_lr_ratio": 2.0}, "min_lr_ratio"),
        (warmup_multistep, {"milestones": [0.8, 0.2]}, "milestones"),
        (warmup_multistep, {"gamma": 0.0}, "gamma"),
    ],
)
def test_bad_values_name_the_key(make, kwargs, key):
    with pytest.raises(ValueError, match=key):
        _lrs(make, 10, **kwargs)
