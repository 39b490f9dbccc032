"""The merge methods against hand computations on tiny state dicts."""

from __future__ import annotations

import pytest
import torch

from sweeplab.regimes import merge_methods as mm


def sd(w, b=None, count=0):
    state = {"w": torch.tensor(w, dtype=torch.float32)}
    if b is not None:
        state["b"] = torch.tensor(b, dtype=torch.float32)
    state["bn.num_batches_tracked"] = torch.tensor(count)
    return state


def close(state, expected):
    for key, value in expected.items():
        expected_value = value if torch.is_tensor(value) else torch.tensor(value)
        torch.testing.assert_close(state[key], expected_value.to(state[key].dtype))


def test_a_soup_of_one_model_is_that_model():
    a = sd([1.0, -2.0], [0.5], count=3)
    soup = mm.uniform_soup([a])
    assert soup.keys() == a.keys()
    for key in a:
        assert torch.equal(soup[key], a[key])


def test_uniform_soup_of_two_is_their_mean_and_copies_counters_from_the_first():
    soup = mm.uniform_soup([sd([1.0, 3.0], count=5), sd([3.0, -1.0], count=9)])
    close(soup, {"w": [2.0, 1.0]})
    assert soup["bn.num_batches_tracked"].item() == 5
    assert soup["bn.num_batches_tracked"].dtype == torch.int64


def test_greedy_soup_keeps_an_ingredient_only_when_the_score_does_not_drop():
    states = [sd([0.0]), sd([2.0]), sd([-10.0]), sd([1.0])]
    # Score: higher the closer w is to 1.
    seen = []

    def score(state):
        seen.append(float(state["w"][0]))
        return -abs(float(state["w"][0]) - 1.0)

    soup, kept = mm.greedy_soup(states, score)
    # [0] scores -1; {0,1} mean 1 scores 0 (kept); {0,1,2} mean -8/3 dropped; {0,1,3} = 1 kept.
    assert kept == [0, 1, 3]
    close(soup, {"w": [1.0]})
    assert seen == [0.0, 1.0, pytest.approx(-8 / 3), 1.0]


def test_best_single_is_the_highest_scoring_ingredient_alone_and_the_first_of_ties():
    a, b, c = sd([1.0], [0.0], count=2), sd([5.0], [0.5], count=4), sd([-3.0], [1.0], count=6)
    best, index = mm.best_single([a, b, c], [0.80, 0.92, 0.85])
    assert index == 1
    for key in b:
        assert torch.equal(best[key], b[key])
    assert best["w"] is not b["w"]  # a copy: merging never writes into an ingredient
    assert mm.best_single([a, b, c], [0.9, 0.9, 0.5])[1] == 0
    with pytest.raises(ValueError, match="one score per state dict"):
        mm.best_single([a, b], [0.5])


def test_task_arithmetic_is_the_base_at_lambda_zero_and_adds_the_summed_vectors():
    base, a, b = sd([1.0, 1.0], count=7), sd([2.0, 0.0]), sd([1.5, 3.0])
    zero = mm.task_arithmetic([a, b], base, 0.0)
    close(zero, {"w": [1.0, 1.0]})
    assert zero["bn.num_batches_tracked"].item() == 7
    # τ_a = [1, -1], τ_b = [0.5, 2]; sum = [1.5, 1]; λ = 0.5 → base + [0.75, 0.5].
    close(mm.task_arithmetic([a, b], base, 0.5), {"w": [1.75, 1.5]})


def test_ties_trim_keeps_the_top_fraction_of_magnitudes_over_the_whole_vector():
    tau = {"w": torch.tensor([0.1, -0.5, 0.3]), "b": torch.tensor([-0.2, 0.05])}
    # 5 entries, keep 0.4 → 2 largest |τ|: -0.5 and 0.3.
    trimmed = mm.ties_trim(tau, 0.4)
    close(trimmed, {"w": [0.0, -0.5, 0.3], "b": [0.0, 0.0]})
    assert mm.ties_trim(tau, 1.0)["w"].tolist() == tau["w"].tolist()


def test_ties_elect_takes_the_sign_of_the_summed_trimmed_values():
    t1 = {"w": torch.tensor([0.5, -0.2, 0.0, 0.1])}
    t2 = {"w": torch.tensor([-0.1, -0.3, 0.0, -0.4])}
    t3 = {"w": torch.tensor([-0.1, 0.6, 0.0, 0.2])}
    # sums: 0.3 (+), 0.1 (+), 0 (→ majority: total 0.3+0.1+0-0.1 = 0.3 → +), -0.1 (−)
    close(mm.ties_elect([t1, t2, t3]), {"w": [1.0, 1.0, 1.0, -1.0]})


