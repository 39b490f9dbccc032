"""SIGKILL at any phase (training, evaluation, a sweep between jobs): the relaunch
finishes what is missing and its results equal those of a run never interrupted."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from sweeplab.tracking.layout import EVAL_CACHE_DIR
from sweeplab.tracking.record import read_record
from tests.conftest import kill_when, run_cli, run_in_store
from tests.test_cli import records
from tests.test_sweeps import QUICK


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "runs").glob("*/*") if not p.parent.name.startswith("_"))


def test_kill_after_first_checkpoint_then_resume(tmp_path):
    """SIGKILL a run once last.ckpt exists; the relaunch finishes from that checkpoint."""
    args = [
        "train",
        "trainer.max_epochs=12",
        "trainer.enable_progress_bar=false",
        f"paths.root_dir={tmp_path}",
    ]

    def checkpoints() -> list[Path]:
        return list((tmp_path / "runs").glob("*/*/checkpoints/last.ckpt"))

    assert kill_when(args, tmp_path, lambda: bool(checkpoints()), timeout=120)
    ckpts = checkpoints()
    run_dir = ckpts[0].parents[1]
    killed = read_record(run_dir)
    assert killed["status"] == "running"

    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "complete"
    assert record["attempts"] == 2
    assert record["resumed_from_epochs"] and 1 <= record["resumed_from_epochs"][0] < 12
    assert record["metrics"]["test/cls/acc"] >= 0.9
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    epochs = [int(row["epoch"]) for row in rows if row.get("val/cls/acc")]
    assert epochs == list(range(12)), "each epoch logged exactly once across the kill"

    # Resuming is exact: the same metrics as a run that was never interrupted.
    fresh = tmp_path / "fresh"
    result = run_cli([*args[:-1], f"paths.root_dir={fresh}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    uninterrupted = read_record(fresh / "runs" / run_dir.parent.name / run_dir.name)
    for key in ("test/cls/acc", "test/cls/nll", "val/cls/acc"):
        assert record["metrics"][key] == uninterrupted["metrics"][key], key


# Short training, and an evaluation with OOD sets, shift, a calibrator and ODIN (which
# runs the model again), so that the kill lands with the eval cache half written.
IN_EVALUATION = [
    "trainer.max_epochs=2",
    "data.val_fraction=0.2",
    "eval.shift.corruptions=[gaussian_noise,contrast]",
    "eval.shift.severities=[1,5]",
    "eval.ood.detectors=[msp,energy,knn,odin]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]


@pytest.mark.timeout(240)
def test_kill_during_evaluation_then_relaunch_gives_the_uninterrupted_metrics(tmp_path, one_thread):
    """The process is killed in evaluation; the relaunch (in-process: resuming needs no
    fresh process) evaluates again and records what a run never killed records."""
    killed_store, fresh_store = tmp_path / "killed", tmp_path / "fresh"
    args = ["train", *IN_EVALUATION, f"paths.root_dir={killed_store}"]

    def evaluating() -> bool:
        return any((killed_store / "runs").glob(f"*/*/{EVAL_CACHE_DIR}"))

    held = kill_when(args, tmp_path, evaluating, timeout=150)
    (run_dir,) = run_dirs(killed_store)
    killed = read_record(run_dir) or {}
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    state = (killed.get("status"), killed.get("error"), files)
    assert held and killed["status"] == "running", state
    assert "test/cls/acc" not in killed["metrics"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1, "training had finished: the kill came in evaluation"

    relaunched = run_in_store(killed_store, IN_EVALUATION)
    assert relaunched.status == "complete", relaunched.error
    assert relaunched.run_dir == run_dir
    record = read_record(run_dir)
    assert record["status"] == "complete" and record["error"] is None
    assert record["attempts"] == 2 and record["resumed_from_epochs"] == [2]

    fresh = run_in_store(fresh_store, IN_EVALUATION)
    assert fresh.status == "complete", fresh.error
    assert fresh.run_dir.name == run_dir.name
    uninterrupted = read_record(fresh.run_dir)["metrics"]

    metrics = record["metrics"]
    ood = sorted(k for k in uninterrupted if k.startswith("ood/"))
    shift = sorted(k for k in uninterrupted if k.startswith("shift/"))
    assert "ood/near/odin/auroc" in ood and "shift/gaussian_noise/5/acc" in shift
    for key in ["test/cls/acc", "test/cls/nll", "test/cal/ece_ts", *ood, *shift]:
        assert metrics.get(key) == uninterrupted[key], key
    assert sorted(k for k in metrics if k.startswith(("ood/", "shift/"))) == ood + shift


@pytest.mark.timeout(300)
def test_killed_sweep_relaunch_runs_only_what_is_missing(tmp_path):
    args = ["train", "-m", "seed=0,1,2", *QUICK, f"paths.root_dir={tmp_path}"]
    statuses: list[str] = []

    def one_complete_one_running() -> bool:
        statuses[:] = sorted(r["status"] for r in records(tmp_path) if r is not None)
        return "complete" in statuses and "running" in statuses

    kill_when(args, tmp_path, one_complete_one_running)
    assert "complete" in statuses and "running" in statuses, statuses
    killed = [r["run_id"] for r in records(tmp_path) if r["status"] == "running"]
    assert len(killed) == 1

    again = run_cli(args, cwd=tmp_path, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    found = records(tmp_path)
    assert len(found) == 3 and len(run_dirs(tmp_path)) == 3
    assert len({r["run_id"] for r in found}) == 3
    assert sorted(r["config"]["seed"] for r in found) == [0, 1, 2]
    assert all(r["status"] == "complete" and r["metrics"]["test/cls/acc"] > 0 for r in found)
    resumed = next(r for r in found if r["run_id"] == killed[0])
    assert resumed["attempts"] == 2
    completed_before = statuses.count("complete")
    assert (
        f"3 runs — {3 - completed_before} complete, "
        f"{completed_before} already complete (skipped), 0 failed"
    ) in again.stdout
    assert str(tmp_path / "runs") in again.stdout
