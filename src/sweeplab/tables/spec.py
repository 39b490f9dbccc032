"""Table specs: a YAML file naming rows, columns, seeds, metrics and published values.

A spec is read with the line of every key and list item, so each mistake is
reported as ``spec.yaml:LINE: what is wrong`` rather than as a stack trace from
deep inside the composition or rendering.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sweeplab.tracking.identity import changes_metrics

# Metric keys are ``<split>/<family>/<name>`` (``test/cls/acc``, ``val/cal/ece``), or begin
# with a family that has a layout of its own (``ood/<set>/<detector>/<metric>``, ``shift/``,
# ``perf/``, ``ens/``, ``nas/``, and training values such as ``train/lr``); a key outside
# these families is almost always a typo that would otherwise render as an empty column.
METRIC_PATTERNS = (
    r"(train|val|test)/(cls|cal)/[\w.@-]+",
    r"ood/[\w.@-]+(/[\w.@-]+)*",
    r"shift/[\w.@-]+(/[\w.@-]+)*",
    r"perf/[\w.@-]+",
    r"train/[\w.@-]+(/[\w.@-]+)*",
    r"val/[\w.@-]+(/[\w.@-]+)*",
    r"ens/[\w.@-]+(/[\w.@-]+)*",
    r"nas/[\w.@-]+(/[\w.@-]+)*",
    r"merge/[\w.@-]+(/[\w.@-]+)*",
)
_METRIC_RE = re.compile("|".join(f"(?:{p})" for p in METRIC_PATTERNS))

SPEC_KEYS = (
    "title",
    "row_header",
    "base",
    "seeds",
    "metric",
    "format",
    "rows",
    "columns",
    "tolerance",
    "references",
    "requires",
)
ENTRY_KEYS = ("label", "overrides", "metric", "format")
FORMAT_KEYS = ("percent", "decimals", "lower_is_better")
REQUIREMENT_KEYS = ("label", "overrides", "seeds")
REFERENCE_KEYS = ("row", "column", "value", "source", "tolerance")


class SpecError(ValueError):
    """A spec that cannot describe a table; the message names the file and line."""


def known_metric(name: str) -> bool:
    """Whether ``name`` looks like a metric key that sweeplab records."""
    return bool(_METRIC_RE.fullmatch(name))


# --------------------------------------------------------------------------- YAML with lines


class LineDict(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class LineList(list):
    """A sequence that remembers its own line and the line of each item (1-based)."""

    line: int = 0
    lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers; duplicate keys fail."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    mapping = LineDict()
    mapping.line, mapping.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in mapping:
            raise SpecError(f"{{path}}:{line}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    items = LineList(loader.construct_object(child, deep=True) for child in node.value)
    items.line = node.start_mark.line + 1
    items.lines = [child.start_mark.line + 1 for child in node.value]
    return items


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Format:
    """How a metric is shown: scaled to percent or not, decimals, and which way is better."""

    percent: bool = False
    decimals: int = 2
    lower_is_better: bool = False

    def scale(self, value: float) -> float:
        return value * 100.0 if self.percent else value


@dataclass(frozen=True)
class Override:
    """One Hydra override and the spec line it came from (``None``: the command line)."""

    text: str
    line: int | None


@dataclass
class Entry:
    """A row or a column: a label, its overrides, and (columns) perhaps its own metric."""

    label: str
    overrides: tuple[Override, ...]
    line: int
    metric: str | None = None
    format: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reference:
    """A published value for one cell, in the cell's display units (e.g. percent)."""

    row: str
    column: str
    value: float
    source: str
    tolerance: float | None
    line: int


@dataclass
class Requirement:
    """Runs a table needs but does not show: the source runs of its cells (the members
    of an ensemble of runs, a teacher), trained by ``--launch`` before the cells."""

    label: str
    overrides: tuple[Override, ...]
    seeds: tuple[int, ...]
    line: int


@dataclass
class Column:
    """A column with its metric and format settled (its own, else the spec's)."""

    entry: Entry
    metric: str
    format: Format
    metric_line: int

    @property
    def label(self) -> str:
        return self.entry.label


