"""The Optuna search: trials are runs, the study lives in the run store, a relaunch continues it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sweeplab.search
from sweeplab.search import SearchError, search
from tests.conftest import kill_when, run_cli

QUICK = [
    "hparams_search=digits_optuna",
    "trainer.max_epochs=1",
    "data.val_fraction=0.2",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "trainer.enable_progress_bar=false",
]
STUDY = "digits_sgd_lr_wd"


def records(root: Path) -> list[dict]:
    found = []
    for path in sorted((root / "runs").glob("*/*/record.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def load(root: Path) -> optuna.Study:
    storage = f"sqlite:///{root}/runs/_optuna/{STUDY}.db"
    return optuna.load_study(study_name=STUDY, storage=storage)


def test_search_trials_are_runs_and_a_relaunch_adds_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [*QUICK, "hparams_search.n_trials=2", f"paths.root_dir={tmp_path}"]
    study = search(overrides)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    found = records(tmp_path)
    assert len(found) == 2 and all(r["status"] == "complete" for r in found)
    for trial in complete:
        record = next(
            r
            for r in found
            if r["config"]["regime"]["optimizer"]["lr"]
            == pytest.approx(trial.params["regime.optimizer.lr"])
        )
        assert trial.value == pytest.approx(record["metrics"]["val/cls/nll"])
    again = search(overrides)
    assert len(again.trials) == 2  # the study is complete: nothing new is asked


@pytest.mark.timeout(300)
def test_a_killed_search_continues_where_it_stopped(tmp_path):
    args = ["search", *QUICK, "hparams_search.n_trials=3", f"paths.root_dir={tmp_path}"]
    statuses: list[str] = []

    def one_complete_one_running() -> bool:
        statuses[:] = sorted(r["status"] for r in records(tmp_path))
        return "complete" in statuses and "running" in statuses

    kill_when(args, tmp_path, one_complete_one_running)
    assert "complete" in statuses and "running" in statuses, statuses
    assert any(t.state == TrialState.RUNNING for t in load(tmp_path).trials)

    again = run_cli(args, cwd=tmp_path, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load(tmp_path).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not any(t.state == TrialState.RUNNING for t in trials)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1
    # The interrupted trial's parameters were tried again: its run finished, not restarted.
    retried = [t for t in trials if t.params == interrupted[0].params and t.state.is_finished()]
    assert len(retried) == 2
    found = records(tmp_path)
    assert len(found) == 3 and all(r["status"] == "complete" for r in found)
    assert len({r["run_id"] for r in found}) == 3
    assert "best #" in again.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hparams_search.direction=sideways", "direction"),
        ("hparams_search.max_failure_rate=0", "max_failure_rate"),
        ("hparams_search.n_trials=0", "n_trials"),
    ],
)
def test_impossible_search_settings_are_refused(tmp_path, override, message):
    with pytest.raises(SearchError, match=message):
        search([*QUICK, override, f"paths.root_dir={tmp_path}"])


def test_search_without_a_preset_says_how_to_choose_one(tmp_path):
    result = run_cli(["search", f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 1 and "hparams_search=digits_optuna" in result.stderr


@pytest.fixture
def no_training(monkeypatch):
    """Trials told a value made from their parameters, without a run."""

    def fake(base, params, metric):
        return sum(params.values()), "not trained"

    monkeypatch.setattr(sweeplab.search, "run_trial", fake)


def test_a_study_belongs_to_its_base_and_space(tmp_path, no_training):
    base = [*QUICK, f"paths.root_dir={tmp_path}"]
    assert len(search([*base, "hparams_search.n_trials=2"]).trials) == 2
    # The same search continues its study: n_trials and flags that do not change results
    # may differ.
    more = [*base, "hparams_search.n_trials=3", "trainer.enable_progress_bar=true"]
    assert len(search(more).trials) == 3

    with pytest.raises(SearchError) as refused:
        search([*base, "backbone=mlp", "hparams_search.n_trials=3"])
    message = str(refused.value)
    assert "\n" not in message
    assert f"study {STUDY}" in message and "backbone=mlp" in message
    assert message.count("base [") == 2  # the study's base and this one
    assert f"hparams_search.study_name={STUDY}_" in message
    other_metric = "hparams_search.metric=val/cal/ece"
    with pytest.raises(SearchError, match=r"space .*val/cls/nll.*this search has space .*val/cal"):
        search([*base, other_metric])
    assert len(load(tmp_path).trials) == 3  # nothing was added to the study

    # The suggested name keeps the other search apart, and is itself continued.
    name = message.rpartition("hparams_search.study_name=")[2]
    mlp = [*base, "backbone=mlp", f"hparams_search.study_name={name}", "hparams_search.n_trials=1"]
    study = search(mlp)
    assert study.study_name == name and len(study.trials) == 1
    assert len(search([*mlp[:-1], "hparams_search.n_trials=2"]).trials) == 2
    assert len(load(tmp_path).trials) == 3


def test_a_study_without_a_recorded_base_is_not_continued(tmp_path, no_training):
    storage = f"sqlite:///{tmp_path}/runs/_optuna/{STUDY}.db"
    (tmp_path / "runs" / "_optuna").mkdir(parents=True)
    old = optuna.create_study(study_name=STUDY, storage=storage)
    old.add_trial(
        optuna.trial.create_trial(
            params={"regime.optimizer.lr": 0.1},
            distributions={"regime.optimizer.lr": optuna.distributions.FloatDistribution(0, 1)},
            value=0.5,
        )
    )
    with pytest.raises(SearchError, match="without a record of its base"):
        search([*QUICK, f"paths.root_dir={tmp_path}"])
