"""The `ray` launcher preset end to end: local Ray, a failing job, joining a running cluster.

Ray binds to the machine's outward address whatever it is told, so every Ray command
here runs in namespaces of its own: a network one with only loopback (Ray reaches
nothing else) and a PID one that ends, with the command, whatever Ray left running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_cli import records
from tests.test_sweeps import QUICK, outcome_files

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

# --kill-child: if the test kills unshare on a timeout, the namespace goes with it.
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
LEFT_RUNNING = "left running in the namespace:"

# Any process but PID 1 (the shell) and this check still alive after the command is one
# Ray failed to stop; zombies have no command line and are not counted.
_CHECK_NOTHING_LEFT = f"""
import os, sys, time
def alive():
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        if int(pid) in (1, os.getpid()):
            continue
        try:
            with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd:
            found.append(pid + " " + cmd[:160])
    return found
deadline = time.time() + 15
while (left := alive()) and time.time() < deadline:
    time.sleep(0.5)
if left:
    print({LEFT_RUNNING!r}, *left, sep="\\n  ", file=sys.stderr)
    sys.exit(1)
"""

# Loopback up, an optional head node (for address=auto), the command, then the check.
_IN_NAMESPACE = """
ip link set lo up || exit 90
if [ -n "$SWEEPLAB_TEST_RAY_HEAD" ]; then
  "$RAY" start --head --num-cpus=2 --include-dashboard=false --disable-usage-stats >&2 || exit 91
fi
"$@"
rc=$?
if [ -n "$SWEEPLAB_TEST_RAY_HEAD" ]; then "$RAY" stop >/dev/null 2>&1; fi
if ! "$PY" -c "$CHECK"; then "$RAY" stop --force >&2; exit 98; fi
exit $rc
"""

# A local Ray for the test: two CPUs (one per job), no dashboard.
LOCAL_RAY = [
    "hydra/launcher=ray",
    "hydra.launcher.ray.init.num_cpus=2",
    "+hydra.launcher.ray.init.include_dashboard=false",
]


@pytest.fixture(scope="module")
def _namespaces() -> None:
    """Skip, saying why, where a loopback-only namespace cannot be made."""
    try:
        probe = subprocess.run(
            [*NAMESPACE, "sh", "-c", "ip link set lo up"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Ray tests need `unshare` and `ip` for a loopback-only namespace: {exc}")
    if probe.returncode != 0:
        pytest.skip(
            "Ray tests run Ray in a loopback-only network namespace, and "
            f"`{' '.join(NAMESPACE)}` is not permitted here: {probe.stderr.strip()}"
        )


@pytest.fixture
def ray_tmp(_namespaces):
    """Ray's session files, in a short path (its socket names must fit) removed afterwards."""
    path = tempfile.mkdtemp(prefix="slray-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def sweep_on_ray(
    args: list[str], cwd: Path, ray_tmp: Path, head: bool = False, timeout: float = 240
) -> subprocess.CompletedProcess:
    """``python -m sweeplab …`` in the namespaces, with run_cli's environment."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(ray_tmp),
        "PY": sys.executable,
        "RAY": str(Path(sys.executable).with_name("ray")),
        "CHECK": _CHECK_NOTHING_LEFT,
        "SWEEPLAB_TEST_RAY_HEAD": "1" if head else "",
    }
    for key in ("WANDB_API_KEY", "RAY_ADDRESS"):
        env.pop(key, None)
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [*NAMESPACE, "sh", "-c", _IN_NAMESPACE, "sh", sys.executable, "-m", "sweeplab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert LEFT_RUNNING not in result.stderr, result.stderr[-3000:]
    assert result.returncode not in (90, 91, 98), result.stderr[-3000:]
    return result


def _without_timing(metrics: dict) -> dict:
    """Metrics minus throughput, which measures the machine's speed, not the run."""
    return {key: value for key, value in metrics.items() if not key.startswith("perf/")}


