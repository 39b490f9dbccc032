"""The Optuna search: trials are runs, the study lives in the run store, a relaunch continues it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

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
