"""Full, read-only and misplaced run stores, and bad dashboard ports: one ``sweeplab:`` line
naming the path (or option) and the remedy, never a traceback on the terminal."""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from sweeplab import cli, disk_faults, files
from sweeplab.tracking.record import read_record
from tests.conftest import message_lines, run_cli, run_in_store

QUICK = [
    "trainer.max_epochs=1",
    "data.train_subset=200",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]


def last_line(stderr: str, *names: str) -> str:
    """The one line the user reads: last on stderr, ``sweeplab: …``, naming ``names``."""
    assert "Traceback" not in stderr, stderr[-3000:]
    line = message_lines(stderr)[-1]
    assert line.startswith("sweeplab:"), stderr[-3000:]
    for name in names:
        assert name in line, line
    return line


def enospc(path: str | None = None, path2: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path, None, path2)


def can_mount_tmpfs(where: Path, options: str) -> bool:
    """Mount a tmpfs at ``where`` when root may (containers often forbid it)."""
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    return result.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(options) -> directory``: a small tmpfs, unmounted after the test."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        if not can_mount_tmpfs(where, options):
            pytest.skip("needs root and a tmpfs mount")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


# ------------------------------------------------------------------ the message itself
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (enospc("/store/r/record.json"), "no space left on device writing /store/r/record.json"),
        (enospc("/tmp/tmpx", "/store/r/last.ckpt"), "writing /store/r/last.ckpt"),  # a move
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/store/a"), "disk quota exceeded"),
        (OSError(errno.EROFS, "Read-only file system", "/store/a"), "read-only file system"),
        (PermissionError(errno.EACCES, "Permission denied", "/store/a"), "permission denied"),
        (enospc(), "no space left on device writing (no file named)"),
    ],
)
def test_os_errors_the_user_fixes_are_one_line_with_the_remedy(error, expected):
    reason = disk_faults.describe(error)
    assert expected in reason and "paths.runs_dir" in reason and "\n" not in reason


