"""An index of the run store that rereads only the records that changed.

A dashboard reruns its script on every click; scanning a thousand records each
time would make it crawl. The index keeps one entry per run directory keyed by
the ``(mtime, size)`` of its ``record.json`` and reparses a record only when that
signature changes, so a refresh costs one ``stat`` per run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sweeplab.tracking.layout import RECORD_FILE
from sweeplab.tracking.store import RunEntry, created_at, read_entry

Signature = tuple[int, int] | None


def _visible_dirs(path: Path) -> list[Path]:
    """Child directories that may hold runs (``_sweeps``, ``.cache`` hold none)."""
    try:
        children = list(os.scandir(path))
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if child.is_dir() and not child.name.startswith(("_", ".")):
                found.append(Path(child.path))
        except OSError:
            continue
    return sorted(found)


def _signature(run_dir: Path) -> Signature:
    try:
        stat = (run_dir / RECORD_FILE).stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


class StoreIndex:
    """The runs of one store, refreshed incrementally; ``reads`` counts records parsed."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        self.reads = 0
        self._cache: dict[Path, tuple[Signature, RunEntry | None]] = {}
        self._order: list[RunEntry] = []
        self._lock = threading.Lock()  # one index serves every browser session

    def _read(self, run_dir: Path) -> RunEntry | None:
        self.reads += 1
        return read_entry(run_dir)

    def refresh(self) -> list[RunEntry]:
        """Every run, oldest first, rereading only new or changed records."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> list[RunEntry]:
        seen: dict[Path, tuple[Signature, RunEntry | None]] = {}
        changed = False
        for name_dir in _visible_dirs(self.runs_dir):
            for run_dir in _visible_dirs(name_dir):
                signature = _signature(run_dir)
                cached = self._cache.get(run_dir)
                if cached is not None and cached[0] == signature and signature is not None:
                    seen[run_dir] = cached
                    continue
                seen[run_dir] = (signature, self._read(run_dir))
                changed = True
        if changed or seen.keys() != self._cache.keys():
            self._cache = seen
            entries = [entry for _, entry in seen.values() if entry is not None]
            self._order = sorted(entries, key=_sort_key)
        return list(self._order)

    def get(self, run_id: str) -> RunEntry | None:
        """The run with this id (or directory path), from the last refresh."""
        for entry in self._order:
            if run_id in (entry.run_id, str(entry.path)):
                return entry
        return None


def _sort_key(entry: RunEntry) -> tuple[float, str]:
    return (created_at(entry), str(entry.path))
