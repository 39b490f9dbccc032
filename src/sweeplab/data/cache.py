"""A decode-once cache of uint8 image arrays, keyed by what was decoded and how.

The key covers the source's absolute path, its size and modification time (for a folder:
every image file's relative path, size and mtime), plus the decoding options, so editing
or replacing the data invalidates the cache without anyone deleting files by hand. Files
are written atomically (temp file + ``os.replace``) and read with ``weights_only=True``;
a file that fails to load or validate is reported and rebuilt, never silently used.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sweeplab.files import atomic_writer

CACHE_FORMAT = 1  # bump when the payload layout changes


class CorruptCacheWarning(RuntimeWarning):
    """A cache file could not be used and is being rebuilt."""


def source_fingerprint(source: Path) -> str:
    """Identify the current contents of an archive file or a folder cheaply (no reading)."""
    source = source.resolve()
    if source.is_file():
        stat = source.stat()
        return f"file:{source}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    for directory, subdirs, files in os.walk(source):
        subdirs.sort()
        for name in sorted(files):
            path = Path(directory, name)
            stat = path.stat()
            digest.update(
                f"{path.relative_to(source)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode()
            )
    return f"dir:{source}:{digest.hexdigest()}"


def cache_file(cache_dir: str | os.PathLike, source: Path, options: str) -> Path:
    """Where the decoded arrays of ``source`` (decoded with ``options``) are cached."""
    key = f"{CACHE_FORMAT}|{source_fingerprint(source)}|{options}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = source.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
    return Path(cache_dir) / f"{stem}-{digest}.pt"


def save_atomic(payload: Any, path: Path) -> None:
    """``torch.save`` so that readers see the old file or the complete new one."""
    with atomic_writer(path) as handle:
        torch.save(payload, handle)


def load_or_build(
    path: Path | None,
    build: Callable[[], dict[str, Any]],
    validate: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Load the payload cached at ``path``, or build, validate and cache it.

    ``validate`` raises on a payload that must not be used. ``path=None`` disables caching.
    """
    if path is not None and path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict):
                raise TypeError(f"expected a dict, found {type(payload).__name__}")
            validate(payload)
            return payload
        except Exception as error:
            warnings.warn(
                f"Data cache {path} is unreadable or invalid ({type(error).__name__}: {error}); "
                "rebuilding it from the source.",
                CorruptCacheWarning,
                stacklevel=2,
            )
    payload = build()
    validate(payload)
    if path is not None:
        save_atomic(payload, path)
    return payload
