"""SLURM's requeue signal: SIGUSR1 before the time limit requeues the job, and the requeued job
(the same command, so the same run directory) resumes the run to the metrics of an
uninterrupted one. SLURM is faked by its variables and an ``scontrol`` that logs its call."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from sweeplab.tracking.record import read_record
from tests.conftest import run_cli, start_sweeplab
from tests.test_sweeps import QUICK

JOB_ID = "4242"
ARGS = ["train", *QUICK, "trainer.max_epochs=3"]
RESUME_HINT = "relaunch to resume from checkpoints/last.ckpt"


def slurm_env(tmp_path: Path) -> dict[str, str]:
    """What a one-task batch job sees, with an ``scontrol`` first on PATH that logs its call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    return {
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NAME": "sweeplab",  # "bash" or "interactive" would turn detection off
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }


def first_checkpoint(root: Path) -> Path | None:
    """The run directory once its first ``last.ckpt`` is fully written (it loads)."""
    for path in (root / "runs").glob("*/*/checkpoints/last.ckpt"):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        return path.parents[1]
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigusr1_requeues_and_the_requeued_job_resumes_to_identical_metrics(tmp_path):
    reference_root, root = tmp_path / "reference", tmp_path / "slurm"
    reference_root.mkdir()
    root.mkdir()
    env = slurm_env(tmp_path)
    args = [*ARGS, f"paths.root_dir={root}"]
    process = start_sweeplab(args, root, env)
    try:
        deadline, run_dir = time.time() + 120, None
        while time.time() < deadline and process.poll() is None and run_dir is None:
            run_dir = first_checkpoint(root)
            time.sleep(0.02)
        assert run_dir is not None and process.poll() is None, "no checkpoint while it ran"
        process.send_signal(signal.SIGUSR1)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # SLURM stops a requeued job with SIGTERM
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB_ID]
    assert code == 128 + signal.SIGUSR1
    record = read_record(run_dir)
    assert record["status"] == "failed"
    assert record["error"] == f"interrupted by SIGUSR1 (SLURM's requeue signal); {RESUME_HINT}"
    assert not list(run_dir.rglob("hpc_ckpt_*")), "Lightning's mid-step checkpoint was written"

    requeued = run_cli(args, cwd=root, env=env)  # SLURM reruns the job's command
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "complete" and record["error"] is None
    assert record["attempts"] == 2
    assert 1 <= record["resumed_from_epochs"][0] < 3
    assert not list(run_dir.rglob("hpc_ckpt_*"))

    reference = run_cli([*ARGS, f"paths.root_dir={reference_root}"], cwd=reference_root)
    assert reference.returncode == 0, reference.stderr[-3000:]
    (expected,) = [read_record(p.parent) for p in reference_root.glob("runs/*/*/record.json")]
    assert expected["run_id"] == record["run_id"]
    for key in ("test/cls/acc", "test/cls/nll"):
        assert record["metrics"][key] == expected["metrics"][key], key
