"""Signals: SIGTERM (``timeout``, SLURM, preemption) ends a run as SIGINT does, recorded as
interrupted by that signal, with exit code 128 + signal, and a relaunch resumes it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pytorch_lightning.utilities.exceptions import SIGTERMException

from sweeplab import train
from sweeplab.tracking.record import read_record
from tests.conftest import compose_config, run_cli, start_sweeplab

ARGS = [
    "train",
    "trainer.max_epochs=12",
    "trainer.enable_progress_bar=false",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
]
RESUME_HINT = "relaunch to resume from checkpoints/last.ckpt"


def _signal_when(args: list[str], cwd: Path, ready, signum: int, timeout: float = 120) -> int:
    """Start ``python -m sweeplab …``, send ``signum`` to it (not to its group, as ``timeout``
    does) once ``ready()`` holds, and return its exit code."""
    process = start_sweeplab(args, cwd)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and process.poll() is None and not ready():
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it was signalled"
        process.send_signal(signum)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.timeout(180)
def test_sigterm_mid_training_is_recorded_exits_143_and_resumes(tmp_path):
    args = [*ARGS, f"paths.root_dir={tmp_path}"]

    def training() -> bool:
        return any((tmp_path / "runs").glob("*/*/checkpoints/last.ckpt"))

    assert _signal_when(args, tmp_path, training, signal.SIGTERM) == 128 + signal.SIGTERM
    (run_dir,) = [p.parents[1] for p in (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")]
    record = read_record(run_dir)
    assert record["status"] == "failed"
    assert record["error"] == f"interrupted by SIGTERM; {RESUME_HINT}"

    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "complete" and record["error"] is None
    assert record["attempts"] == 2
    assert record["resumed_from_epochs"] and 1 <= record["resumed_from_epochs"][0] < 12


def test_lightning_sigterm_exception_ends_as_our_sigterm(tmp_path, monkeypatch):
    """Lightning's loops raise SIGTERMException when its own SIGTERM handler ran alone;
    it ends in the same record and exit code as the signal caught by ours."""
    cfg = compose_config([f"paths.root_dir={tmp_path}", "trainer.enable_progress_bar=false"])

    def stopped_by_lightning(*args, **kwargs):
        raise SIGTERMException()

    monkeypatch.setattr(train, "_fit_and_evaluate", stopped_by_lightning)
    run_dir = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train.Interrupted) as raised:
        train.execute(cfg, run_dir)
    assert raised.value.exit_code == 143
    record = read_record(run_dir)
    assert record["status"] == "failed"
    assert record["error"] == f"interrupted by SIGTERM; {RESUME_HINT}"
    assert signal.getsignal(signal.SIGTERM) is before, "the run's handler is removed at its end"


def test_a_signal_outside_fit_is_recorded_with_its_name(tmp_path, monkeypatch):
    cfg = compose_config([f"paths.root_dir={tmp_path}", "trainer.enable_progress_bar=false"])

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this returns

    monkeypatch.setattr(train, "_fit_and_evaluate", signalled)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.Interrupted) as raised:
        train.execute(cfg, tmp_path / "run")
    assert raised.value.exit_code == 130
    assert read_record(tmp_path / "run")["error"] == f"interrupted by SIGINT; {RESUME_HINT}"
    assert signal.getsignal(signal.SIGINT) is before
