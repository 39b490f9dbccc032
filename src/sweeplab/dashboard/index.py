"""An index of the run store that rereads only the records that changed.

A dashboard reruns its script on every click; parsing a thousand records each
time would make it crawl. The index walks the store with the same scan as
``sweeplab runs`` and :func:`sweeplab.load_runs`, but keeps each run directory's
entry keyed by the ``(mtime, size)`` of its ``record.json`` and reparses a record
only when that signature changes, so a refresh costs one ``stat`` per run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sweeplab.tracking.layout import RECORD_FILE
from sweeplab.tracking.store import RunEntry, read_entry, scan_store

Signature = tuple[int, int] | None


def _signature(run_dir: Path) -> Signature:
    try:
        stat = (run_dir / RECORD_FILE).stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


class StoreIndex:
    """The runs of one store, refreshed incrementally; ``reads`` counts records parsed.
    Debug runs (``debug=…`` presets) are left out, as every listing does, unless
    ``include_debug``. ``version`` changes whenever a refresh finds the store changed (a
    record new, changed or gone), so what pages compute from the entries can be cached
    on it."""

    def __init__(self, runs_dir: str | os.PathLike, include_debug: bool = False) -> None:
        self.runs_dir = Path(runs_dir)
        self.include_debug = include_debug
        self.reads = 0
        self.version = 0
        self._cache: dict[Path, tuple[Signature, RunEntry | None]] = {}
        self._order: list[RunEntry] = []
        self._lock = threading.Lock()  # one index serves every browser session

    def refresh(self) -> list[RunEntry]:
        """Every run, oldest first, rereading only new or changed records."""
        with self._lock:
            seen: dict[Path, tuple[Signature, RunEntry | None]] = {}
            changed = False

            def read(run_dir: Path) -> RunEntry | None:
                nonlocal changed
                signature = _signature(run_dir)
                cached = self._cache.get(run_dir)
                if cached is None or cached[0] != signature or signature is None:
                    self.reads += 1
                    fresh = (signature, read_entry(run_dir))
                    changed = changed or cached is None or fresh[1] != cached[1]
                    cached = fresh
                seen[run_dir] = cached
                return cached[1]

            self._order = scan_store(self.runs_dir, read=read, include_debug=self.include_debug)
            if changed or seen.keys() != self._cache.keys():
                self.version += 1
            self._cache = seen  # runs whose directory went away are forgotten
            return list(self._order)

    def get(self, run_id: str) -> RunEntry | None:
        """The run with this id (or directory path), from the last refresh."""
        for entry in self._order:
            if run_id in (entry.run_id, str(entry.path)):
                return entry
        return None