def _rooted(config: dict, root: Path) -> str:
    """The config with its store's root path named alike, so two stores compare."""
    return json.dumps(config, sort_keys=True).replace(str(root), "<root>")


@pytest.mark.timeout(300)
def test_ray_sweep_gives_the_runs_of_the_basic_launcher(tmp_path, ray_tmp, basic_launcher_sweep):
    """Same overrides on Hydra's basic launcher and on a local Ray: same runs, same numbers."""
    sweep = ["train", "-m", "seed=0,1", *QUICK]
    basic_root, _ = basic_launcher_sweep
    ray_root = tmp_path / "ray"
    on_ray = sweep_on_ray([*sweep, *LOCAL_RAY, f"paths.root_dir={ray_root}"], ray_root, ray_tmp)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "Started a local Ray instance" in on_ray.stderr
    assert "(_run_job pid=" in on_ray.stdout + on_ray.stderr  # the jobs ran on Ray's workers

    expected = {r["run_id"]: r for r in records(basic_root)}
    found = {r["run_id"]: r for r in records(ray_root)}
    assert len(expected) == 2 and sorted(found) == sorted(expected)
    for run_id, record in found.items():
        assert record["status"] == "complete" and record["error"] is None
        assert _rooted(record["config"], ray_root) == _rooted(
            expected[run_id]["config"], basic_root
        )
        assert record["choices"] == expected[run_id]["choices"]
        assert record["metrics"]["test/cls/acc"] > 0
        assert set(record["metrics"]) == set(expected[run_id]["metrics"])
        assert _without_timing(record["metrics"]) == _without_timing(expected[run_id]["metrics"])
    outcomes = [json.loads(p.read_text()) for p in outcome_files(ray_root)]
    assert sorted(o["run_id"] for o in outcomes) == sorted(found)
    assert all(o["status"] == "complete" for o in outcomes)
    assert "sweep: 2 runs — 2 complete, 0 already complete (skipped), 0 failed" in on_ray.stdout


@pytest.mark.timeout(300)
def test_ray_sweep_joins_a_running_cluster_and_a_failing_job_fails_only_itself(tmp_path, ray_tmp):
    """address=auto joins a `ray start` cluster (the plugin's own default object store size
    makes ray.init refuse to join; the preset's null avoids it); a job that fails on a Ray
    worker is recorded and counted, the other one completes, and the command fails."""
    result = sweep_on_ray(
        [
            "train",
            "-m",
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.address=auto",
            "regime.optimizer.lr=-1,0.01",
            *QUICK,
            f"paths.root_dir={tmp_path}",
        ],
        tmp_path,
        ray_tmp,
        head=True,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Connected to Ray cluster" in result.stderr
    assert "Started a local Ray instance" not in result.stderr
    found = {r["config"]["regime"]["optimizer"]["lr"]: r for r in records(tmp_path)}
    assert sorted(found) == [-1, 0.01]
    assert found[0.01]["status"] == "complete" and found[0.01]["metrics"]["test/cls/acc"] > 0
    failed = found[-1]
    assert failed["status"] == "failed"
    assert "lr must be > 0" in failed["error"]
    assert "ValueError" in failed["traceback"]
    assert "sweep: 2 runs — 1 complete, 0 already complete (skipped), 1 failed" in result.stdout
    failed_dir = tmp_path / "runs" / failed["name"] / failed["run_id"]
    failed_line = next(line for line in result.stdout.splitlines() if line.startswith("  failed: "))
    assert str(failed_dir) in failed_line
    assert "lr must be > 0" in failed_line
    outcomes = {
        o["run_id"]: o for o in map(json.loads, map(Path.read_text, outcome_files(tmp_path)))
    }
    assert outcomes[failed["run_id"]]["status"] == "failed"
    assert outcomes[failed["run_id"]]["error"] == failed["error"]
