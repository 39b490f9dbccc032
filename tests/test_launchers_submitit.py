"""submitit and SLURM without a cluster: the submitit_local preset gives the basic launcher's
runs, a killed job resumes, DDP takes its ranks from SLURM's variables, and the slurm preset
writes the sbatch script a 4-GPU job needs."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit", reason="submitit is not installed (pip install sweeplab[slurm])")
pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason="hydra-submitit-launcher is not installed (pip install sweeplab[slurm])",
)

from sweeplab.tracking.record import read_record
from tests.conftest import compose_config, kill_when, run_cli
from tests.test_cli import records
from tests.test_sweeps import QUICK, outcome_files

SUBMITIT = ["hydra/launcher=submitit_local"]
SLURM_TASKS = 2


def by_run_id(root: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in records(root)}


def result_metrics(record: dict) -> dict[str, float]:
    """The metrics a launcher must not change (throughput is wall-clock time)."""
    return {k: v for k, v in record["metrics"].items() if not k.startswith("perf/")}


def processes_mentioning(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (submitit's controllers and tasks do)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            pids.append(int(entry.name))
    return pids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_env(rank: int, port: int) -> dict[str, str]:
    """What srun sets for task ``rank`` of a one-node, 2-task job (and what Lightning reads)."""
    return {
        "SLURM_NTASKS": str(SLURM_TASKS),
        "SLURM_NTASKS_PER_NODE": str(SLURM_TASKS),
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "sweeplab",  # "bash" or "interactive" would turn detection off
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_submitit_local_sweep_gives_the_runs_of_the_basic_launcher(tmp_path, basic_launcher_sweep):
    on_submitit = ["train", "-m", *SUBMITIT, "seed=0,1", *QUICK]
    basic, first = basic_launcher_sweep
    submitit = tmp_path / "submitit"
    submitit.mkdir()
    second = run_cli([*on_submitit, f"paths.root_dir={submitit}"], cwd=submitit, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = "sweep: 2 runs — 2 complete, 0 already complete (skipped), 0 failed"
    assert summary in first.stdout and summary in second.stdout

    expected, found = by_run_id(basic), by_run_id(submitit)
    assert len(found) == 2 and sorted(found) == sorted(expected)
    assert all(r["status"] == "complete" for r in found.values())
    for run_id, record in found.items():
        # The jobs ran in submitit's worker processes, one job folder and result each.
        assert record["provenance"]["argv"][0].endswith(
            os.path.join("submitit", "core", "_submit.py")
        )
        # Same thread count in both processes, so the metrics must be equal, not just close.
        assert record["provenance"]["device"] == expected[run_id]["provenance"]["device"]
        assert result_metrics(record) == result_metrics(expected[run_id]), run_id
    sweep_dir = outcome_files(submitit)[0].parents[1]
    assert len(list(sweep_dir.glob(".submitit/*/*_0_result.pkl"))) == 2
    assert sorted(p.stem for p in outcome_files(submitit)) == sorted(found)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_submitit_job_resumes_from_its_checkpoint(tmp_path):
    epochs = 6
    args = [
        "train",
        "-m",
        *SUBMITIT,
        "seed=0",  # one job: the sweep's processes start in seconds on two shared cores
        f"trainer.max_epochs={epochs}",
        *(a for a in QUICK if not a.startswith("trainer.max_epochs=")),
        f"paths.root_dir={tmp_path}",
    ]
    sizes: list[int] = []

    def checkpoints() -> list[Path]:
        return sorted((tmp_path / "runs").glob("*/*/checkpoints/last.ckpt"))

    def a_checkpoint_is_written() -> bool:
        # Two polls with the same non-zero size: the first last.ckpt is complete.
        found = checkpoints()
        sizes.append(found[0].stat().st_size if found else 0)
        return len(sizes) > 1 and sizes[-1] == sizes[-2] > 0

    try:
        # kill_when SIGKILLs the whole process group: submitit's local controllers and
        # their tasks are started in it (no new session), so they die with the sweep.
        assert kill_when(args, tmp_path, a_checkpoint_is_written, timeout=240)
        deadline = time.time() + 10
        while processes_mentioning(tmp_path) and time.time() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(tmp_path) == [], "submitit jobs outlived the killed sweep"
        (killed,) = (path.parents[1] for path in checkpoints())
        assert read_record(killed)["status"] == "running"

        again = run_cli(args, cwd=tmp_path, timeout=240)
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        for pid in processes_mentioning(tmp_path):  # only ours: their command names tmp_path
            os.kill(pid, signal.SIGKILL)
    assert "sweep: 1 runs — 1 complete, 0 already complete (skipped), 0 failed" in again.stdout
    (record,) = records(tmp_path)
    assert record["status"] == "complete" and record["attempts"] == 2
    assert record["resumed_from_epochs"] and 1 <= record["resumed_from_epochs"][0] < epochs
    run_dir = tmp_path / "runs" / record["name"] / record["run_id"]
    assert run_dir == killed
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    logged = [int(row["epoch"]) for row in rows if row.get("val/cls/acc")]
    assert logged == list(range(epochs)), "each epoch logged exactly once across the kill"


def test_lightning_takes_ddp_ranks_from_slurm_instead_of_relaunching(tmp_path, monkeypatch):
    """The installed Lightning detects SLURM from srun's variables with trainer=ddp_cpu as
    configured, and its launcher then runs the training in this process; without them it
    would start the command again for the other ranks."""
    from hydra.utils import instantiate
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
    from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from sweeplab.train import _is_rank_zero

    # Setting up the strategy as rank 1 sets Lightning's process-wide rank; later tests
    # in this process must see rank 0 again, or every logger turns into a no-op.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # launch() leaves this process's threads alone

    def relaunch(self):
        raise AssertionError("Lightning relaunched the command for the other ranks")

    # Never start pytest again: a relaunch fails the test instead.
    monkeypatch.setattr(_SubprocessScriptLauncher, "_call_children_scripts", relaunch)
    trainer_cfg = compose_config(["trainer=ddp_cpu"]).trainer

    def build():
        return instantiate(trainer_cfg, logger=False, default_root_dir=str(tmp_path))

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    plain = build()
    assert isinstance(plain.strategy.cluster_environment, LightningEnvironment)
    with pytest.raises(AssertionError, match="relaunched"):
        plain.strategy.launcher.launch(lambda: "trained here")

    for key, value in slurm_env(1, free_port()).items():
        monkeypatch.setenv(key, value)
    assert SLURMEnvironment.detect()
    trainer = build()
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert trainer.strategy.launcher.launch(lambda: "trained here") == "trained here"
    assert (trainer.global_rank, trainer.local_rank, trainer.world_size) == (1, 1, SLURM_TASKS)
    assert not _is_rank_zero()  # so this task never writes the record
    # Why the slurm preset asks SLURM for one task per device: Lightning refuses a mismatch.
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    with pytest.raises(ValueError, match="number of tasks per node"):
        build().strategy.launcher.launch(lambda: "trained here")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_single_run_started_as_two_slurm_tasks_trains_like_lightnings_launcher(tmp_path):
    args = ["train", "trainer=ddp_cpu", *QUICK]
    lightning = tmp_path / "lightning"
    lightning.mkdir()
    result = run_cli([*args, f"paths.root_dir={lightning}"], cwd=lightning, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    (expected,) = records(lightning)
    expected_dir = lightning / "runs" / expected["name"] / expected["run_id"]
    # Lightning's own launcher restarts the command for rank 1, with a log of its own.
    assert (expected_dir / "train_ddp_process_1.log").exists()

    run_dir = tmp_path / "slurm" / "run"
    port = free_port()
    logs = [tmp_path / f"task{rank}.log" for rank in range(SLURM_TASKS)]
    tasks = []
    for rank, log in enumerate(logs):
        env = {
            **os.environ,
            "WANDB_MODE": "offline",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",  # as run_cli gave the run above
            **slurm_env(rank, port),
        }
        with log.open("w") as out:
            command = [sys.executable, "-m", "sweeplab", *args]
            command += [f"paths.root_dir={tmp_path / 'slurm'}", f"hydra.run.dir={run_dir}"]
            tasks.append(
                subprocess.Popen(
                    command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            )
    try:
        codes = [task.wait(timeout=240) for task in tasks]
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
                task.wait()
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    # Each task initialised exactly its own SLURM rank; nothing was started for another.
    for rank, output in enumerate(outputs):
        lines = [line for line in output.splitlines() if "Initializing distributed" in line]
        assert len(lines) == 1 and lines[0].endswith(
            f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/{SLURM_TASKS}"
        ), lines
    assert not list(run_dir.glob("train_ddp_process_*.log"))
    # Only rank 0 writes the record, once.
    assert "run complete" in outputs[0] and "run complete" not in outputs[1]
    record = read_record(run_dir)
    assert record["status"] == "complete" and record["attempts"] == 1
    assert record["run_id"] == expected["run_id"]
    assert record["provenance"]["device"] == expected["provenance"]["device"]
    assert result_metrics(record) == result_metrics(expected)


@pytest.mark.parametrize("devices", [4, 2])
def test_slurm_preset_submits_one_task_per_device_with_the_requeue_signal(
    tmp_path, monkeypatch, devices
):
    """The plugin's own launch(), down to sbatch (a stand-in that only answers a job id)."""
    import submitit
    from hydra.utils import instantiate

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks srun is installed
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\necho "Submitted batch job 4242"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # Jobs never run here: their results are not waited for.
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda self: [None])

    sweep_dir = tmp_path / "sweep"
    cfg = compose_config(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            f"trainer.devices={devices}",
            f"paths.root_dir={tmp_path}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        return_hydra_config=True,
    )
    preset = cfg.hydra.launcher
    assert preset.tasks_per_node == preset.gpus_per_node == devices
    launcher = instantiate(preset)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == [None, None]

    assert len(calls.read_text().splitlines()) == 1  # one array job for the sweep
    (script_file,) = sweep_dir.glob(".submitit/4242/4242_submission.sh")
    script = script_file.read_text().splitlines()
    for flag in (
        f"--ntasks-per-node={devices}",
        f"--gpus-per-node={devices}",
        "--nodes=1",
        "--signal=USR2@120",  # submitit checkpoints and requeues on it, 120 s before the limit
        "--time=240",
        "--array=0-1%2",
    ):
        assert f"#SBATCH {flag}" in script, flag
    srun = next(line for line in script if line.startswith("srun "))
    assert srun.endswith(f"-m submitit.core._submit {sweep_dir}/.submitit/%j")
    assert len(list(sweep_dir.glob(".submitit/4242_*/4242_*_submitted.pkl"))) == 2
