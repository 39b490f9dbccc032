"""The run record: the one file that tables, the dashboard and tests read.

A record is a JSON object written atomically (temp file + rename) so that a
reader never sees half a record, even when a run is killed while writing it.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeplab.files import atomic_write_text
from sweeplab.tracking.layout import RECORD_FILE

__all__ = [
    "RECORD_FILE",
    "SCHEMA_VERSION",
    "STATUSES",
    "CorruptRecordError",
    "new_record",
    "now_iso",
    "read_record",
    "write_record",
]

SCHEMA_VERSION = 1
STATUSES = ("running", "complete", "failed")


class CorruptRecordError(ValueError):
    """A record file exists but cannot be parsed as a run record."""


def now_iso() -> str:
    """Current UTC time as an ISO-8601 string with seconds precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_safe(value: Any) -> Any:
    """Make floats JSON-standard: NaN and infinities become strings, not invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_record(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Validate and atomically write ``record.json`` into ``run_dir``."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
    path = Path(run_dir) / RECORD_FILE
    atomic_write_text(path, json.dumps(_json_safe(record), indent=2, sort_keys=False) + "\n")
    return path


def read_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Return the record in ``run_dir``, ``None`` if there is none.

    Raises ``CorruptRecordError`` (with the path and the reason) when the file
    exists but is not a valid record, so callers never silently treat a broken
    run as missing or complete.
    """
    path = Path(run_dir) / RECORD_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRecordError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CorruptRecordError(f"{path}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in ("schema", "run_id", "status") if key not in record]
    if missing:
        raise CorruptRecordError(f"{path}: missing keys {missing}")
    if record["status"] not in STATUSES:
        raise CorruptRecordError(f"{path}: unknown status {record['status']!r}")
    return record


def new_record(
    run_id: str,
    name: str,
    config: dict[str, Any],
    overrides: list[str],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """A fresh record in status ``running``, with every schema key present."""
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_id,
        "name": name,
        "status": "running",
        "error": None,
        "created": now_iso(),
        "finished": None,
        "duration_s": None,
        "attempts": 1,
        "config": config,
        "overrides": list(overrides),
        "metrics": {},
        "provenance": provenance,
        "artifacts": {},
    }