@dataclass
class TableSpec:
    """A validated spec. Composition of the overrides is checked when cells are resolved."""

    path: Path
    title: str
    row_header: str
    base: tuple[Override, ...]
    seeds: tuple[int, ...]
    seeds_line: int
    rows: list[Entry]
    columns: list[Column]
    references: dict[tuple[str, str], Reference]
    requires: list[Requirement] = field(default_factory=list)

    def where(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line is not None else f"{self.path} (command line)"

    @property
    def applied_overrides(self) -> list[str]:
        """The command line's overrides on top of the spec that can change its numbers, so
        a rendering says them beside a title that cannot know them ("8 epochs" after
        ``trainer.max_epochs=2``); where runs are stored or logged is left out."""
        return [
            o.text
            for o in self.base
            if o.line is None and changes_metrics(o.text.partition("=")[0].strip())
        ]

    def with_extra_overrides(self, extra: list[str]) -> TableSpec:
        """The spec with ``key=value`` overrides from the command line appended to its base."""
        return replace(self, base=self.base + tuple(Override(o, None) for o in extra))


def _fail(path: Path, line: int, message: str) -> SpecError:
    return SpecError(f"{path}:{line}: {message}")


def _overrides(path: Path, value: Any, line: int, what: str) -> tuple[Override, ...]:
    """A list of override strings, or one string of space-separated overrides."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(Override(text, line) for text in shlex.split(value))
    if not isinstance(value, list):
        raise _fail(path, line, f"{what}: expected a list of key=value overrides")
    result = []
    for item, item_line in zip(value, getattr(value, "lines", [line] * len(value)), strict=True):
        if not isinstance(item, str) or "=" not in item:
            raise _fail(path, item_line, f"{what}: {item!r} is not a key=value override")
        result.append(Override(item.strip(), item_line))
    return tuple(result)


def _format(path: Path, value: Any, line: int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, line, "format: expected a mapping of percent, decimals, lower_is_better")
    lines = getattr(value, "lines", {})
    for key, item in value.items():
        where = lines.get(key, line)
        if key not in FORMAT_KEYS:
            raise _fail(
                path, where, f"format: unknown key {key!r} (known: {', '.join(FORMAT_KEYS)})"
            )
        if key == "decimals" and (isinstance(item, bool) or not isinstance(item, int) or item < 0):
            raise _fail(path, where, f"format.decimals: expected a whole number ≥ 0, got {item!r}")
        if key != "decimals" and not isinstance(item, bool):
            raise _fail(path, where, f"format.{key}: expected true or false, got {item!r}")
    return dict(value)


def _metric(path: Path, value: Any, line: int) -> str:
    if not isinstance(value, str) or not known_metric(value):
        raise _fail(
            path,
            line,
            f"unknown metric {value!r}: expected a key like test/cls/acc, test/cal/ece, "
            "ood/near/energy/auroc, shift/mean/acc, perf/…, train/…, val/…",
        )
    return value


def _entries(path: Path, spec: LineDict, key: str) -> list[Entry]:
    value, line = spec.get(key), spec.lines.get(key, spec.line)
    if not isinstance(value, list) or not value:
        raise _fail(path, line, f"{key}: expected a non-empty list")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for item, item_line in zip(value, value.lines, strict=True):
        if isinstance(item, str):  # shorthand: the override is its own label
            item = LineDict(label=item, overrides=[item])
            item.line, item.lines = item_line, {"label": item_line, "overrides": item_line}
        if not isinstance(item, dict):
            raise _fail(path, item_line, f"{key}: each entry is a mapping with a label")
        for name in item:
            if name not in ENTRY_KEYS:
                raise _fail(
                    path,
                    item.lines[name],
                    f"{key}: unknown key {name!r} (known: {', '.join(ENTRY_KEYS)})",
                )
        label = item.get("label")
        if label is None or isinstance(label, dict | list):
            raise _fail(path, item.line, f"{key}: entry without a label")
        label = str(label)
        if label in seen:
            raise _fail(
                path,
                item.lines.get("label", item.line),
                f"duplicate {key[:-1]} label {label!r} (first on line {seen[label]})",
            )
        seen[label] = item.lines.get("label", item.line)
        metric = item.get("metric")
        if "metric" in item:
            metric = _metric(path, metric, item.lines["metric"])
        if key == "rows" and ("metric" in item or "format" in item):
            raise _fail(path, item.line, "rows: metric and format belong to columns or the spec")
        entries.append(
            Entry(
                label=label,
                overrides=_overrides(
                    path, item.get("overrides"), item.lines.get("overrides", item.line), key
                ),
                line=item.lines.get("label", item.line),
                metric=metric,
                format=_format(path, item.get("format"), item.lines.get("format", item.line)),
            )
        )
    return entries


def _seeds(path: Path, spec: LineDict) -> tuple[int, ...]:
    return _seed_list(path, spec.get("seeds", [0]), spec.lines.get("seeds", spec.line), "seeds")


def _seed_list(path: Path, value: Any, line: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(s, bool) or not isinstance(s, int) for s in value)
    ):
        raise _fail(path, line, f"{what}: expected a non-empty list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(path, line, f"{what}: a seed is listed twice")
    return tuple(value)


def _requirements(path: Path, spec: LineDict) -> list[Requirement]:
    """``requires``: entries of ``label``, ``overrides`` and their own ``seeds``."""
    if "requires" not in spec:
        return []
    value, line = spec["requires"], spec.lines["requires"]
    if not isinstance(value, list) or not value:
        raise _fail(path, line, "requires: expected a non-empty list of {label, overrides, seeds}")
    requirements = []
    for item, item_line in zip(value, value.lines, strict=True):
        if not isinstance(item, dict) or "label" not in item or "seeds" not in item:
            raise _fail(path, item_line, "requires: each entry has a label, overrides and seeds")
        for name in item:
            if name not in REQUIREMENT_KEYS:
                raise _fail(
                    path,
                    item.lines[name],
                    f"requires: unknown key {name!r} (known: {', '.join(REQUIREMENT_KEYS)})",
                )
        requirements.append(
            Requirement(
                label=str(item["label"]),
                overrides=_overrides(
                    path, item.get("overrides"), item.lines.get("overrides", item_line), "requires"
                ),
                seeds=_seed_list(path, item["seeds"], item.lines["seeds"], "requires: seeds"),
                line=item.lines.get("label", item_line),
            )
        )
    return requirements


def _number(path: Path, value: Any, line: int, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, line, f"{what}: expected a number, got {value!r}")
    return float(value)


def _references(
    path: Path, spec: LineDict, rows: list[Entry], columns: list[Column]
) -> dict[tuple[str, str], Reference]:
    value = spec.get("references")
    if value is None:
        return {}
    line = spec.lines["references"]
    if not isinstance(value, list):
        raise _fail(path, line, "references: expected a list of {row, column, value, source}")
    default_tolerance = spec.get("tolerance")
    if default_tolerance is not None:
        default_tolerance = _number(path, default_tolerance, spec.lines["tolerance"], "tolerance")
    row_labels = [r.label for r in rows]
    column_labels = [c.label for c in columns]
    references: dict[tuple[str, str], Reference] = {}
    for item, item_line in zip(value, value.lines, strict=True):
        if not isinstance(item, dict):
            raise _fail(path, item_line, "references: each entry is a mapping")
        for name in item:
            if name not in REFERENCE_KEYS:
                raise _fail(
                    path,
                    item.lines[name],
                    f"references: unknown key {name!r} (known: {', '.join(REFERENCE_KEYS)})",
                )
        row = str(item.get("row"))
        if row not in row_labels:
            raise _fail(path, item.lines.get("row", item_line), f"references: no row {row!r}")
        if "column" not in item and len(columns) == 1:
            column = column_labels[0]
        else:
            column = str(item.get("column"))
        if column not in column_labels:
            raise _fail(
                path, item.lines.get("column", item_line), f"references: no column {column!r}"
            )
        source = item.get("source")
        if not isinstance(source, str) or not source.strip():
            raise _fail(
                path,
                item_line,
                f"reference for ({row}, {column}) has no source: say where the number is published",
            )
        if "value" not in item:
            raise _fail(path, item_line, f"reference for ({row}, {column}) has no value")
        tolerance = item.get("tolerance", default_tolerance)
        if tolerance is not None:
            tolerance = _number(
                path, tolerance, item.lines.get("tolerance", item_line), "reference tolerance"
            )
        if (row, column) in references:
            raise _fail(path, item_line, f"a second reference for ({row}, {column})")
        references[row, column] = Reference(
            row=row,
            column=column,
            value=_number(path, item["value"], item.lines["value"], "reference value"),
            source=source.strip(),
            tolerance=tolerance,
            line=item_line,
        )
    return references


def parse_spec(text: str, path: str | Path = "<spec>") -> TableSpec:
    """Validate the YAML text of a spec; raises :class:`SpecError` naming the line."""
    path = Path(path)
    try:
        spec = yaml.load(text, Loader=_LineLoader)
    except SpecError as exc:
        raise SpecError(str(exc).replace("{path}", str(path))) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise _fail(path, line, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(spec, dict):
        raise _fail(path, 1, "a table spec is a mapping with rows, columns, seeds, metric")
    for key in spec:
        if key not in SPEC_KEYS:
            raise _fail(
                path, spec.lines[key], f"unknown key {key!r} (known: {', '.join(SPEC_KEYS)})"
            )
    spec_format = _format(path, spec.get("format"), spec.lines.get("format", spec.line))
    spec_metric = None
    if "metric" in spec:
        spec_metric = _metric(path, spec["metric"], spec.lines["metric"])
    rows = _entries(path, spec, "rows")
    if "columns" in spec:
        entries = _entries(path, spec, "columns")
    elif spec_metric is not None:
        entries = [Entry(label=spec_metric, overrides=(), line=spec.lines["metric"])]
    else:
        raise _fail(path, spec.line, "a spec needs columns, a metric, or both")
    columns = []
    for entry in entries:
        metric = entry.metric or spec_metric
        if metric is None:
            raise _fail(
                path, entry.line, f"column {entry.label!r} has no metric (and the spec none)"
            )
        metric_line = entry.line if entry.metric else spec.lines["metric"]
        columns.append(
            Column(entry, metric, Format(**{**spec_format, **entry.format}), metric_line)
        )
    base_line = spec.lines.get("base", spec.line)
    return TableSpec(
        path=path,
        title=str(spec.get("title") or path.stem),
        row_header=str(spec.get("row_header") or ""),
        base=_overrides(path, spec.get("base"), base_line, "base"),
        seeds=_seeds(path, spec),
        seeds_line=spec.lines.get("seeds", spec.line),
        rows=rows,
        columns=columns,
        references=_references(path, spec, rows, columns),
        requires=_requirements(path, spec),
    )


def load_spec(path: str | Path) -> TableSpec:
    """Read and validate the spec file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc.strerror or exc})") from None
    return parse_spec(text, path)
