"""The run store as a list of runs: scan, filter, select, and the value a run has for a key.

The store is only directories and ``record.json`` files; this module turns it
into ``RunEntry`` objects that ``sweeplab runs``, the Python API, tables and the
dashboard share. Scanning never raises on what it finds: a run that cannot be read is
still an entry, carrying the reason, so a broken run is shown rather than
silently dropped or mistaken for a missing one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sweeplab.tracking.layout import CHECKPOINT_DIR, CONFIG_FILE, RECORD_FILE
from sweeplab.tracking.record import STATUSES, CorruptRecordError, read_record

# The status of a run whose record cannot be read; tables and listings share it.
UNREADABLE = "unreadable"
RUN_STATUSES = (*STATUSES, UNREADABLE)
# What a run directory holds before (or without) its record: evidence it is a run.
RUN_MARKERS = (CONFIG_FILE, ".hydra", CHECKPOINT_DIR)
# Record fields a ``key=value`` filter may name besides config keys.
RECORD_KEYS = ("run_id", "name", "status")
# The config key every debug preset (conf/debug/) sets. A debug run checks that a config
# runs and its numbers are no result, so the store's listings leave it out unless asked.
DEBUG_KEY = "debug_run"
DEBUG_GROUP = "debug"


class _Missing:
    """Sentinel for a config key that is absent (``None`` is a legitimate value)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass
class RunEntry:
    """One run directory: its record, or why the record could not be read."""

    path: Path
    record: dict[str, Any] | None = None
    problem: str | None = None

    def _field(self, key: str, default: Any, kind: type) -> Any:
        value = (self.record or {}).get(key)
        return value if isinstance(value, kind) else default

    @property
    def run_id(self) -> str:
        return str(self._field("run_id", self.path.name, str | int))

    @property
    def name(self) -> str:
        return str(self._field("name", self.path.parent.name, str | int))

    @property
    def status(self) -> str:
        return str(self.record.get("status", UNREADABLE)) if self.record is not None else UNREADABLE

    @property
    def metrics(self) -> dict[str, Any]:
        return self._field("metrics", {}, dict)

    @property
    def overrides(self) -> list[str]:
        return [str(o) for o in self._field("overrides", [], list)]

    @property
    def config(self) -> dict[str, Any]:
        return self._field("config", {}, dict)

    @property
    def error(self) -> str | None:
        error = self._field("error", None, object)
        return None if error is None else str(error)

    @property
    def duration_s(self) -> float | None:
        value = self._field("duration_s", None, int | float)
        return None if isinstance(value, bool) else value

    @property
    def created(self) -> str | None:
        return self._field("created", None, str)

    @property
    def debug_run(self) -> bool:
        """Made by a debug preset: its config says so, or (a record that failed before its
        config was stored) its overrides pick one."""
        if self.config:
            return self.config.get(DEBUG_KEY) is True
        return any(
            text.partition("=")[0].strip().lstrip("+~") == DEBUG_GROUP for text in self.overrides
        )


# --------------------------------------------------------------------------- scanning


def _hidden(path: Path) -> bool:
    """``_sweeps``, ``.cache`` and the like hold sweep metadata, not runs."""
    return path.name.startswith(("_", "."))


def _subdirs(path: Path) -> list[Path]:
    """Visible child directories, sorted; raises ``OSError`` if ``path`` cannot be listed."""
    children = []
    for child in path.iterdir():
        try:
            if child.is_dir() and not _hidden(child):
                children.append(child)
        except OSError:  # a child we cannot even stat: skip it, its parent is listable
            continue
    return sorted(children)


def read_entry(run_dir: Path) -> RunEntry | None:
    """The entry for ``run_dir``; ``None`` when it does not look like a run at all."""
    try:
        record = read_record(run_dir)
    except CorruptRecordError as exc:
        return RunEntry(run_dir, None, str(exc))
    except OSError as exc:  # e.g. permission denied on the directory itself
        return RunEntry(run_dir, None, f"{run_dir}: cannot read ({exc})")
    if record is not None:
        return RunEntry(run_dir, record, None)
    markers = []
    for marker in RUN_MARKERS:
        try:
            if (run_dir / marker).exists():
                markers.append(marker)
        except OSError:
            continue
    if not markers:
        return None  # an empty or unrelated directory
    return RunEntry(run_dir, None, f"no {RECORD_FILE} (has {', '.join(markers)})")


