"""Evaluation end to end: the default record's metrics, and `sweeplab eval` from the cache."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from sweeplab import cli
from sweeplab.data.corruptions import CORRUPTIONS
from sweeplab.evaluate import EvalError, evaluate_run, find_run
from sweeplab.evaluation.detectors import DETECTORS
from sweeplab.evaluation.passes import seeded_subsample
from sweeplab.regimes.erm import ERM
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import read_record
from sweeplab.train import execute
from tests.conftest import FAST, run_cli

QUICK_EVAL = ["eval.shift.severities=[1,5]", "eval.shift.corruptions=[gaussian_noise,contrast]"]


def train(make_cfg, store: Path, *overrides: str):
    cfg = make_cfg(*overrides)
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg), list(overrides))
    assert outcome.status == "complete", outcome.error
    return outcome.run_dir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One short default run with the full default evaluation, shared by the tests below."""
    from tests.conftest import compose_config

    store = tmp_path_factory.mktemp("store")
    cfg = compose_config([f"paths.root_dir={store}", "trainer.enable_progress_bar=false", *FAST])
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg))
    assert outcome.status == "complete", outcome.error
    return outcome.run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def test_default_record_holds_calibration_ood_and_shift(finished_run):
    record = read_record(finished_run)
    metrics = record["metrics"]
    for name in ("ece", "aece", "mce", "cwece"):
        for suffix in ("", "_ts", "_vs", "_ms"):
            assert 0 <= metrics[f"test/cal/{name}{suffix}"] <= 1
    assert metrics["val/cal/temperature"] > 0
    for group in ("near", "far"):
        for detector in (d for d, cls in DETECTORS.items() if not cls.unsupported(1)):
            for metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
                value = metrics[f"ood/{group}/{detector}/{metric}"]
                assert 0 <= value <= 1, (group, detector, metric)
    # Held-out digits (8 and 9) are the near set, noise the far set.
    assert metrics["ood/held_out/msp/auroc"] == metrics["ood/near/msp/auroc"]
    assert metrics["ood/far/energy/auroc"] > 0.9
    assert set(record["evaluation"]["ood"]["groups"]) == {"held_out", "noise"}
    assert record["evaluation"]["ood"]["convention"]["positive"] == "ood"
    corruptions = record["config"]["eval"]["shift"]["corruptions"]
    assert set(corruptions) <= set(CORRUPTIONS) and len(corruptions) >= 8
    for corruption in corruptions:
        for severity in range(1, 6):
            assert 0 <= metrics[f"shift/{corruption}/{severity}/acc"] <= 1
    assert metrics["shift/mean/acc"] < metrics["test/cls/acc"]
    assert metrics["shift/gaussian_noise/5/acc"] <= metrics["shift/gaussian_noise/1/acc"]
    for key in ("plots/reliability_test", "plots/ood_held_out_roc", "plots/ood_noise_scores"):
        assert (finished_run / record["artifacts"][key]).stat().st_size > 0
    bins = json.loads((finished_run / record["artifacts"]["reliability_bins"]).read_text())
    test_size = torch.load(finished_run / "eval_cache" / "test.pt", weights_only=True)["labels"]
    assert sum(bins["before"]["count"]) == len(test_size)
    assert set(bins) == {"before", "after_ts", "after_vs", "after_ms"}


def test_eval_adds_detectors_without_running_the_model(finished_run, tmp_path, monkeypatch):
    run_dir = copy_run(finished_run, tmp_path)
    before = read_record(run_dir)["metrics"]

    def forbidden(*args, **kwargs):
        raise AssertionError("the model must not run")

    monkeypatch.setattr(ERM, "forward", forbidden)
    monkeypatch.setattr(ERM, "predict_eval", forbidden)
    record = evaluate_run(
        run_dir, ["eval.ood.detectors=[knn,vim]", "eval.ood.hyperparameters.knn={k: 3}"]
    )
    metrics = record["metrics"]
    assert record["evaluation"]["ood"]["hyperparameters"]["knn"] == {"k": 3}
    assert record["evaluation"]["recomputed"] == []
    # Adding, not replacing: every key stays, knn's are recomputed, the others kept.
    assert set(before) <= set(metrics) and len(metrics) == len(before)
    assert metrics["ood/near/knn/auroc"] == pytest.approx(metrics["ood/held_out/knn/auroc"])
    for key in ("ood/near/msp/auroc", "ood/far/energy/fpr95", "ood/noise/odin/auroc"):
        assert metrics[key] == before[key]
    assert record["config"]["eval"]["ood"]["detectors"] == [
        str(d) for d in read_record(finished_run)["config"]["eval"]["ood"]["detectors"]
    ]
    assert record["config"]["eval"]["ood"]["hyperparameters"]["knn"] == {"k": 3}
    # Everything that does not depend on the detectors is unchanged.
    for key in ("test/cls/acc", "test/cal/ece", "test/cal/ece_ts", "shift/mean/acc"):
        assert metrics[key] == pytest.approx(before[key], abs=1e-12)
    assert metrics["train/epochs"] == before["train/epochs"]


