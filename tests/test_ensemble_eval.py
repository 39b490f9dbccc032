"""Evaluation of ensembles: member and diversity metrics, member-wise scaling, ``ens/`` keys.

Pure metrics are checked by hand and against scipy; the report runs on a
hand-made eval cache (no model), with M = 3 members and with a single model.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import scipy.special
import scipy.stats
import torch
from omegaconf import OmegaConf

from sweeplab.evaluation.cache import EvalOutputs, save_outputs
from sweeplab.evaluation.calibrators import MemberwiseTemperatureScaling, TemperatureScaling
from sweeplab.evaluation.detectors import DETECTORS, build_detector
from sweeplab.evaluation.ensemble_summary import comparison_rows, diversity
from sweeplab.evaluation.ood import OODSetOutputs, evaluate_ood
from sweeplab.evaluation.passes import ood_cache_name
from sweeplab.evaluation.report import evaluate_cached, is_eval_metric
from sweeplab.metrics.calibration import confidence_gap, expected_calibration_error
from sweeplab.metrics.classification import brier, classification_metrics, ensemble_log_probs, nll
from sweeplab.metrics.ensemble import (
    disagreement,
    diversity_metrics,
    expected_entropy,
    expected_entropy_per_sample,
    member_metrics,
    mutual_information,
    mutual_information_per_sample,
    pairwise_kl,
    pairwise_kl_matrix,
    predictive_entropy,
    predictive_entropy_per_sample,
)

SEEDS = [0, 1, 2, 3, 4]
DIVERSITY_NAMES = {
    "disagreement",
    "pairwise_kl",
    "mutual_info",
    "expected_entropy",
    "predictive_entropy",
}


def random_members(seed: int, n: int = 200, members: int = 4, classes: int = 5, spread=2.0):
    """Member logits that share a signal and differ by noise, and labels for them."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    shared = torch.randn(n, 1, classes, generator=g) + 2.0 * torch.nn.functional.one_hot(
        labels, classes
    ).unsqueeze(1)
    member_logits = shared + spread * torch.randn(n, members, classes, generator=g)
    return member_logits.double(), labels


def from_probs(rows: list[list[list[float]]]) -> torch.Tensor:
    """Member logits ``[N, M, C]`` whose softmax is exactly the given probabilities."""
    return torch.tensor(rows, dtype=torch.float64).log()


# Two members, three samples, three classes; per sample: [member A, member B].
TWO_BY_THREE = [
    [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]],
    [[0.1, 0.8, 0.1], [0.5, 0.4, 0.1]],
    [[0.3, 0.3, 0.4], [0.2, 0.2, 0.6]],
]


# --------------------------------------------------------------------------- pure metrics


@pytest.mark.parametrize("seed", SEEDS)
def test_the_ensemble_is_no_worse_than_its_average_member_in_nll_and_brier(seed):
    member_logits, labels = random_members(seed)
    log_probs = ensemble_log_probs(member_logits)
    members = member_metrics(member_logits, labels)
    # NLL and Brier are convex in the predicted probabilities (Jensen).
    assert nll(log_probs, labels) <= sum(m["nll"] for m in members) / len(members)
    assert brier(log_probs, labels) <= sum(m["brier"] for m in members) / len(members)


@pytest.mark.parametrize("seed", SEEDS)
def test_predictive_entropy_is_expected_entropy_plus_mutual_information(seed):
    member_logits, _ = random_members(seed, spread=1.0 + seed)
    mi = mutual_information_per_sample(member_logits)
    assert (mi >= 0).all()
    torch.testing.assert_close(
        predictive_entropy_per_sample(member_logits),
        expected_entropy_per_sample(member_logits) + mi,
        rtol=0,
        atol=1e-12,
    )
    assert mutual_information(member_logits) > 0  # members that differ disagree somewhere
    assert predictive_entropy(member_logits) == pytest.approx(
        expected_entropy(member_logits) + mutual_information(member_logits), abs=1e-12
    )


