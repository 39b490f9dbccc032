"""The `sweeplab` command in subprocesses: sweeps, DDP, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sweeplab.tracking.record import read_record
from tests.conftest import run_cli

QUICK = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def records(root: Path) -> list[dict]:
    return [read_record(p.parent) for p in sorted((root / "runs").glob("*/*/record.json"))]


def test_sweep_writes_one_record_per_job_and_runs_lists_them(tmp_path):
    result = run_cli(
        ["train", "-m", "seed=0,1,2", *QUICK, f"paths.root_dir={tmp_path}"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = records(tmp_path)
    assert sorted(r["config"]["seed"] for r in found) == [0, 1, 2]
    assert all(r["status"] == "complete" for r in found)
    assert all(r["choices"]["backbone"] == "small_cnn" for r in found)
    assert "3 runs — 3 complete" in result.stdout
    # Hydra's files stay inside the store: no stray outputs/ or multirun/.
    assert not {"outputs", "multirun"} & {p.name for p in tmp_path.iterdir()}
    assert list((tmp_path / "runs" / "_sweeps").glob("*/multirun.yaml"))
    for record in found:
        run_dir = tmp_path / "runs" / record["name"] / record["run_id"]
        assert (run_dir / ".hydra" / "config.yaml").exists()

    listing = run_cli(["runs", "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert listing.returncode == 0
    for record in found:
        assert record["run_id"] in listing.stdout
    assert "3 complete" in listing.stdout

    again = run_cli(
        ["train", "-m", "seed=0,1,2", *QUICK, f"paths.root_dir={tmp_path}"], cwd=tmp_path
    )
    assert again.returncode == 0
    assert "3 already complete (skipped)" in again.stdout
    assert len(records(tmp_path)) == 3


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    result = run_cli(
        ["train", "-m", "data.batch_size=0,32", *QUICK, f"paths.root_dir={tmp_path}"], cwd=tmp_path
    )
    assert result.returncode == 1
    statuses = sorted(r["status"] for r in records(tmp_path))
    assert statuses == ["complete", "failed"]
    assert "data.batch_size" in result.stdout


def test_single_failed_run_exits_nonzero_with_the_reason(tmp_path):
    result = run_cli(["train", "data.val_fraction=0", f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "data.val_fraction" in result.stderr
    assert records(tmp_path)[0]["status"] == "failed"


def test_unknown_option_lists_the_valid_ones(tmp_path):
    result = run_cli(["train", "backbone=nope"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Available options in 'backbone'" in result.stderr
    assert "small_cnn" in result.stderr


@pytest.mark.timeout(600)
def test_ddp_cpu_writes_one_record(tmp_path):
    result = run_cli(
        ["train", "trainer=ddp_cpu", *QUICK, f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
        timeout=500,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    found = records(tmp_path)
    assert len(found) == 1
    assert found[0]["status"] == "complete"
    assert found[0]["config"]["trainer"]["devices"] == 2
    import torch

    run_dir = tmp_path / "runs" / found[0]["name"] / found[0]["run_id"]
    cache = torch.load(run_dir / "eval_cache" / "test.pt", weights_only=True)
    # Every test sample once, no sampler padding: the 359 test digits minus the 71 of the
    # held-out classes 8 and 9.
    assert cache["labels"].shape[0] == 288


def test_help_and_unknown_command(tmp_path):
    assert run_cli(["--help"], cwd=tmp_path).returncode == 0
    result = run_cli(["frobnicate"], cwd=tmp_path)
    assert result.returncode == 2 and "unknown command" in result.stderr


def test_train_help_lists_the_groups_and_the_registered_regimes(tmp_path):
    # Its own process: Hydra's help leaves global Hydra state behind in the one it runs in.
    result = run_cli(["train", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    from sweeplab.configs import config_dir
    from sweeplab.regimes.registry import list_regimes

    options = sorted(p.stem for p in (config_dir() / "regime").glob("*.yaml"))
    assert f"regime: {', '.join(options)}" in out  # Hydra's group listing
    names = list_regimes()
    regimes = out.split("== Regimes (regime=<name>) ==")[1]
    listed = [line.split()[0] for line in regimes.splitlines() if line.startswith("  ")]
    assert listed == names and "ensemble" in names and "cross-entropy" in regimes


@pytest.mark.timeout(600)
def test_ddp_jobs_inside_a_sweep_give_one_record_each(tmp_path):
    """Lightning's DDP launcher restarts ``sys.argv`` for its other ranks; inside a Hydra
    multirun that is the whole sweep command, which must not launch the sweep again."""
    result = run_cli(
        ["train", "-m", "trainer=ddp_cpu", "seed=0,1", *QUICK, f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
        timeout=500,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    found = records(tmp_path)
    assert sorted(r["config"]["seed"] for r in found) == [0, 1]
    assert all(r["status"] == "complete" for r in found)
    assert len(list((tmp_path / "runs" / "_sweeps").iterdir())) == 1
    assert "2 runs — 2 complete" in result.stdout

    again = run_cli(
        ["train", "-m", "trainer=ddp_cpu", "seed=0,1", *QUICK, f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
    )
    assert again.returncode == 0
    assert "2 already complete (skipped)" in again.stdout
    assert len(records(tmp_path)) == 2


def test_train_prints_its_results_on_stdout_and_its_progress_on_stderr(tmp_path):
    small_eval = [
        "eval.ood.detectors=[msp]",
        "eval.shift.corruptions=[contrast]",
        "eval.shift.severities=[1]",
        "eval.calibration.calibrators=[ts]",
        "eval.plots=false",
    ]
    args = ["train", "trainer.max_epochs=1", *small_eval, f"paths.root_dir={tmp_path}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    record = records(tmp_path)[0]
    took = r"(\d+ min )?[\d.]+ s"
    header = re.compile(rf"^run {record['run_id']} complete in {took} \(evaluation {took}\): ")
    assert header.match(result.stdout), result.stdout
    assert re.search(r"^  test/cls/acc\s+[\d.]+$", result.stdout, re.MULTILINE), result.stdout
    for progress in ("Epoch", "it/s", "eval test", "[sweeplab] "):
        assert progress not in result.stdout, progress
    for step in ("composing the config", "loading data: digits", "building the model: small_cnn"):
        assert f"[sweeplab] {step}" in result.stderr, step
    assert "loss=" in result.stderr and "val_acc=" in result.stderr
    assert "eval test:" in result.stderr and "eval shift:" in result.stderr