def test_eval_adds_a_new_detector_set_and_corruption_beside_the_old(finished_run, tmp_path):
    """A run evaluated with few things gets more; ``sweeplab eval`` in this process."""
    run_dir = copy_run(finished_run, tmp_path)
    narrow = [
        "eval.calibration.calibrators=[ts]",
        "eval.shift.corruptions=[contrast]",
        "eval.shift.severities=[1]",
    ]
    msp = "eval.ood.detectors=[msp]"
    assert cli.main(["eval", f"run={run_dir}", "--replace", msp, *narrow]) == 0
    before = read_record(run_dir)
    assert {k.split("/")[2] for k in before["metrics"] if k.startswith("ood/")} == {"msp"}
    assert before["config"]["eval"]["ood"]["detectors"] == ["msp"]

    assert cli.main(["eval", f"run={run_dir}", "eval.ood.detectors=[knn]", *narrow]) == 0
    added = read_record(run_dir)
    assert set(before["metrics"]) < set(added["metrics"])
    assert {k.split("/")[2] for k in added["metrics"] if k.startswith("ood/")} == {"msp", "knn"}
    for key, value in before["metrics"].items():
        if "/knn/" not in key and not key.startswith("perf/eval/"):  # times are this run's
            assert added["metrics"][key] == pytest.approx(value, abs=1e-12), key
    assert added["config"]["eval"]["ood"]["detectors"] == ["msp", "knn"]
    assert set(added["evaluation"]["ood"]["hyperparameters"]) == {"msp", "knn"}
    assert added["evaluation"]["replaced"] is False

    more = ["eval.calibration.calibrators=[vs]", "eval.shift.corruptions=[gaussian_noise]"]
    assert cli.main(["eval", f"run={run_dir}", msp, *more, "eval.shift.severities=[5]"]) == 0
    metrics = read_record(run_dir)["metrics"]
    eval_cfg = read_record(run_dir)["config"]["eval"]
    assert eval_cfg["calibration"]["calibrators"] == ["ts", "vs"]
    assert eval_cfg["shift"]["corruptions"] == ["contrast", "gaussian_noise"]
    assert eval_cfg["shift"]["severities"] == [1, 5]
    assert "test/cal/ece_ts" in metrics and "test/cal/ece_vs" in metrics
    assert metrics["shift/contrast/1/acc"] == added["metrics"]["shift/contrast/1/acc"]
    # The means cover the old and the new corruption alike.
    pair = (metrics["shift/contrast/1/acc"], metrics["shift/gaussian_noise/5/acc"])
    assert metrics["shift/mean/acc"] == pytest.approx(sum(pair) / 2)
    assert metrics["shift/gaussian_noise/mean/acc"] == metrics["shift/gaussian_noise/5/acc"]
    # The OOD detectors' keys were not touched by a calibration and shift evaluation.
    for key in (k for k in added["metrics"] if k.startswith("ood/")):
        assert metrics[key] == added["metrics"][key]