def test_identical_members_have_no_diversity():
    single, labels = random_members(7, members=1)
    same = single.repeat(1, 3, 1)
    assert disagreement(same) == 0.0
    assert pairwise_kl(same) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(same) == pytest.approx(0.0, abs=1e-12)
    assert predictive_entropy(same) == pytest.approx(expected_entropy(same), abs=1e-12)
    (alone,) = member_metrics(single, labels)
    for member in member_metrics(same, labels):
        assert member == pytest.approx(alone, abs=1e-12)


def test_two_members_on_three_samples_by_hand():
    member_logits = from_probs(TWO_BY_THREE)
    # top-1: member A says 0, 1, 2; member B says 0, 0, 2: they differ on one sample of three
    assert disagreement(member_logits) == pytest.approx(1 / 3)

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))

    a = [sample[0] for sample in TWO_BY_THREE]
    b = [sample[1] for sample in TWO_BY_THREE]
    kl_ab = (kl(a[0], b[0]) + kl(a[1], b[1]) + kl(a[2], b[2])) / 3
    kl_ba = (kl(b[0], a[0]) + kl(b[1], a[1]) + kl(b[2], a[2])) / 3
    # sample 1 by hand: 0.1 ln(0.1/0.5) + 0.8 ln(0.8/0.4) + 0.1 ln(0.1/0.1)
    assert kl(a[1], b[1]) == pytest.approx(0.1 * math.log(0.2) + 0.8 * math.log(2.0))
    matrix = pairwise_kl_matrix(member_logits)
    assert matrix[0, 1].item() == pytest.approx(kl_ab, abs=1e-12)
    assert matrix[1, 0].item() == pytest.approx(kl_ba, abs=1e-12)
    assert kl_ab != pytest.approx(kl_ba)  # KL is not symmetric; the mean over both orders is
    assert pairwise_kl(member_logits) == pytest.approx((kl_ab + kl_ba) / 2, abs=1e-12)
    # predictive entropy of sample 0: the mean probability is [0.65, 0.25, 0.1]
    h0 = -(0.65 * math.log(0.65) + 0.25 * math.log(0.25) + 0.1 * math.log(0.1))
    assert predictive_entropy_per_sample(member_logits)[0].item() == pytest.approx(h0)


def test_three_members_disagreement_averages_the_three_pairs():
    # top-1 per sample for members (0, 1, 2): (0, 0, 1) and (2, 1, 0)
    eye = torch.eye(3, dtype=torch.float64) * 5
    member_logits = torch.stack([eye[[0, 0, 1]], eye[[2, 1, 0]]])
    # pairs (0,1), (0,2), (1,2) differ on 0+1, 1+1, 1+1 of the two samples
    assert disagreement(member_logits) == pytest.approx((1 / 2 + 1 + 1) / 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_entropies_and_kl_agree_with_scipy(seed):
    member_logits, _ = random_members(seed, n=40, members=3)
    probs = torch.softmax(member_logits, dim=-1).numpy()
    mean = probs.mean(axis=1)
    predictive = scipy.stats.entropy(mean, axis=1)
    expected = scipy.stats.entropy(probs, axis=2).mean(axis=1)
    torch.testing.assert_close(
        predictive_entropy_per_sample(member_logits), torch.from_numpy(predictive)
    )
    torch.testing.assert_close(
        expected_entropy_per_sample(member_logits), torch.from_numpy(expected)
    )
    assert mutual_information(member_logits) == pytest.approx((predictive - expected).mean())
    matrix = pairwise_kl_matrix(member_logits)
    total = 0.0
    for m in range(3):
        for k in range(3):
            by_rel_entr = scipy.special.rel_entr(probs[:, m], probs[:, k]).sum(axis=1).mean()
            by_entropy = scipy.stats.entropy(probs[:, m], probs[:, k], axis=1).mean()
            assert matrix[m, k].item() == pytest.approx(by_rel_entr, abs=1e-12)
            assert by_entropy == pytest.approx(by_rel_entr, abs=1e-12)
            total += by_rel_entr
    assert pairwise_kl(member_logits) == pytest.approx(total / 6, abs=1e-12)


def test_confidence_gap_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]], dtype=torch.float64)
    # confidences 0.9, 0.6, 0.8, 0.7 (mean 0.75); correct: yes, no, no, yes (accuracy 0.5)
    assert confidence_gap(probs, torch.tensor([0, 1, 0, 0])) == pytest.approx(0.25)
    # all four right: accuracy 1 > confidence 0.75, under-confident
    assert confidence_gap(probs, torch.tensor([0, 0, 1, 0])) == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="labels"):
        confidence_gap(probs, torch.tensor([0, 1]))