def test_other_errors_are_left_to_their_own_report():
    assert disk_faults.describe(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    assert disk_faults.describe(ValueError("data.batch_size must be positive")) is None


@pytest.mark.skipif(not Path("/proc/self/mounts").is_file(), reason="needs Linux's /proc")
def test_a_directory_on_a_kernel_file_system_is_named_and_a_missing_file_is_not(tmp_path):
    with pytest.raises(OSError) as error:
        Path("/proc/sweeplab_runs").mkdir(parents=True, exist_ok=True)
    assert error.value.errno == errno.ENOENT  # as for a missing parent, although /proc exists
    reason = disk_faults.describe(error.value)
    assert reason.startswith("cannot create /proc/sweeplab_runs: it is on a proc file system")
    assert "paths.root_dir" in reason and "\n" not in reason
    with pytest.raises(OSError) as error:  # an ordinary missing file keeps its own report
        (tmp_path / "missing.txt").read_text()
    assert disk_faults.describe(error.value) is None


def test_a_file_where_a_directory_must_be_is_named(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    wanted = blocker / "digits_small_cnn" / "0123"
    with pytest.raises(OSError) as error:
        wanted.mkdir(parents=True, exist_ok=True)
    reason = disk_faults.describe(error.value)
    assert reason.startswith(f"{blocker} is a file, not a directory (needed for {wanted})")
    with pytest.raises(OSError) as error:  # the runs directory itself is the file
        blocker.mkdir(parents=True, exist_ok=True)
    assert disk_faults.describe(error.value).startswith(f"{blocker} is a file, not a directory;")


def test_a_failed_write_names_the_file_it_was_for(tmp_path, monkeypatch):
    def full(fd):
        raise enospc()

    monkeypatch.setattr(files.os, "fsync", full)
    target = tmp_path / "run" / "record.json"
    with pytest.raises(OSError) as error:
        files.atomic_write_text(target, "{}")
    assert error.value.filename == str(target)
    assert f"writing {target}" in disk_faults.describe(error.value)
    assert list(target.parent.iterdir()) == []  # no temp file left behind


# ------------------------------------------------------------------ during a run
def test_a_full_disk_at_a_checkpoint_fails_the_run_with_the_path(tmp_path, monkeypatch):
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        raise enospc(str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", save_checkpoint)
    outcome = run_in_store(tmp_path, QUICK)
    assert outcome.status == "failed"
    checkpoints = outcome.run_dir / "checkpoints"
    assert outcome.error.startswith(f"no space left on device writing {checkpoints}/")
    record = read_record(outcome.run_dir)
    assert record["status"] == "failed" and record["error"] == outcome.error
    assert "OSError: [Errno 28]" in record["traceback"]


def test_a_full_disk_at_a_cache_write_fails_the_run_with_the_path(tmp_path, monkeypatch):
    from sweeplab.data import cache

    def save_atomic(payload, path):
        raise enospc(str(path))

    monkeypatch.setattr(cache, "save_atomic", save_atomic)
    folder = tmp_path / "pets"
    write_two_class_folder(folder)
    outcome = run_in_store(
        tmp_path, [*QUICK, "data=imagefolder", f"data.root={folder}", "data.num_workers=0"]
    )
    assert outcome.status == "failed"
    assert outcome.error.startswith(f"no space left on device writing {tmp_path}/.cache/")
    assert "cache_dir" in outcome.error
    assert read_record(outcome.run_dir)["status"] == "failed"


def write_two_class_folder(folder: Path) -> None:
    from PIL import Image

    for label, name in enumerate(("cats", "dogs")):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (8, 8), (40 * label, 5 * i, 0)).save(folder / name / f"{i}.png")


# ------------------------------------------------------------------ the command line
def test_runs_dir_under_a_file_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    result = run_cli(["train", *QUICK, f"paths.runs_dir={blocker}"], cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    line = last_line(result.stderr, str(blocker), "is a file, not a directory", "paths.runs_dir")
    assert message_lines(result.stderr) == [line]


def test_runs_dir_that_cannot_be_written_is_one_line_naming_it(tmp_path, tmpfs):
    """Root writes through chmod 555, so root gets a read-only mount; others a chmod."""
    if os.geteuid() == 0:
        locked, why = tmpfs("ro,size=1m"), "read-only file system"
    else:
        locked, why = tmp_path / "locked", "permission denied"
        locked.mkdir(mode=0o555)
    result = run_cli(["train", *QUICK, f"paths.runs_dir={locked}/runs"], cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    last_line(result.stderr, f"{locked}/runs", why, "paths.runs_dir")


def test_a_really_full_disk_is_one_line_naming_it(tmp_path, tmpfs):
    full = tmpfs("size=1m")  # the checkpoints alone do not fit
    result = run_cli(["train", *QUICK, f"paths.runs_dir={full}/runs"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    last_line(result.stderr, "no space left on device writing", f"{full}/runs/", f"at {full})")


def test_the_top_level_turns_any_commands_disk_fault_into_one_line(monkeypatch, capsys):
    def runs(args):
        raise enospc("/store/runs/index.json")

    monkeypatch.setitem(cli.COMMANDS, "runs", runs)
    assert cli.main(["runs"]) == 1
    last_line(capsys.readouterr().err, "/store/runs/index.json", "no space left on device")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # asked for tracebacks: gets them
    with pytest.raises(OSError):
        cli.main(["runs"])
    monkeypatch.setenv(cli.OWN_FULL_ERROR, "1")  # inherited from a parent sweeplab: not asked
    assert cli.main(["runs"]) == 1
    last_line(capsys.readouterr().err, "/store/runs/index.json", "no space left on device")
    monkeypatch.delenv(cli.OWN_FULL_ERROR)
    monkeypatch.setitem(cli.COMMANDS, "runs", lambda args: 1 / 0)  # a bug stays a traceback
    with pytest.raises(ZeroDivisionError):
        cli.main(["runs"])


# ------------------------------------------------------------------ dashboard --port
@pytest.mark.parametrize("port", ["70000", "-1", "abc", "65536"])
def test_a_bad_dashboard_port_names_the_option_and_the_range(port, capsys):
    assert cli.main(["dashboard", "--port", port]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    last_line(err, "--port", "0–65535", repr(port))


def test_a_dashboard_port_in_use_says_so_and_suggests_a_free_one(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["dashboard", "--runs-dir", str(tmp_path), "--port", str(port)]) == 1
    line = last_line(capsys.readouterr().err, f"port {port}", "already in use", "--port ")
    suggested = re.search(r"e\.g\. --port (\d+)", line)
    assert suggested is not None and int(suggested.group(1)) != port