def test_ties_disjoint_mean_averages_only_the_agreeing_non_zero_entries():
    t1 = {"w": torch.tensor([0.5, -0.2, 0.0, 0.1])}
    t2 = {"w": torch.tensor([-0.1, -0.3, 0.0, -0.4])}
    t3 = {"w": torch.tensor([0.3, 0.6, 0.0, -0.2])}
    signs = {"w": torch.tensor([1.0, -1.0, 1.0, -1.0])}
    # entry 0: (0.5 + 0.3) / 2; entry 1: (-0.2 - 0.3) / 2; entry 2: none → 0; 3: (-0.4 - 0.2)/2
    close(mm.ties_disjoint_mean([t1, t2, t3], signs), {"w": [0.4, -0.25, 0.0, -0.3]})


def test_ties_end_to_end_by_hand():
    base = sd([0.0, 0.0, 0.0, 0.0])
    a = sd([1.0, -0.1, 0.2, 0.0])
    b = sd([-0.4, -0.6, 0.1, 0.3])
    # keep 0.5 (2 of 4 entries): τ_a → [1, 0, 0.2, 0]; τ_b → [-0.4, -0.6, 0, 0]
    # elect: sums [0.6, -0.6, 0.2, 0] → [+, -, +, + (the total is > 0)]
    # disjoint mean: [1, -0.6, 0.2, 0 (none agrees)]; λ = 2 doubles it
    close(mm.ties([a, b], base, keep=0.5, scaling=2.0), {"w": [2.0, -1.2, 0.4, 0.0]})


def test_dare_drop_on_a_fixed_mask_rescales_the_kept_entries():
    tau = {"w": torch.arange(1.0, 9.0)}
    generator = torch.Generator().manual_seed(3)
    mask = torch.rand(8, generator=torch.Generator().manual_seed(3)) >= 0.25
    dropped = mm.dare_drop(tau, 0.25, generator)
    torch.testing.assert_close(dropped["w"], tau["w"] * mask / 0.75)


def test_dare_drop_keeps_the_expected_value():
    tau = {"w": torch.full((20_000,), 2.0)}
    generator = torch.Generator().manual_seed(0)
    means = [mm.dare_drop(tau, 0.7, generator)["w"].mean().item() for _ in range(10)]
    assert sum(means) / len(means) == pytest.approx(2.0, rel=0.02)
    assert mm.dare_drop(tau, 0.0)["w"].tolist() == tau["w"].tolist()


def test_dare_at_p_zero_is_task_arithmetic_or_ties():
    base, a, b = sd([1.0, 1.0]), sd([2.0, 0.0]), sd([1.5, 3.0])
    close(
        mm.dare([a, b], base, 0.0, "task_arithmetic", 0.5),
        mm.task_arithmetic([a, b], base, 0.5),
    )
    close(mm.dare([a, b], base, 0.0, "ties", 1.0, keep=0.5), mm.ties([a, b], base, 0.5, 1.0))
    with pytest.raises(ValueError, match="task_arithmetic or ties"):
        mm.dare([a], base, 0.1, "soup", 1.0)


def test_fisher_merge_weights_each_entry_by_its_fisher():
    a, b = sd([0.0, 4.0], [1.0]), sd([2.0, 0.0], [3.0])
    fa = {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([1.0])}
    fb = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0])}
    merged = mm.fisher_merge([a, b], [fa, fb], eps=0.0 + 1e-12)
    # entry 0: (3·0 + 1·2) / 4 = 0.5; entry 1: no Fisher → the uniform mean 2.
    close(merged, {"w": [0.5, 2.0], "b": [2.0]})


def test_fisher_merge_with_equal_fishers_is_the_uniform_soup():
    a, b = sd([0.0, 4.0], [1.0]), sd([2.0, 1.0], [3.0])
    fisher = {"w": torch.tensor([0.3, 7.0]), "b": torch.tensor([2.0])}
    close(mm.fisher_merge([a, b], [fisher, fisher], eps=1e-8), mm.uniform_soup([a, b]))


def test_incompatible_state_dicts_are_named_in_one_line():
    with pytest.raises(ValueError) as info:
        mm.check_compatible([sd([1.0, 2.0]), sd([1.0, 2.0, 3.0])], ["run aaa", "run bbb"])
    message = str(info.value)
    assert "\n" not in message and "run aaa" in message and "run bbb" in message
    assert "w (shape [2] vs [3])" in message
    with pytest.raises(ValueError, match="b \\(only the second"):
        mm.check_compatible([sd([1.0]), sd([1.0], [2.0])], ["x", "y"])
