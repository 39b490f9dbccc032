"""One trainer per run: the run lock, and what `sweeplab train` does when a run is locked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sweeplab import cli
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import read_record
from sweeplab.tracking.run_lock import LOCK_FILE, Holder, RunLock, read_holder
from sweeplab.tracking.sweeps import RUNNING_ELSEWHERE, Sweep, report, write_outcome
from tests.conftest import compose_config, message_lines
from tests.test_sweeps import QUICK


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(run_dir: Path, *, host: str, pid: int, age_s: float, token: str = "old") -> None:
    beat = time.time() - age_s
    holder = Holder(host, pid, "2026-01-01T00:00:00+00:00", "then", beat, token)
    (run_dir / LOCK_FILE).write_text(json.dumps(holder.__dict__), encoding="utf-8")


def test_acquire_and_release(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.acquire() is None and lock.still_held()
        holder = read_holder(tmp_path / LOCK_FILE)
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        assert holder.started and holder.heartbeat and holder.heartbeat_unix <= time.time()
    assert not (tmp_path / LOCK_FILE).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp file left behind


def test_second_acquirer_sees_the_holder(tmp_path):
    with RunLock(tmp_path) as first, RunLock(tmp_path) as second:
        assert first.acquire() is None
        other = second.acquire("skip")
        assert other is not None and other.token == first.token
        assert other.describe() == (
            f"host {socket.gethostname()}, pid {os.getpid()}, since {first.holder.started}"
        )
        assert not second.still_held() and first.still_held()


def test_release_only_by_the_holder(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire() is None
    assert second.acquire() is not None
    second.release()
    assert first.still_held()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_dead_holder_on_this_host_is_stale(tmp_path):
    _write_lock(tmp_path, host=socket.gethostname(), pid=_dead_pid(), age_s=0)
    with RunLock(tmp_path) as lock:
        assert lock.acquire("skip") is None and lock.still_held()


def test_a_live_holder_on_another_host_is_stale_only_after_the_timeout(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=_dead_pid(), age_s=5)
    with RunLock(tmp_path, stale_after_s=60) as lock:
        other = lock.acquire("skip")
        assert other is not None and other.host == "elsewhere"
    _write_lock(tmp_path, host="elsewhere", pid=os.getpid(), age_s=90)
    with RunLock(tmp_path, stale_after_s=60) as lock:
        assert lock.acquire("skip") is None


def test_an_unreadable_lock_goes_stale_by_its_mtime(tmp_path):
    path = tmp_path / LOCK_FILE
    path.write_text("{half a lo", encoding="utf-8")
    with RunLock(tmp_path, stale_after_s=60) as lock:
        assert lock.acquire("skip").host == "unknown"
        old = time.time() - 120
        os.utime(path, (old, old))
        assert lock.acquire("skip") is None


@pytest.mark.parametrize("round_", range(5))
def test_launchers_racing_for_a_stale_lock_exactly_one_wins(tmp_path, round_):
    _write_lock(tmp_path, host="elsewhere", pid=1, age_s=3600)
    locks = [RunLock(tmp_path, stale_after_s=60) for _ in range(8)]
    start = threading.Barrier(len(locks))
    results: dict[int, Holder | None] = {}

    def launch(index: int) -> None:
        start.wait()
        results[index] = locks[index].try_acquire()

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(len(locks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, other in results.items() if other is None]
    assert len(winners) == 1, results
    token = read_holder(tmp_path / LOCK_FILE).token
    assert token == locks[winners[0]].token
    assert all(results[i].token == token for i in results if i not in winners)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]


def test_a_claim_left_by_a_dead_launcher_does_not_block_the_take_over(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=1, age_s=3600, token="old")
    claim = tmp_path / f".{LOCK_FILE}.claim.old"
    claim.write_text("{}", encoding="utf-8")
    with RunLock(tmp_path, stale_after_s=60) as lock:
        assert lock.acquire("skip") is not None  # a fresh claim: someone is taking it over
        os.utime(claim, (time.time() - 120, time.time() - 120))
        assert lock.acquire("skip") is None
    assert list(tmp_path.iterdir()) == []


def test_processes_racing_for_a_stale_lock_exactly_one_wins(tmp_path):
    _write_lock(tmp_path, host=socket.gethostname(), pid=_dead_pid(), age_s=0)
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from sweeplab.tracking.run_lock import RunLock\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        f"other = RunLock({str(tmp_path)!r}).try_acquire()\n"
        "print('won' if other is None else 'lost', flush=True)\n"
        "sys.stdin.read()\n"  # hold on (alive) until the test has looked
    )
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    time.sleep(1.0)  # every racer imported and polling
    go.touch()
    said = [racer.stdout.readline().strip() for racer in racers]
    holder = read_holder(tmp_path / LOCK_FILE)
    for racer in racers:
        racer.communicate("")
    assert sorted(said) == ["lost", "lost", "lost", "won"]
    assert holder.pid == racers[said.index("won")].pid


def test_the_heartbeat_is_refreshed(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0.05) as lock:
        lock.acquire()
        first = read_holder(lock.path)
        time.sleep(0.3)
        later = read_holder(lock.path)
    assert later.heartbeat_unix > first.heartbeat_unix
    assert (later.token, later.started) == (first.token, first.started)


def test_a_stolen_lock_is_not_resurrected_by_its_old_holder(tmp_path):
    with RunLock(tmp_path) as victim, RunLock(tmp_path) as thief:
        assert victim.acquire() is None
        assert thief.acquire("steal") is None
        assert not victim.refresh() and not victim.still_held()
        victim.release()
        assert read_holder(tmp_path / LOCK_FILE).token == thief.token and thief.still_held()


def test_wait_returns_once_the_holder_releases(tmp_path):
    holder = RunLock(tmp_path)
    assert holder.acquire() is None
    threading.Timer(0.3, holder.release).start()
    with RunLock(tmp_path, poll_s=0.05) as waiter:
        began = time.time()
        assert waiter.acquire("wait") is None
        assert 0.2 < time.time() - began < 5 and waiter.still_held()


def test_on_running_does_not_change_the_run_id(tmp_path):
    default = compose_config([f"paths.root_dir={tmp_path}"])
    assert default.on_running == "skip"
    waiting = compose_config([f"paths.root_dir={tmp_path}", "on_running=wait"])
    assert compute_run_id(default) == compute_run_id(waiting)


def test_summary_counts_runs_running_elsewhere(tmp_path):
    sweep_dir = tmp_path / "_sweeps" / "s"
    write_outcome(sweep_dir, tmp_path / "demo" / "a1", "complete", None)
    write_outcome(sweep_dir, tmp_path / "demo" / "b2", RUNNING_ELSEWHERE, "host h, pid 7, since t")
    from sweeplab.tracking.sweeps import read_outcomes

    text = report(Sweep(sweep_dir, read_outcomes(sweep_dir)), tmp_path)
    assert text.splitlines()[0] == (
        "sweep: 2 runs — 1 complete, 0 already complete (skipped), 0 failed, "
        "1 running elsewhere (skipped)"
    )
    assert f"  running elsewhere: {tmp_path / 'demo' / 'b2'} (host h, pid 7, since t)" in text


def _run_dir(root: Path, overrides: list[str]) -> Path:
    cfg = compose_config([f"paths.root_dir={root}", *overrides])
    return root / "runs" / str(cfg.name) / compute_run_id(cfg)


def test_train_of_a_locked_run_prints_one_line_and_exits_0(tmp_path, capsys):
    """In this process: the test holds the lock, as a live trainer would."""
    run_dir = _run_dir(tmp_path, QUICK)
    run_dir.mkdir(parents=True)
    with RunLock(run_dir) as lock:
        lock.acquire()
        since = lock.holder.started
        assert cli.main(["train", *QUICK, f"paths.root_dir={tmp_path}"]) == 0
        assert lock.still_held()
    lines = [line for line in capsys.readouterr().out.splitlines() if "elsewhere" in line]
    assert lines == [
        f"sweeplab: running elsewhere (host {socket.gethostname()}, pid {os.getpid()}, "
        f"since {since}): {run_dir}"
    ]
    assert read_record(run_dir) is None  # the holder's run is left alone


def test_an_invalid_on_running_is_a_one_line_config_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", *QUICK, "on_running=later", f"paths.root_dir={tmp_path}"])
    assert exit_.value.code == 2
    lines = message_lines(capsys.readouterr().err)
    assert lines == ["sweeplab: on_running must be one of skip, wait, steal; got 'later'"]
    record = read_record(_run_dir(tmp_path, QUICK))  # recorded as failed, nothing trained
    assert record["status"] == "failed" and "on_running must be one of" in record["error"]
    assert not (_run_dir(tmp_path, QUICK) / "checkpoints").exists()


@pytest.mark.timeout(120)
def test_two_simultaneous_launches_train_the_run_once(tmp_path):
    args = [
        sys.executable,
        "-m",
        "sweeplab",
        "train",
        *QUICK,
        "eval.plots=false",
        "on_running=wait",
    ]
    args += [f"paths.root_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launches = [
        subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [launch.communicate(timeout=110)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs
    trained = [out for out in outputs if "run complete:" in out]
    skipped = [out for out in outputs if "is already complete" in out]
    assert (len(trained), len(skipped)) == (1, 1), outputs
    run_dir = _run_dir(tmp_path, QUICK)
    record = read_record(run_dir)
    assert record["status"] == "complete" and record["attempts"] == 1
    assert not (run_dir / LOCK_FILE).exists()
