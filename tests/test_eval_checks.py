"""Bad ``eval.*`` values end as one ``sweeplab:`` line naming the key, the value and what is
allowed, with exit code 2, for ``sweeplab eval`` and for ``sweeplab train`` on a complete run;
the run's record is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeplab import cli
from tests.conftest import run_cli, run_in_store

TINY = [
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "eval.shift.corruptions=[gaussian_noise]",
    "eval.shift.severities=[1]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
]


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    outcome = run_in_store(tmp_path_factory.mktemp("store"), TINY)
    assert outcome.status == "complete", outcome.error
    return outcome.run_dir


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("sweeplab: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("eval.calibration.n_bins=0", ["eval.calibration.n_bins", "positive integer", "0"]),
        ("eval.ood.detectors=[msp,nope]", ["eval.ood.detectors", "'nope'", "energy"]),
        ("eval.shift.severities=[1,7]", ["eval.shift.severities", "1..5", "7"]),
        ("eval.calibration.calibrators=[platt]", ["eval.calibration.calibrators", "'platt'", "ts"]),
    ],
    ids=["n_bins", "detector", "severity", "calibrator"],
)
def test_eval_names_a_bad_value_on_one_line(complete_run, capsys, override, named):
    """In this process (a new one spends most of its time importing torch); the command line
    as a user types it is the test below."""
    before = (complete_run / "record.json").read_bytes()
    assert cli.main(["eval", f"run={complete_run}", override]) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    for text in named:
        assert text in line
    assert not captured.out
    assert (complete_run / "record.json").read_bytes() == before


def test_eval_command_exits_2_with_one_line(complete_run):
    result = run_cli(["eval", f"run={complete_run}", "eval.shift.severities=[0]"], cwd=complete_run)
    assert result.returncode == 2, result.stderr[-3000:]
    assert _one_line(result.stderr) == (
        "sweeplab: eval.shift.severities[0] must be an integer in 1..5, got 0"
    )


def test_train_checks_eval_also_when_the_run_is_complete(complete_run):
    root = complete_run.parents[2]
    args = ["train", *TINY, f"paths.root_dir={root}"]
    before = (complete_run / "record.json").read_bytes()
    bad = run_cli([*args, "eval.ood.fit_max_samples=-3"], cwd=root, timeout=120)
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "sweeplab: eval.ood.fit_max_samples must be a positive integer, got -3" in bad.stderr
    assert "skipped" not in bad.stderr
    assert (complete_run / "record.json").read_bytes() == before