def test_member_metrics_are_the_single_model_metrics_of_each_member():
    member_logits, labels = random_members(3, members=3)
    for m, values in enumerate(member_metrics(member_logits, labels, n_bins=10)):
        alone = classification_metrics(member_logits[:, m : m + 1], labels, "test")
        assert values["acc"] == pytest.approx(alone["test/cls/acc"], abs=1e-12)
        assert values["nll"] == pytest.approx(alone["test/cls/nll"], abs=1e-12)
        assert values["brier"] == pytest.approx(alone["test/cls/brier"], abs=1e-12)
        probs = torch.softmax(member_logits[:, m], dim=-1)
        assert values["ece"] == pytest.approx(expected_calibration_error(probs, labels, 10))
        assert values["conf_gap"] == pytest.approx(confidence_gap(probs, labels))


def test_inputs_are_checked():
    member_logits, labels = random_members(0, n=10, members=2)
    with pytest.raises(ValueError, match=r"\[N, M, C\]"):
        disagreement(member_logits[:, 0])
    with pytest.raises(ValueError, match="M ≥ 2"):
        pairwise_kl(member_logits[:, :1])
    with pytest.raises(ValueError, match="M ≥ 2"):
        diversity_metrics(member_logits[:, :1])
    with pytest.raises(ValueError, match="empty"):
        mutual_information(member_logits[:0])
    broken = member_logits.clone()
    broken[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        expected_entropy(broken)
    with pytest.raises(ValueError, match="labels"):
        member_metrics(member_logits, labels[:5])


# --------------------------------------------------------------------------- member-wise scaling


def test_memberwise_temperatures_are_the_temperature_of_each_member():
    val_logits, val_labels = random_members(5, members=3, spread=3.0)
    test_logits, _ = random_members(6, members=3, spread=3.0)
    scaling = MemberwiseTemperatureScaling().fit(val_logits, val_labels, split="val")
    alone = [
        TemperatureScaling().fit(val_logits[:, m], val_labels, split="val").temperature
        for m in range(3)
    ]
    assert scaling.temperatures == pytest.approx(alone, rel=1e-9)
    assert all(t > 1 for t in alone)  # noisy members are over-confident: they get cooled
    scaled = test_logits / torch.tensor(alone, dtype=torch.float64)[None, :, None]
    torch.testing.assert_close(scaling.transform(test_logits), ensemble_log_probs(scaled))
    with pytest.raises(ValueError, match="test split"):
        MemberwiseTemperatureScaling().fit(val_logits, val_labels, split="test")
    with pytest.raises(ValueError, match="M=3"):
        scaling.transform(test_logits[:, :2])


# --------------------------------------------------------------------------- OOD


def ood_members(seed: int, n: int, members: int, classes: int = 4):
    """In-distribution logits where members agree, OOD logits where they do not."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    signal = 2.0 * torch.nn.functional.one_hot(labels, classes).unsqueeze(1).float()
    shared = 1.2 * torch.randn(n, 1, classes, generator=g)  # hard samples, hard for every member
    in_dist = signal + shared + 0.6 * torch.randn(n, members, classes, generator=g)
    out = 3.0 * torch.randn(n, members, classes, generator=g)
    features = torch.randn(n, members, 3, generator=g)
    ood_labels = torch.full((n,), -1)
    return EvalOutputs(in_dist, features, labels), EvalOutputs(out, features, ood_labels)


def ood_cfg(*detectors: str):
    return OmegaConf.create(
        {"ood": {"detectors": list(detectors), "select_on_val": False, "hyperparameters": {}}}
    )


def test_mutual_info_is_skipped_for_a_single_model_and_scores_an_ensemble():
    assert DETECTORS["mutual_info"].ensemble_only
    cfg = ood_cfg("msp", "mutual_info")
    single_in, single_out = ood_members(0, 80, members=1)
    result = evaluate_ood(
        cfg, single_in, single_in, single_in, [OODSetOutputs("o", "near", single_out)]
    )
    assert "ensembles only" in result.skipped["mutual_info"]
    assert "ood/near/msp/auroc" in result.metrics
    assert not any("mutual_info" in key for key in result.metrics)

    in_dist, out = ood_members(0, 80, members=2)
    result = evaluate_ood(cfg, in_dist, in_dist, in_dist, [OODSetOutputs("o", "near", out)])
    assert result.skipped == {}
    assert result.metrics["ood/near/mutual_info/auroc"] > 0.9  # members disagree off-distribution
    scores = build_detector("mutual_info").score(out)
    torch.testing.assert_close(scores, mutual_information_per_sample(out.member_logits))
    torch.testing.assert_close(result.scores["o"]["mutual_info"], scores)


def test_entropy_of_an_ensemble_is_its_predictive_entropy():
    _, out = ood_members(1, 30, members=3)
    torch.testing.assert_close(
        build_detector("entropy").score(out),
        predictive_entropy_per_sample(out.member_logits),
        rtol=1e-12,
        atol=1e-12,
    )


# --------------------------------------------------------------------------- the report


def fake_cache(run_dir: Path, members: int) -> None:
    """val, test, train and one near-OOD set, as the passes would write them."""
    for seed, split in enumerate(("train", "val", "test")):
        in_dist, out = ood_members(seed, 120, members)
        save_outputs(in_dist, run_dir, split)
        if split != "train":
            save_outputs(out, run_dir, ood_cache_name("scramble", split))


def eval_cfg(plots: bool = True):
    return OmegaConf.create(
        {
            "calibration": {"n_bins": 15, "calibrators": ["ts"]},
            "ood": {
                "detectors": ["msp", "energy", "mutual_info"],
                "hyperparameters": {},
                "select_on_val": True,
                "fit_split": "train",
                "histogram_detector": "energy",
                "sets": {"scramble": {"group": "near"}},
            },
            "shift": {"corruptions": []},
            "plots": plots,
        }
    )


@pytest.fixture(scope="module")
def three_members(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ensemble")
    fake_cache(run_dir, members=3)
    return run_dir, evaluate_cached(run_dir, eval_cfg())


def test_an_ensemble_report_has_every_members_metrics_and_their_mean(three_members):
    _, report = three_members
    metrics = report.metrics
    for split in ("val", "test"):
        for name in ("acc", "nll", "brier"):
            keys = [f"ens/member_{m}/{split}/cls/{name}" for m in range(3)]
            mean = sum(metrics[k] for k in keys) / 3
            assert metrics[f"ens/member_mean/{split}/cls/{name}"] == pytest.approx(mean)
        for name in ("ece", "conf_gap"):
            assert f"ens/member_2/{split}/cal/{name}" in metrics
            assert f"ens/member_mean/{split}/cal/{name}" in metrics
        assert {k.split("/")[2] for k in metrics if k.startswith(f"ens/{split}/")} == (
            DIVERSITY_NAMES
        )
        assert f"{split}/cal/conf_gap" in metrics
    assert not any(k.startswith("ens/member_3/") for k in metrics)
    assert metrics["test/cls/nll"] <= metrics["ens/member_mean/test/cls/nll"]
    assert all(is_eval_metric(k) for k in metrics)  # `sweeplab eval` replaces every one


def test_an_ensemble_report_matches_the_pure_functions(three_members):
    run_dir, report = three_members
    from sweeplab.evaluation.cache import load_outputs

    test = load_outputs(run_dir, "test")
    for name, value in diversity_metrics(test.member_logits).items():
        assert report.metrics[f"ens/test/{name}"] == pytest.approx(value, abs=1e-12)
    members = member_metrics(test.member_logits, test.labels)
    assert report.metrics["ens/member_1/test/cls/acc"] == members[1]["acc"]
    probs = ensemble_log_probs(test.member_logits).float().exp()
    assert report.metrics["test/cal/conf_gap"] == pytest.approx(confidence_gap(probs, test.labels))


def test_an_ensemble_is_calibrated_pooled_and_member_by_member(three_members):
    run_dir, report = three_members
    from sweeplab.evaluation.cache import load_outputs

    val, test = load_outputs(run_dir, "val"), load_outputs(run_dir, "test")
    scaling = MemberwiseTemperatureScaling().fit(val.member_logits, val.labels, "val")
    calibrated = scaling.transform(test.member_logits)
    metrics = report.metrics
    assert metrics["test/cal/nll_ts_members"] == pytest.approx(nll(calibrated, test.labels))
    assert metrics["test/cal/ece_ts_members"] == pytest.approx(
        expected_calibration_error(calibrated.exp(), test.labels)
    )
    assert metrics["test/cal/conf_gap_ts_members"] == pytest.approx(
        confidence_gap(calibrated.exp(), test.labels)
    )
    for m, temperature in enumerate(scaling.temperatures):
        assert metrics[f"ens/member_{m}/val/cal/temperature"] == pytest.approx(temperature)
    assert "test/cal/ece_ts" in metrics and "test/cal/conf_gap_ts" in metrics
    assert report.details["calibration"]["member_temperatures"] == pytest.approx(
        scaling.temperatures
    )


def test_an_ensemble_report_scores_mutual_info_and_draws_the_members(three_members):
    run_dir, report = three_members
    assert "ood/near/mutual_info/auroc" in report.metrics
    assert report.details["ood"]["skipped"] == {}
    picture = run_dir / "plots" / "ensemble_members.png"
    assert picture.stat().st_size > 0
    assert report.artifacts["plots/ensemble_members"] == "plots/ensemble_members.png"
    rows = comparison_rows(report.metrics)
    assert {r["model"] for r in rows if r["metric"] == "acc"} == {
        "member 0", "member 1", "member 2", "member mean", "ensemble",
    }  # fmt: skip
    assert [r["model"] for r in rows if r["metric"] == "near-OOD AUROC (energy)"] == ["ensemble"]
    assert set(diversity(report.metrics)) == DIVERSITY_NAMES


def test_a_single_model_report_has_no_ensemble_metrics(tmp_path):
    fake_cache(tmp_path, members=1)
    report = evaluate_cached(tmp_path, eval_cfg())
    assert not any(k.startswith("ens/") or "_ts_members" in k for k in report.metrics)
    assert "test/cal/conf_gap" in report.metrics and "test/cal/conf_gap_ts" in report.metrics
    assert "ensembles only" in report.details["ood"]["skipped"]["mutual_info"]
    assert "ood/near/energy/auroc" in report.metrics
    assert not (tmp_path / "plots" / "ensemble_members.png").exists()
    assert "plots/ensemble_members" not in report.artifacts
    assert "member_temperatures" not in report.details["calibration"]


def test_without_plots_no_members_picture_is_drawn(tmp_path):
    fake_cache(tmp_path, members=2)
    report = evaluate_cached(tmp_path, eval_cfg(plots=False))
    assert "ens/test/disagreement" in report.metrics
    assert not (tmp_path / "plots" / "ensemble_members.png").exists()


def test_the_summary_sent_to_the_loggers_carries_the_ensemble_metrics(three_members):
    from sweeplab.tracking.loggers import publish_summary

    _, report = three_members

    class Summary:
        def __init__(self) -> None:
            self.summary: dict = {}

    class WandbLogger:  # the name is what publish_summary dispatches on
        experiment = Summary()

    class OtherLogger:
        def __init__(self) -> None:
            self.logged: dict = {}

        def log_metrics(self, metrics, step):
            self.logged.update(metrics)

        def save(self):
            pass

    wandb, other = WandbLogger(), OtherLogger()
    publish_summary([wandb, other], report.metrics, step=1)
    for sent in (wandb.experiment.summary, other.logged):
        assert sent["ens/member_0/test/cls/acc"] == report.metrics["ens/member_0/test/cls/acc"]
        assert "ens/test/mutual_info" in sent and "test/cal/ece_ts_members" in sent
