"""From a spec to its cells: which runs each cell needs, where they live, what they hold.

A cell's runs are found by composing the train config exactly as ``sweeplab
train`` does (base + row + column + ``seed=<s>``) and hashing it into the run
id, so a table reads precisely the runs its overrides describe, and every
override is proven to compose before anything is launched or rendered.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from sweeplab.configs import config_dir
from sweeplab.tables.spec import Column, Entry, Override, SpecError, TableSpec
from sweeplab.tracking import layout
from sweeplab.tracking.identity import compute_run_id, register_resolvers
from sweeplab.tracking.record import CorruptRecordError, read_record
from sweeplab.tracking.store import UNREADABLE

MISSING_RUN = "missing"
# A cell made from other runs (an ensemble of runs) whose source runs are not all in
# the store yet: its run id is not known until they are.
WAITING = "waiting"
# Overrides that move the run store for ``sweeplab train``, and so for the table too.
STORE_KEYS = ("paths.runs_dir", "paths.root_dir")


class Composer:
    """Composes the train config for lists of overrides, once per distinct list."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], DictConfig] = {}
        self.composed = 0

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        key = tuple(overrides)
        if key not in self._cache:
            register_resolvers()
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                self._cache[key] = compose("train", overrides=list(key))
            self.composed += 1
        return self._cache[key]


@dataclass
class RunSlot:
    """One run a cell needs: its seed and run directory, and what that directory holds."""

    seed: int
    run_id: str
    run_dir: Path
    status: str = MISSING_RUN
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"


@dataclass
class RunGroup:
    """The runs of one row × column override set, one per seed (metric columns share one)."""

    overrides: tuple[str, ...]
    slots: list[RunSlot]

    label: str = ""  # set for the runs a spec ``requires``

    @property
    def incomplete(self) -> list[RunSlot]:
        return [slot for slot in self.slots if not slot.complete]

    @property
    def launchable(self) -> list[RunSlot]:
        """The incomplete runs whose run id is known (not waiting for source runs)."""
        return [slot for slot in self.incomplete if slot.status != WAITING]