def created_at(entry: RunEntry) -> float:
    """Sort key: the record's creation time, else the directory's mtime."""
    created = entry.created
    if created:
        try:
            moment = datetime.fromisoformat(created)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        except ValueError:
            pass
    try:
        return entry.path.stat().st_mtime
    except OSError:
        return math.inf


def scan_store(
    runs_dir: str | os.PathLike,
    read: Callable[[Path], RunEntry | None] = read_entry,
    *,
    include_debug: bool = False,
) -> list[RunEntry]:
    """Every run in ``<runs_dir>/<name>/<run_id>/``, oldest first (then by path); debug
    runs (``debug=…`` presets) only with ``include_debug``.

    A missing ``runs_dir`` is an empty store. Directories that cannot be listed
    become entries with a ``problem`` instead of an exception. ``read`` turns one
    run directory into its entry; a caller that keeps entries between scans (the
    dashboard's index) passes a reader that rereads only changed records.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    entries: list[RunEntry] = []
    try:
        name_dirs = _subdirs(root)
    except OSError as exc:
        return [RunEntry(root, None, f"{root}: cannot list ({exc})")]
    for name_dir in name_dirs:
        try:
            run_dirs = _subdirs(name_dir)
        except OSError as exc:
            entries.append(RunEntry(name_dir, None, f"{name_dir}: cannot list ({exc})"))
            continue
        for run_dir in run_dirs:
            entry = read(run_dir)
            if entry is not None and (include_debug or not entry.debug_run):
                entries.append(entry)
    entries.sort(key=lambda e: (created_at(e), str(e.path)))
    return entries


# --------------------------------------------------------------------------- filtering


def config_value(config: Any, dotted_key: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"`` (list items by index); ``MISSING`` if absent."""
    node = config
    for part in dotted_key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            return MISSING
    return node


def _parse_value(text: str) -> Any:
    """Read a filter value the way Hydra reads an override value (YAML scalars)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # catches "1e-3", which YAML 1.1 leaves as a string
        except ValueError:
            return None
    return None


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _same(wanted: Any, actual: Any) -> bool:
    """Loose equality that still keeps ``true`` apart from ``1``."""
    if isinstance(wanted, bool) != isinstance(actual, bool):
        return False
    if wanted == actual:
        return True
    a, b = _as_number(wanted), _as_number(actual)
    if a is not None and b is not None:
        return a == b
    return _canonical(wanted) == _canonical(actual)


def _split_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("+")
    if not sep or not key:
        raise ValueError(f"filter {text!r} is not of the form key=value")
    return key, value.strip()


def _normalise_override(text: str) -> str:
    key, sep, value = text.partition("=")
    return f"{key.strip().lstrip('+')}{sep}{value.strip()}"


def alternatives(raw: str) -> list[str]:
    """The values of ``a,b,c`` as a Hydra sweep writes them: split on commas outside
    brackets and quotes (``[8,16]`` is one list value, ``0,1,2`` three values)."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(raw[start:index].strip())
            start = index + 1
    return [*parts, raw[start:].strip()]


def _holds(entry: RunEntry, key: str, raw: str, overrides: set[str], choices: Any) -> bool:
    """Whether one ``key=raw`` value holds for the run (see :func:`matches`)."""
    if f"{key}={raw}" in overrides:
        return True
    wanted = _parse_value(raw)
    if key in RECORD_KEYS and _same(wanted, getattr(entry, key)):
        return True
    if isinstance(choices, dict) and key in choices and _same(wanted, choices[key]):
        return True
    actual = config_value(entry.config, key)
    if isinstance(actual, dict) and "name" in actual and not isinstance(wanted, dict):
        actual = actual["name"]
    return actual is not MISSING and _same(wanted, actual)


