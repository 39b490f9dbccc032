"""Runs grouped by settings and averaged over the rest (``sweeplab runs --group-by``).

A group is every complete run with the same value for each group key (an override,
a group choice or a config value, as :func:`~sweeplab.tracking.store.setting` reads
it); each metric is summarised as mean ± sample standard deviation (ddof = 1, as the
tables compute it) over the runs that have it. Averaging is meant to be over seeds: a
group whose runs also differ in another result-changing setting says which, so runs
of different recipes are never pooled without a word.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from sweeplab.tracking.identity import changes_metrics
from sweeplab.tracking.store import MISSING, RunEntry, metric_number, override_values, setting

SEED_KEY = "seed"


@dataclass(frozen=True)
class Summary:
    """One metric over a group's runs: mean, sample std (``None`` for one value), count."""

    mean: float
    std: float | None
    n: int


@dataclass
class Group:
    """The complete runs sharing one value of each group key."""

    values: tuple[str, ...]
    runs: list[RunEntry] = field(default_factory=list)
    metrics: dict[str, Summary] = field(default_factory=dict)
    pooled_over: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[str]:
        return [setting_text(run, SEED_KEY) for run in self.runs]


def setting_text(entry: RunEntry, key: str) -> str:
    """A run's value for ``key`` as text; empty when it has none."""
    value = setting(entry, key)
    return "" if value is MISSING else str(value)


def summarise(values: Sequence[float]) -> Summary | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) >= 2 else None
    return Summary(statistics.fmean(finite), std, len(finite))


def setting_keys(entries: Sequence[RunEntry]) -> list[str]:
    """Override keys, then group choices, of the runs, in first-seen order."""
    keys: list[str] = []
    for entry in entries:
        keys.extend(k for k in override_values(entry) if k not in keys)
    for entry in entries:
        choices = (entry.record or {}).get("choices")
        if isinstance(choices, dict):
            keys.extend(str(k) for k in choices if str(k) not in keys)
    return [k for k in keys if not k.startswith("hydra") and changes_metrics(k)]


def group_runs(
    entries: Sequence[RunEntry], keys: Sequence[str], metrics: Sequence[str]
) -> list[Group]:
    """The complete runs of ``entries`` grouped by ``keys``, in first-seen order, with each
    metric summarised and the result-changing settings (besides the seed) that differ
    inside a group named in ``pooled_over``."""
    groups: dict[tuple[str, ...], Group] = {}
    for entry in entries:
        if entry.status != "complete":
            continue
        values = tuple(setting_text(entry, key) for key in keys)
        groups.setdefault(values, Group(values)).runs.append(entry)
    others = [k for k in setting_keys(entries) if k not in (*keys, SEED_KEY)]
    for group in groups.values():
        for metric in metrics:
            numbers = [metric_number(run.metrics.get(metric)) for run in group.runs]
            summary = summarise([v for v in numbers if v is not None])
            if summary is not None:
                group.metrics[metric] = summary
        group.pooled_over = [
            key for key in others if len({setting_text(run, key) for run in group.runs}) > 1
        ]
    return list(groups.values())
