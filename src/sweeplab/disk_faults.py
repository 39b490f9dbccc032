"""Faults on disk that the user fixes, said in one line that names the path and the remedy.

A full or read-only disk, a runs directory that is a file, a folder without permission
and a corrupt data archive are not bugs of sweeplab: the command prints one
``sweeplab: …`` line instead of a traceback, and the record of a run that had started
keeps the traceback. Standard library only, so the ``sweeplab`` entry point can use it
without importing torch.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import os
import re
import tarfile
import zlib
from pathlib import Path

WRITE_PATHS = "paths.runs_dir / paths.cache_dir"

# What tarfile and the decompressors raise for an archive that ends early or is not one.
ARCHIVE_READ_ERRORS = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


class CorruptArchiveError(ValueError):
    """A data archive that cannot be read to its end: truncated, damaged, or not an archive."""

    def __init__(self, archive: str | os.PathLike, cause: BaseException, user: str = "") -> None:
        self.archive = Path(archive)
        self.cause = cause
        prefix = f"{user}: " if user else ""
        super().__init__(
            f"{prefix}{archive} is corrupt or truncated ({archive_cause(cause)}); "
            "delete it and download it again"
        )


def archive_cause(exc: BaseException) -> str:
    """The decompressor's or tarfile's reason, short. ``tarfile.open(…, "r:*")`` lists one
    failure per method it tried; the one that is not "not a … file" is the real one."""
    message = str(exc).strip() or type(exc).__name__
    tried = re.findall(r"- method \w+: \w+\('(.*)'\)", message)
    if tried:
        real = [reason for reason in tried if not reason.startswith("not a")]
        return real[0] if real else "not a gzip, bzip2, xz or tar archive"
    message = message.splitlines()[0]
    inner = exc.__context__  # tarfile's stream reader hides the zlib error it hit
    if isinstance(inner, zlib.error | EOFError) and str(inner) and str(inner) not in message:
        message = f"{message}: {str(inner).splitlines()[0]}"
    return message[:200]


def describe(exc: BaseException) -> str | None:
    """The one-line reason for a disk fault the user can fix, or ``None`` for any other error."""
    if isinstance(exc, CorruptArchiveError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return None


def describe_os_error(exc: OSError) -> str | None:
    """Full disk, quota, read-only file system, no permission, a file where a directory
    must be: what happened, to which path, and what to do. ``None`` for other errnos."""
    path = _named_path(exc)
    where = f" {path}" if path else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return (
            f"{what} writing{where or ' (no file named)'}{_file_system(path)}; "
            f"free space there or point {WRITE_PATHS} elsewhere"
        )
    if exc.errno == errno.EROFS:
        return (
            f"read-only file system: cannot write{where or ' (no file named)'}{_file_system(path)}; "
            f"point {WRITE_PATHS} at a writable directory"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        what = "permission denied" if exc.errno == errno.EACCES else "operation not permitted"
        return (
            f"{what} on{where or ' (no file named)'}; make it accessible to this user or point "
            f"{WRITE_PATHS} / paths.data_dir elsewhere"
        )
    if exc.errno == errno.ENOENT and path:
        kind = _pseudo_file_system(Path(path))
        if kind is not None:
            return (
                f"cannot create {path}: it is on a {kind} file system, which holds no files of "
                f"its own; point paths.root_dir (or {WRITE_PATHS}) at a real directory"
            )
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and path:
        blocker = _file_in_the_way(Path(path))
        if blocker is not None:
            needed = "" if blocker == Path(path) else f" (needed for {path})"
            return (
                f"{blocker} is a file, not a directory{needed}; move it away or point "
                f"{WRITE_PATHS} elsewhere"
            )
    return None


def _named_path(exc: OSError) -> str | None:
    """The path the error is about: the destination of a copy or rename, else its file."""
    for name in (exc.filename2, exc.filename):
        if isinstance(name, str | bytes | os.PathLike):
            return os.fsdecode(name)
    return None


def _file_system(path: str | None) -> str:
    """`` (file system at <mount point>)``: which disk is full or read-only."""
    if not path:
        return ""
    return f" (file system at {_mount_point(Path(path))})"


def _mount_point(path: Path) -> Path:
    """Where the file system ``path`` is (or would be) on is mounted."""
    directory = path.absolute()
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    while not os.path.ismount(directory) and directory != directory.parent:
        directory = directory.parent
    return directory


# Kernel file systems that refuse new entries with ENOENT, as if the directory were missing.
PSEUDO_FILE_SYSTEMS = frozenset(
    {"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore", "bpf"}
)


def _pseudo_file_system(path: Path, mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the kernel file system ``path`` would be created on, if it is one.

    Creating ``/proc/x`` fails with ENOENT although ``/proc`` exists, which reads like an
    ordinary missing file; the mount table tells the two apart.
    """
    try:
        table = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    types = {}
    for line in table:
        fields = line.split()
        if len(fields) >= 3:
            types[fields[1].replace("\\040", " ")] = fields[2]
    kind = types.get(str(_mount_point(path)))
    return kind if kind in PSEUDO_FILE_SYSTEMS else None


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its parents, from the top, that exists and is not a directory."""
    for candidate in (*reversed(path.absolute().parents), path.absolute()):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None
