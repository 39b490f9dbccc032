"""One trainer per run: a lock file in the run directory, safe on shared filesystems.

Two launches of the same config share one run directory (the run id is a hash of
the config), so without a lock both would train it, race on its checkpoints and
count its attempts twice. ``<run_dir>/lock.json`` names the trainer that owns the
run (host, pid, when it started, its last heartbeat).

The lock is taken by linking a complete, uniquely named temp file to
``lock.json``: ``link`` is atomic also on NFS, where ``flock`` may be a no-op and
``O_EXCL`` on the lock itself was not reliable before NFSv3, and a reader never
sees a half-written lock. A lock is stale when its holder is a dead process on
this host or its heartbeat is older than ``stale_after_s`` (a holder on another
host, or one whose machine died). A stale lock is removed only by the launcher
that creates its claim file (exclusively, the same way) and finds it still in
place, so of several launchers that find the same stale lock exactly one takes it
over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeplab.checks import one_of
from sweeplab.files import atomic_write_text

log = logging.getLogger("sweeplab.run_lock")

LOCK_FILE = "lock.json"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0  # eight missed heartbeats: a stalled file server, not a slow epoch
POLL_S = 2.0
CLAIM_PATIENCE_S = 1.0  # a take-over holds its claim for milliseconds
ON_RUNNING = ("skip", "wait", "steal")
# Errors of a filesystem that has no hard links (some FUSE and SMB mounts).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


def check_on_running(value: Any) -> str:
    """``value`` if it is a known ``on_running`` policy, else a ``ValueError`` naming it."""
    return str(one_of("on_running", value, ON_RUNNING))


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal exists too)."""
    if pid <= 0:  # 0 and negative pids name process groups, never one holder
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock, as ``lock.json`` says. ``token`` tells two holders apart
    even when they share a host and pid (a reused pid, two locks in one process)."""

    host: str
    pid: int
    started: str
    heartbeat: str
    heartbeat_unix: float
    token: str = ""

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started}"

    def is_stale(self, stale_after_s: float, now: float | None = None) -> bool:
        """Dead on this host (certain), or silent for longer than ``stale_after_s``
        (the only sign a holder on another host can give)."""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return True
        return (time.time() if now is None else now) - self.heartbeat_unix > stale_after_s


def read_holder(path: Path) -> Holder | None:
    """The holder named by the lock file ``path``; ``None`` when there is no lock.

    A lock that cannot be parsed (left by a filesystem without hard links, see
    :meth:`RunLock._create`) is an unknown holder whose heartbeat is the file's
    mtime, so it goes stale like any other.
    """
    try:
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return Holder(
            host=str(data["host"]),
            pid=int(data["pid"]),
            started=str(data["started"]),
            heartbeat=str(data["heartbeat"]),
            heartbeat_unix=float(data["heartbeat_unix"]),
            token=str(data.get("token", "")),
        )
    except (ValueError, KeyError, TypeError):
        return Holder("unknown", 0, _iso(mtime), _iso(mtime), mtime)


def _identity(holder: Holder) -> str:
    """What tells one lock from another: its token, or for an unreadable lock its mtime."""
    return holder.token or f"unknown-{holder.heartbeat_unix!r}"


class RunLock:
    """The lock of one run directory, held by this process while it trains the run.

    ``with RunLock(run_dir) as lock: lock.acquire(on_running)`` releases it on the way
    out, whatever happens inside. While held, a daemon thread rewrites the
    heartbeat every ``heartbeat_s``; if the lock is taken from us (``steal``), the
    thread logs a warning and stops refreshing, and :meth:`still_held` turns false.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self.poll_s = float(poll_s)
        self.token = uuid.uuid4().hex
        self.holder: Holder | None = None  # us, once acquired
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_to: Holder | None = None

    # ----------------------------------------------------------------- taking it

    def _payload(self, started: str) -> Holder:
        now = time.time()
        return Holder(socket.gethostname(), os.getpid(), started, _iso(now), now, self.token)

    def _link_exclusive(self, target: Path, text: str) -> bool | None:
        """Create ``target`` holding ``text``, atomically and only if it does not exist.

        True if we created it, False if it existed; None where the filesystem has no
        hard links (the caller falls back to ``O_EXCL``).
        """
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{self.token}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno in _NO_LINKS:
                    return None
                # NFS may report a failed link that the server made (a lost reply):
                # the link count below says what happened.
            return os.stat(tmp).st_nlink == 2
        finally:
            tmp.unlink(missing_ok=True)

    def _create(self) -> bool:
        """One atomic create-exclusive of the lock; True if it is now ours."""
        holder = self._payload(_iso(time.time()))
        text = json.dumps(asdict(holder), indent=2) + "\n"
        linked = self._link_exclusive(self.path, text)
        if linked is None:
            linked = self._create_without_links(self.path, text)
        if linked and self._current_token() == self.token:
            self.holder = holder
            return True
        return False

    @staticmethod
    def _create_without_links(path: Path, text: str) -> bool:
        """``O_EXCL`` on the file itself, where the filesystem cannot link; a reader may
        see the lock half-written, which :func:`read_holder` treats as an unknown holder."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return True

    def _current_token(self) -> str | None:
        holder = read_holder(self.path)
        return None if holder is None else holder.token

    def _take_over(self, seen: Holder, *, force: bool) -> bool:
        """Remove the lock ``seen`` (stale, or ``force``) so the create can be retried.

        Only the launcher that creates the claim file named after ``seen`` may remove
        it, and only if ``lock.json`` is still ``seen``: a launcher that read the same
        stale lock a moment later finds a new lock (or none) in its place and leaves
        it alone, so of several launchers that find one stale lock exactly one takes
        it over. A claim is held for milliseconds; one older than ``stale_after_s`` was
        left by a launcher that died holding it, and is removed. False if another
        launcher holds the claim.
        """
        claim = self.path.with_name(f".{LOCK_FILE}.claim.{_identity(seen)}")
        text = json.dumps(asdict(self._payload(_iso(time.time())))) + "\n"
        claimed = self._link_exclusive(claim, text)
        if claimed is None:
            claimed = self._create_without_links(claim, text)
        if not claimed:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - claim.stat().st_mtime > self.stale_after_s:
                    claim.unlink(missing_ok=True)
            return False
        try:
            current = read_holder(self.path)
            same = current is not None and _identity(current) == _identity(seen)
            if same and (force or current.is_stale(self.stale_after_s)):
                why = "on_running=steal" if force else "stale"
                log.warning(
                    "taking over the run lock of %s (%s): %s", seen.describe(), why, self.path
                )
                self.path.unlink(missing_ok=True)
        finally:
            claim.unlink(missing_ok=True)
        return True

    def try_acquire(self, *, steal: bool = False) -> Holder | None:
        """One attempt: ``None`` if the lock is now ours, else the live holder.

        A stale lock (or, with ``steal``, the lock found) is taken over; if another
        launcher creates the lock in between, that one is live and is returned. While
        another launcher is taking the lock over, we give it a moment and then return
        the holder it is taking the lock from.
        """
        patience = time.monotonic() + CLAIM_PATIENCE_S
        while True:
            if self._create():
                return None
            seen = read_holder(self.path)
            if seen is None:
                continue  # released between our create and our read: create again
            if not (steal or seen.is_stale(self.stale_after_s)):
                return seen
            if self._take_over(seen, force=steal):
                steal = False  # a lock created since is another launcher's, and live
            elif time.monotonic() > patience:
                return seen
            else:
                time.sleep(0.01)

    def acquire(self, on_running: str = "skip") -> Holder | None:
        """Take the lock as ``on_running`` says; ``None`` once held, else the live holder.

        ``skip`` tries once; ``wait`` polls every ``poll_s`` until the holder releases
        the lock or goes stale; ``steal`` takes over the lock found at launch (another
        launcher that locks it in the same instant still wins and is returned).
        """
        check_on_running(on_running)
        other = self.try_acquire(steal=on_running == "steal")
        announced = False
        while other is not None and on_running == "wait":
            if not announced:
                log.info("run is locked by %s: waiting (%s)", other.describe(), self.path)
                announced = True
            time.sleep(self.poll_s)
            other = self.try_acquire()
        if other is None:
            self._start_heartbeat()
        return other

    # ----------------------------------------------------------------- holding it

    def still_held(self) -> bool:
        """Whether ``lock.json`` still names us (false once another trainer took it)."""
        return self.holder is not None and self._current_token() == self.token

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name=f"run-lock-heartbeat {self.path.parent.name}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def refresh(self) -> bool:
        """Rewrite our heartbeat; False (and a warning, once) if the lock is no longer ours.

        The holder is read back just before the atomic write, so an update cannot put
        back a lock that another trainer has taken over. What remains is the moment
        between that read and the rename, and only a holder that was silent for
        ``stale_after_s`` (or one being stolen from) can lose its lock in it.
        """
        if self.holder is None:
            return False
        beat = self._payload(self.holder.started)
        current = read_holder(self.path)
        if current is None or current.token != self.token:
            if current is not None and self._lost_to is None:
                self._lost_to = current
                log.warning(
                    "this trainer lost the run lock to %s (on_running=steal?): %s; "
                    "its record is not written at the end",
                    current.describe(),
                    self.path,
                )
            return False
        atomic_write_text(self.path, json.dumps(asdict(beat), indent=2) + "\n")
        self.holder = beat
        return True

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, only if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if self.holder is not None and self._current_token() == self.token:
            self.path.unlink(missing_ok=True)
        self.holder = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