def test_eval_replace_keeps_only_what_it_computed(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    before = read_record(run_dir)["metrics"]
    record = evaluate_run(run_dir, ["eval.ood.detectors=[knn,vim]"], replace=True)
    metrics = record["metrics"]
    assert {k.split("/")[2] for k in metrics if k.startswith("ood/")} == {"knn", "vim"}
    assert record["config"]["eval"]["ood"]["detectors"] == ["knn", "vim"]
    assert len(metrics) < len(before)
    assert record["evaluation"]["replaced"] is True


def test_eval_without_a_cache_falls_back_to_the_checkpoint(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    before = read_record(run_dir)["metrics"]
    shutil.rmtree(run_dir / "eval_cache")
    record = evaluate_run(run_dir, [])
    assert "test" in record["evaluation"]["recomputed"]
    for key, value in before.items():
        if key.startswith(("test/", "val/", "ood/", "shift/")):
            assert record["metrics"][key] == pytest.approx(value, abs=1e-5), key


def test_eval_with_a_new_ood_set_runs_the_model_for_it_only(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    record = evaluate_run(
        run_dir,
        [
            "+eval.ood.sets.uniform={_target_: sweeplab.data.ood_sets.SyntheticNoise,"
            " group: far, kind: uniform, count: 200, seed: 3}",
            "eval.ood.detectors=[msp,energy]",
        ],
    )
    assert record["evaluation"]["recomputed"] == ["ood/uniform/test"]
    assert 0 <= record["metrics"]["ood/uniform/energy/auroc"] <= 1
    assert "ood/far/energy/auroc" in record["metrics"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=3"], "only eval"),
        (["eval.ood.detectors=[nope]"], "unknown"),
        (["eval.calibration.calibrators=[platt]"], "unknown"),
    ],
)
def test_eval_rejects_bad_overrides(finished_run, tmp_path, overrides, message):
    run_dir = copy_run(finished_run, tmp_path)
    with pytest.raises((EvalError, ValueError), match=message):
        evaluate_run(run_dir, overrides)


def test_eval_refuses_runs_that_are_not_complete(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    record = json.loads((run_dir / "record.json").read_text())
    record["status"] = "failed"
    (run_dir / "record.json").write_text(json.dumps(record))
    with pytest.raises(EvalError, match="only complete runs"):
        evaluate_run(run_dir, [])


def test_find_run_by_id_prefix_and_errors(finished_run):
    runs_dir = finished_run.parent.parent
    assert find_run(finished_run.name[:6], runs_dir) == finished_run
    assert find_run(str(finished_run), runs_dir) == finished_run
    with pytest.raises(EvalError, match="no run"):
        find_run("zzzz", runs_dir)


def test_eval_command_line(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path)
    result = run_cli(
        [
            "eval",
            f"run={run_dir.name}",
            f"paths.root_dir={tmp_path}",
            "eval.ood.detectors=[mahalanobis]",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "ood/near/mahalanobis/auroc" in result.stdout
    bad = run_cli(["eval", f"run={run_dir}", "trainer.max_epochs=3"], cwd=tmp_path)
    assert bad.returncode == 1 and "only eval" in bad.stderr


def test_temperature_scaling_lowers_ece_of_an_overconfident_model(make_cfg, store):
    """Guo et al.: a net trained long without regularisation is overconfident; TS fixes it."""
    run_dir = train(
        make_cfg,
        store,
        "backbone=mlp",
        "data.train_subset=100",
        "data.val_fraction=0.3",
        "trainer.max_epochs=100",
        "regime/scheduler=constant",
        "regime.optimizer.lr=0.2",
        "regime.optimizer.weight_decay=0",
        "eval.ood.detectors=[]",
        "eval.shift.corruptions=[]",
        "eval.plots=false",
    )
    metrics = read_record(run_dir)["metrics"]
    assert metrics["val/cal/temperature"] > 1  # overconfident: softened by scaling
    assert metrics["test/cal/ece_ts"] < metrics["test/cal/ece"]
    assert metrics["test/cal/acc_ts"] == pytest.approx(metrics["test/cls/acc"], abs=1e-12)
    assert not any(k.startswith(("ood/", "shift/")) for k in metrics)
    assert math.isfinite(metrics["test/cal/nll_ts"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.held_out_classes=[]", "held_out_classes"),
        ("eval.ood.detectors=[msp,nope]", "eval.ood.detectors"),
        ("eval.calibration.calibrators=[ts,platt]", "eval.calibration.calibrators"),
        ("eval.ood.sets.noise.group=middle", "group"),
        ("eval.shift.corruptions=[fog_of_war]", "eval.shift.corruptions"),
    ],
)
def test_bad_eval_config_fails_before_training(make_cfg, store, override, message):
    cfg = make_cfg(*FAST, *QUICK_EVAL, override)
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg))
    assert outcome.status == "failed"
    assert message in outcome.error
    assert not (outcome.run_dir / "checkpoints" / "last.ckpt").exists()


PAPER_ODIN = {"temperature": 1000.0, "epsilon": 0.0014}


def test_every_phase_is_timed_in_the_record(finished_run):
    metrics = read_record(finished_run)["metrics"]
    phases = ["val", "test", "train_features", "ood_held_out", "ood_noise", "shift", "odin"]
    phases += ["calibration", "detectors", "shift_metrics"]
    for phase in phases:
        assert metrics[f"perf/eval/{phase}_s"] >= 0, phase
    timed = sum(metrics[f"perf/eval/{phase}_s"] for phase in phases)
    assert 0 < timed <= metrics["perf/eval/total_s"]


def test_seeded_subsample_is_seeded_and_of_the_configured_size():
    first = seeded_subsample(1000, 100, seed=0)
    assert torch.equal(first, seeded_subsample(1000, 100, seed=0))
    assert len(first) == 100 and len(first.unique()) == 100
    assert torch.equal(first, first.sort().values) and int(first.max()) < 1000
    assert not torch.equal(first, seeded_subsample(1000, 100, seed=1))
    assert seeded_subsample(1000, None, seed=0) is None
    assert seeded_subsample(100, 100, seed=0) is None  # the whole split: no subsample


def test_shift_and_odin_use_their_subsamples_and_eval_full_every_test_sample(
    finished_run, tmp_path
):
    run_dir = copy_run(finished_run, tmp_path)
    small = ["eval.shift.corruptions=[contrast]", "eval.shift.severities=[3]"]
    small += ["eval.ood.detectors=[msp,odin]", "eval.calibration.calibrators=[ts]"]
    small += ["eval.plots=false"]
    test_labels = torch.load(run_dir / "eval_cache" / "test.pt", weights_only=True)["labels"]
    n = len(test_labels)
    subsampled = [*small, "eval.shift.max_samples=40", "eval.ood.model_max_samples=30"]
    record = evaluate_run(run_dir, subsampled, replace=True)
    shift = torch.load(run_dir / "eval_cache" / "shift.pt", weights_only=True)
    expected = seeded_subsample(n, 40, seed=0)
    assert torch.equal(shift["indices"], expected)
    assert torch.equal(shift["labels"], test_labels[expected])
    assert shift["logits"]["contrast/3"].shape[0] == 40
    assert record["evaluation"]["shift"] == {"samples": 40, "test_samples": n, "seed": 0}
    odin = torch.load(run_dir / "eval_cache" / "odin.pt", weights_only=True)
    assert torch.equal(odin["indices"]["test"], seeded_subsample(n, 30, seed=0))
    assert len(odin["scores"]["test"]) == 30
    assert record["evaluation"]["ood"]["subsampled"]["odin"]["test"] == [30, n]
    assert (
        record["metrics"]["perf/eval/shift_s"] >= 0 and record["metrics"]["perf/eval/odin_s"] >= 0
    )

    record = evaluate_run(run_dir, ["eval=full", *small])
    shift = torch.load(run_dir / "eval_cache" / "shift.pt", weights_only=True)
    assert shift["indices"] is None and torch.equal(shift["labels"], test_labels)
    assert record["evaluation"]["shift"]["samples"] == n
    odin = torch.load(run_dir / "eval_cache" / "odin.pt", weights_only=True)
    assert odin["indices"]["test"] is None and len(odin["scores"]["test"]) == n
    assert record["evaluation"]["ood"]["subsampled"]["odin"] == {}


def test_odin_uses_the_papers_setting_by_default_and_its_grid_under_eval_full(finished_run):
    from sweeplab.evaluation.ood import hyperparameter_candidates
    from tests.conftest import compose_config

    assert hyperparameter_candidates(compose_config([]).eval, "odin") == [PAPER_ODIN]
    assert len(hyperparameter_candidates(compose_config(["eval=full"]).eval, "odin")) > 1
    chosen = read_record(finished_run)["evaluation"]["ood"]["hyperparameters"]["odin"]
    assert chosen == PAPER_ODIN