@dataclass
class Cell:
    """One row × column: the values of its metric over the seeds that have it."""

    row: Entry
    column: Column
    group: RunGroup
    values: dict[int, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (ddof = 1); undefined for one value."""
        return statistics.stdev(self.values.values()) if self.n >= 2 else None

    @property
    def missing(self) -> int:
        """Seeds without a value: runs not launched, unfinished, failed, or lacking the metric."""
        return len(self.group.slots) - self.n


@dataclass
class Table:
    """A spec with every cell resolved to its runs and read from the store."""

    spec: TableSpec
    runs_dir: Path
    groups: list[RunGroup]
    cells: dict[tuple[str, str], Cell]
    required: list[RunGroup] = field(default_factory=list)

    def cell(self, row: str, column: str) -> Cell:
        return self.cells[row, column]

    def reload(self) -> None:
        """Read every run's record again (after launching the missing ones)."""
        for group in [*self.required, *self.groups]:
            for slot in group.slots:
                _read_slot(slot)
        for cell in self.cells.values():
            cell.values = _values(cell.group, cell.column.metric, cell.column.format.scale)

    def absent_metrics(self) -> list[Column]:
        """Columns whose metric is in none of the complete runs they read (likely a typo)."""
        absent = []
        for column in self.spec.columns:
            cells = [self.cells[row.label, column.label] for row in self.spec.rows]
            complete = [s for c in cells for s in c.group.slots if s.complete]
            if complete and not any(c.n for c in cells):
                absent.append(column)
        return absent


def _read_slot(slot: RunSlot) -> None:
    if slot.status == WAITING:
        return
    try:
        record = read_record(slot.run_dir)
    except (CorruptRecordError, OSError) as exc:  # shown as a reason, never as a value
        slot.status, slot.metrics, slot.error = UNREADABLE, {}, str(exc)
        return
    if record is None:
        slot.status, slot.metrics, slot.error = MISSING_RUN, {}, None
        return
    metrics = record.get("metrics")
    slot.status = str(record.get("status"))
    slot.metrics = metrics if isinstance(metrics, dict) else {}
    slot.error = None if record.get("error") is None else str(record.get("error"))


def _values(group: RunGroup, metric: str, scale) -> dict[int, float]:
    """The metric of each complete run that has a finite value for it, by seed."""
    values = {}
    for slot in group.slots:
        if not slot.complete or metric not in slot.metrics:
            continue
        try:
            value = float(slot.metrics[metric])
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            values[slot.seed] = scale(value)
    return values


def _compose_checked(
    spec: TableSpec,
    composer: Composer,
    overrides: Sequence[Override],
    seed: int,
    extra: Sequence[str] = (),
) -> DictConfig:
    """Compose, or raise a :class:`SpecError` that names the first override that fails."""
    texts = [o.text for o in overrides]
    try:
        return composer([*texts, f"seed={seed}", *extra])
    except Exception as full_error:
        for i in range(1, len(overrides) + 1):
            try:
                composer(texts[:i])
            except Exception as exc:
                bad = overrides[i - 1]
                message = " ".join(str(exc).split())
                raise SpecError(
                    f"{spec.where(bad.line)}: override {bad.text!r} does not compose: {message}"
                ) from None
        message = " ".join(str(full_error).split())
        raise SpecError(
            f"{spec.where(spec.seeds_line)}: seed={seed} does not compose: {message}"
        ) from None


def _moves_store(override: Override) -> bool:
    key = override.text.partition("=")[0].strip().lstrip("+~")
    return key in STORE_KEYS


def default_runs_dir(spec: TableSpec, composer: Composer | None = None) -> Path:
    """Where ``sweeplab train`` puts these runs: the store of :func:`layout.runs_dir`,
    unless the base overrides move it (``paths.runs_dir=``, ``paths.root_dir=``), in which
    case ``paths.runs_dir`` of the composed base config, as training composes it."""
    if not any(_moves_store(o) for o in spec.base):
        return layout.runs_dir()
    cfg = _compose_checked(spec, composer or Composer(), spec.base, spec.seeds[0])
    return layout.runs_dir(str(cfg.paths.runs_dir))


def _slot(
    spec: TableSpec,
    composer: Composer,
    overrides: Sequence[Override],
    seed: int,
    root: Path,
    line: int,
    what: str,
    store: Sequence[str] = (),
) -> RunSlot:
    """The run of one override set and seed; ``waiting`` while its source runs are missing."""
    cfg = _compose_checked(spec, composer, overrides, seed, store)
    try:
        run_id = compute_run_id(cfg)
    except Exception as exc:
        message = " ".join(str(exc).split())
        try:
            compute_run_id(cfg, pin_sources=False)
        except Exception:
            raise SpecError(
                f"{spec.where(line)}: the config of {what}, seed={seed}) does not resolve: "
                f"{message}"
            ) from None
        return RunSlot(seed, "", root / str(cfg.name), status=WAITING, error=message)
    return RunSlot(seed, run_id, root / str(cfg.name) / run_id)


def resolve(
    spec: TableSpec, runs_dir: str | Path | None = None, composer: Composer | None = None
) -> Table:
    """Compose every cell's configs, compute their run ids and read their records."""
    composer = composer or Composer()
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir(spec, composer)
    # Compose as the launch will (it passes the store), so source selectors read this store.
    store = () if runs_dir is None else (f"paths.runs_dir={Path(runs_dir).resolve()}",)
    required = [
        RunGroup(
            tuple(o.text for o in (*spec.base, *requirement.overrides)),
            [
                _slot(
                    spec,
                    composer,
                    (*spec.base, *requirement.overrides),
                    seed,
                    root,
                    requirement.line,
                    f"(requires {requirement.label}",
                    store,
                )
                for seed in requirement.seeds
            ],
            label=requirement.label,
        )
        for requirement in spec.requires
    ]
    groups: dict[tuple[str, ...], RunGroup] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for row in spec.rows:
        for column in spec.columns:
            overrides = (*spec.base, *row.overrides, *column.entry.overrides)
            key = tuple(o.text for o in overrides)
            if key not in groups:
                what = f"({row.label}, {column.label}"
                slots = [
                    _slot(spec, composer, overrides, seed, root, row.line, what, store)
                    for seed in spec.seeds
                ]
                groups[key] = RunGroup(key, slots)
            cells[row.label, column.label] = Cell(row, column, groups[key])
    table = Table(spec, root, list(groups.values()), cells, required)
    table.reload()
    return table
