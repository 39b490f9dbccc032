"""Sweep outcomes on any launcher: the summary, `sweeplab runs --by-sweep`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeplab.tracking.record import new_record, write_record
from sweeplab.tracking.runs_cli import main as runs_main
from sweeplab.tracking.sweeps import OUTCOMES_DIR, write_outcome
from tests.conftest import FAST, run_cli
from tests.test_cli import records

QUICK = [
    *FAST,
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "trainer.enable_progress_bar=false",
]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def outcome_files(root: Path) -> list[Path]:
    return sorted((root / "runs" / "_sweeps").glob(f"*/{OUTCOMES_DIR}/*.json"))


@pytest.mark.timeout(300)
def test_joblib_sweep_writes_every_outcome_and_prints_the_summary(tmp_path):
    result = run_cli(
        ["train", "-m", *JOBLIB, "seed=0,1", *QUICK, f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = records(tmp_path)
    assert sorted(r["config"]["seed"] for r in found) == [0, 1]
    assert all(r["status"] == "complete" for r in found)
    outcomes = [json.loads(p.read_text()) for p in outcome_files(tmp_path)]
    assert sorted(o["run_id"] for o in outcomes) == sorted(r["run_id"] for r in found)
    assert all(o["status"] == "complete" and o["error"] is None for o in outcomes)
    assert "sweep: 2 runs — 2 complete, 0 already complete (skipped), 0 failed" in result.stdout
    sweep_dir = outcome_files(tmp_path)[0].parents[1]
    assert str(sweep_dir) in result.stdout


@pytest.mark.timeout(300)
def test_failing_job_under_joblib_is_named_and_fails_the_command(tmp_path):
    result = run_cli(
        [
            "train",
            "-m",
            *JOBLIB,
            "regime.optimizer.lr=-1,0.01",
            *QUICK,
            f"paths.root_dir={tmp_path}",
        ],
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    found = {r["config"]["regime"]["optimizer"]["lr"]: r for r in records(tmp_path)}
    assert found[0.01]["status"] == "complete"
    assert found[-1]["status"] == "failed"
    assert "sweep: 2 runs — 1 complete, 0 already complete (skipped), 1 failed" in result.stdout
    failed_dir = tmp_path / "runs" / found[-1]["name"] / found[-1]["run_id"]
    failed_line = next(line for line in result.stdout.splitlines() if line.startswith("  failed: "))
    assert str(failed_dir) in failed_line
    assert "lr must be > 0" in failed_line

    runs_dir = str(tmp_path / "runs")
    listing = run_cli(["runs", "--runs-dir", runs_dir, "--status", "failed"], cwd=tmp_path)
    assert listing.returncode == 0
    assert found[-1]["run_id"] in listing.stdout
    assert "lr must be > 0" in listing.stdout
    by_sweep = run_cli(
        ["runs", "--runs-dir", runs_dir, "--by-sweep", "--format", "json"], cwd=tmp_path
    )
    (sweep,) = json.loads(by_sweep.stdout)
    assert (sweep["runs"], sweep["complete"], sweep["failed"]) == (2, 1, 1)


def _fake_run(runs_dir: Path, run_id: str, status: str, error: str | None = None) -> Path:
    run_dir = runs_dir / "demo" / run_id
    run_dir.mkdir(parents=True)
    record = new_record(run_id, "demo", {"seed": 0}, [f"seed={run_id}"], {})
    record.update(status=status, error=error)
    write_record(run_dir, record)
    return run_dir


def test_runs_by_sweep_lists_each_sweep_with_its_counts(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    first = runs_dir / "_sweeps" / "2026-01-02_03-04-05"
    second = runs_dir / "_sweeps" / "2026-01-03_00-00-00"
    for run_id, status, error in (("a1", "complete", None), ("b2", "failed", "ValueError: no")):
        write_outcome(first, _fake_run(runs_dir, run_id, status, error), status, error)
    write_outcome(second, runs_dir / "demo" / "a1", "skipped", None)
    write_outcome(second, _fake_run(runs_dir, "c3", "complete"), "complete", None)
    _fake_run(runs_dir, "d4", "complete")  # launched on its own, in no sweep

    assert runs_main(["--runs-dir", str(runs_dir), "--by-sweep"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "sweep",
        "started",
        "runs",
        "complete",
        "skipped",
        "failed",
        "running_elsewhere",
    ]
    assert lines[2].split() == [
        "2026-01-02_03-04-05",
        "2026-01-02",
        "03:04:05",
        "2",
        "1",
        "0",
        "1",
        "0",
    ]
    assert lines[3].split() == [
        "2026-01-03_00-00-00",
        "2026-01-03",
        "00:00:00",
        "2",
        "1",
        "1",
        "0",
        "0",
    ]
    assert "2 sweeps in" in lines[-1]

    assert runs_main(["--runs-dir", str(runs_dir), "--sweep", second.name]) == 0
    out = capsys.readouterr().out
    assert "a1" in out and "c3" in out and "b2" not in out and "d4" not in out
    assert (
        runs_main(["--runs-dir", str(runs_dir), "--sweep", first.name, "--status", "failed"]) == 0
    )
    out = capsys.readouterr().out
    assert "b2" in out and "ValueError: no" in out and "a1" not in out
    assert runs_main(["--runs-dir", str(runs_dir), "--sweep", "nope"]) == 2


def test_runs_by_sweep_on_a_store_without_sweeps(tmp_path, capsys):
    assert runs_main(["--runs-dir", str(tmp_path), "--by-sweep"]) == 0
    assert "No sweeps" in capsys.readouterr().out