def matches(entry: RunEntry, filters: Iterable[str]) -> bool:
    """Whether the run satisfies every ``key=value`` filter.

    A filter holds when the run was launched with exactly that override, or when
    its resolved config has that value at the dotted key. A key naming a config
    group (a node with a ``name``, e.g. ``data=digits``) compares that name, so
    runs that got the group by default are found too. ``seed=0,1,2`` holds for any
    of the three values, as the sweep ``-m seed=0,1,2`` made them.
    """
    filters = list(filters)
    if not filters:
        return True
    if entry.record is None:
        return False
    overrides = {_normalise_override(o) for o in entry.overrides}
    choices = entry.record.get("choices")  # Hydra's runtime choices, if the writer kept them
    for text in filters:
        key, raw = _split_filter(text)
        values = [raw] if f"{key}={raw}" in overrides else alternatives(raw)
        if not any(_holds(entry, key, value, overrides, choices) for value in values):
            return False
    return True


def filter_runs(
    entries: Iterable[RunEntry], status: str | None = None, where: Sequence[str] = ()
) -> list[RunEntry]:
    """The entries with the given status (if any) that match every ``where`` filter."""
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(RUN_STATUSES)}")
    for text in where:
        _split_filter(text)  # fail on a malformed filter even when the store is empty
    return [e for e in entries if (status is None or e.status == status) and matches(e, where)]


class UnknownSweepError(ValueError):
    """A sweep name that is no directory under ``<runs_dir>/_sweeps/``."""


def select(
    runs_dir: str | os.PathLike,
    *,
    status: str | None = None,
    where: Sequence[str] = (),
    sweep: str | None = None,
    include_debug: bool = False,
) -> tuple[list[RunEntry], list[RunEntry]]:
    """The runs in scope (the whole store, or one sweep's runs) and those of them that match.

    This is the one selection behind ``sweeplab runs`` and :func:`sweeplab.load_runs`;
    both lists are returned so a listing can say "3 of 10". The runs in scope include
    debug runs, so a listing can say how many it left out; the matches include them only
    with ``include_debug``.
    """
    entries = scan_store(runs_dir, include_debug=True)
    if sweep is not None:
        from sweeplab.tracking.sweeps import scan_sweeps  # Hydra's callback API: only when asked

        sweeps = {s.name: s for s in scan_sweeps(runs_dir)}
        if sweep not in sweeps:
            known = ", ".join(sweeps) or "none"
            raise UnknownSweepError(f"no sweep {sweep!r} (known: {known})")
        run_ids = sweeps[sweep].run_ids
        entries = [e for e in entries if e.run_id in run_ids]
    listed = filter_runs(entries, status=status, where=where)
    return entries, [e for e in listed if include_debug or not e.debug_run]


# --------------------------------------------------------------------------- settings


def override_values(entry: RunEntry) -> dict[str, str]:
    """``key → value text`` of the run's overrides, leaving out Hydra's own settings."""
    pairs = {}
    for text in entry.overrides:
        key, sep, value = text.partition("=")
        key = key.strip().lstrip("+~")
        if sep and key and not key.startswith(("hydra.", "hydra/")):
            pairs[key] = value.strip()
    return pairs


def setting(entry: RunEntry, key: str) -> Any:
    """The value a run has for ``key``: its override's text, else its group choice, else its
    config value (a group's ``name``); ``MISSING`` when it has none.

    A run that got a value by default thus has it too, so runs with and without the
    override line up in one column.
    """
    pairs = override_values(entry)
    if key in pairs:
        return pairs[key]
    choices = (entry.record or {}).get("choices")
    if isinstance(choices, dict) and key in choices:
        return choices[key]
    value = config_value(entry.config, key)
    if isinstance(value, dict) and "name" in value:
        value = value["name"]
    return value


def metric_number(value: Any) -> float | None:
    """A recorded metric as a float (the record writes NaN and infinities as strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
