"""Render a resolved table as Markdown (the terminal), LaTeX (the paper) or CSV (scripts).

All three show the same facts: mean ± std over seeds with n, the best cell of
each column, the published value and the difference, and cells whose runs are
missing (never a zero). Markdown and LaTeX round to the column's decimals; CSV
keeps full precision, one line per cell.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from tabulate import tabulate

from sweeplab.tables.cells import Cell, Column, Table
from sweeplab.tables.spec import Reference

FORMATS = ("md", "latex", "csv")
CSV_FIELDS = (
    "row",
    "column",
    "metric",
    "mean",
    "std",
    "n",
    "missing",
    "best",
    "reference",
    "difference",
    "outside_tolerance",
    "source",
)
OUTSIDE = "(!)"


def number(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def signed(value: float, decimals: int) -> str:
    text = number(value, decimals)
    return text if text.startswith("-") else f"+{text}"


def best_rows(table: Table) -> dict[str, set[str]]:
    """Per column, the rows whose mean is best as displayed (ties all count)."""
    best: dict[str, set[str]] = {}
    for column in table.spec.columns:
        shown = {}
        for row in table.spec.rows:
            cell = table.cell(row.label, column.label)
            if cell.mean is not None:
                shown[row.label] = round(cell.mean, column.format.decimals)
        if shown:
            pick = min if column.format.lower_is_better else max
            target = pick(shown.values())
            best[column.label] = {label for label, value in shown.items() if value == target}
        else:
            best[column.label] = set()
    return best


@dataclass
class Comparison:
    """A cell against its published value, in display units."""

    reference: Reference
    difference: float | None

    @property
    def outside(self) -> bool:
        tolerance = self.reference.tolerance
        return (
            self.difference is not None
            and tolerance is not None
            and abs(self.difference) > tolerance
        )


def against_reference(table: Table, cell: Cell) -> Comparison | None:
    reference = table.spec.references.get((cell.row.label, cell.column.label))
    if reference is None:
        return None
    mean = cell.mean
    return Comparison(reference, None if mean is None else mean - reference.value)


DAGGER = r"^{\dagger}"  # marks a LaTeX difference outside the tolerance


def _reference_cells(table, cell, decimals: int, no_difference: str, show_difference) -> list[str]:
    """The ``paper`` and ``Δ`` cells beside ``cell``; empty where it has no reference."""
    comparison = against_reference(table, cell)
    if comparison is None:
        return ["", ""]
    published = number(comparison.reference.value, decimals)
    if comparison.difference is None:
        return [published, no_difference]
    return [published, show_difference(signed(comparison.difference, decimals), comparison.outside)]


def _has_references(table: Table, column: Column) -> bool:
    return any((row.label, column.label) in table.spec.references for row in table.spec.rows)


def _missing_text(cell: Cell) -> str:
    return f"missing ({cell.missing} of {len(cell.group.slots)} runs)"


def _arrow(column: Column, latex: bool) -> str:
    if latex:
        return r"$\downarrow$" if column.format.lower_is_better else r"$\uparrow$"
    return "↓" if column.format.lower_is_better else "↑"


# --------------------------------------------------------------------------- notes


def _seed_list(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def heading(table: Table) -> str:
    """The spec's title, and the overrides applied on top of it (which it does not know)."""
    applied = table.spec.applied_overrides
    return table.spec.title + (f" [overridden: {' '.join(applied)}]" if applied else "")


def notes(table: Table) -> list[str]:
    """What the reader needs beside the numbers: seeds, sources, and what is missing."""
    spec = table.spec
    lines = [
        f"mean ± std over seeds {_seed_list(spec.seeds)} (n = seeds with a value); "
        "bold: best in column (↑ higher is better, ↓ lower is better)."
    ]
    if spec.applied_overrides:
        lines.append(
            f"overridden: {' '.join(spec.applied_overrides)} on top of {spec.path}; "
            "the title describes the spec without them."
        )
    sources = []
    for ref in spec.references.values():
        tol = "" if ref.tolerance is None else f", tolerance ±{ref.tolerance:g}"
        text = f"{ref.source}{tol}"
        if text not in sources:
            sources.append(text)
    if sources:
        lines.append(f"paper: published value; Δ = mean − paper; {OUTSIDE} outside tolerance.")
        lines.extend(f"source: {text}" for text in sources)
    for row in spec.rows:
        for column in spec.columns:
            cell = table.cell(row.label, column.label)
            if not cell.missing:
                continue
            reasons = []
            for slot in cell.group.slots:
                if slot.seed in cell.values:
                    continue
                if slot.complete:
                    why = f"complete but has no {column.metric}"
                elif slot.status == "missing":
                    why = "not run"
                else:
                    why = slot.status + (f": {slot.error}" if slot.error else "")
                reasons.append(f"seed {slot.seed} {why}")
            lines.append(f"missing: {row.label} × {column.label}: " + "; ".join(reasons))
    return lines


# --------------------------------------------------------------------------- markdown


def _md_cell(cell: Cell, best: bool) -> str:
    if cell.mean is None:
        return _missing_text(cell)
    decimals = cell.column.format.decimals
    text = number(cell.mean, decimals)
    if cell.std is not None:
        text += f" ± {number(cell.std, decimals)}"
    if best:
        text = f"**{text}**"
    detail = f"n={cell.n}" + (f", {cell.missing} missing" if cell.missing else "")
    return f"{text} ({detail})"


def render_markdown(table: Table) -> str:
    spec = table.spec
    best = best_rows(table)
    headers = [spec.row_header]
    align = ["left"]
    for column in spec.columns:
        headers.append(f"{column.label} {_arrow(column, latex=False)}")
        align.append("right")
        if _has_references(table, column):
            headers += ["paper", "Δ"]
            align += ["right", "right"]
    body = []
    for row in spec.rows:
        line = [row.label]
        for column in spec.columns:
            cell = table.cell(row.label, column.label)
            line.append(_md_cell(cell, row.label in best[column.label]))
            if _has_references(table, column):
                line += _reference_cells(
                    table,
                    cell,
                    column.format.decimals,
                    "–",
                    lambda diff, outside: f"{diff} {OUTSIDE}" if outside else diff,
                )
        body.append(line)
    grid = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)
    return "\n".join([f"### {heading(table)}", "", grid, "", *notes(table)])


# --------------------------------------------------------------------------- latex

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _latex_cell(cell: Cell, best: bool) -> str:
    if cell.mean is None:
        return rf"\textit{{{_missing_text(cell)}}}"
    decimals = cell.column.format.decimals
    text = number(cell.mean, decimals)
    if cell.std is not None:
        text += rf" \pm {number(cell.std, decimals)}"
    text = rf"$\mathbf{{{text}}}$" if best else f"${text}$"
    if cell.missing:
        text += rf"\,{{\scriptsize($n{{=}}{cell.n}$)}}"
    return text


def render_latex(table: Table) -> str:
    spec = table.spec
    best = best_rows(table)
    headers = [latex_escape(spec.row_header)]
    for column in spec.columns:
        headers.append(f"{latex_escape(column.label)} {_arrow(column, latex=True)}")
        if _has_references(table, column):
            headers += ["Paper", r"$\Delta$"]
    lines = [
        f"% {heading(table)}",
        *(f"% {note}" for note in notes(table)),
        rf"\begin{{tabular}}{{l{'r' * (len(headers) - 1)}}}",
        r"\toprule",
        " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    for row in spec.rows:
        line = [latex_escape(row.label)]
        for column in spec.columns:
            cell = table.cell(row.label, column.label)
            line.append(_latex_cell(cell, row.label in best[column.label]))
            if _has_references(table, column):
                line += _reference_cells(
                    table,
                    cell,
                    column.format.decimals,
                    "--",
                    lambda diff, outside: "$" + diff + (DAGGER if outside else "") + "$",
                )
        lines.append(" & ".join(line) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if any(
        (c := against_reference(table, table.cell(r.label, col.label))) is not None and c.outside
        for r in spec.rows
        for col in spec.columns
    ):
        lines.append(r"% \dagger: outside the tolerance of the published value")
    return "\n".join(lines)


# --------------------------------------------------------------------------- csv


def _raw(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


def render_csv(table: Table) -> str:
    """One line per cell, values in display units (percent where the column says so)."""
    best = best_rows(table)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in table.spec.rows:
        for column in table.spec.columns:
            cell = table.cell(row.label, column.label)
            comparison = against_reference(table, cell)
            writer.writerow(
                [
                    row.label,
                    column.label,
                    column.metric,
                    _raw(cell.mean),
                    _raw(cell.std),
                    cell.n,
                    cell.missing,
                    int(row.label in best[column.label]),
                    "" if comparison is None else _raw(comparison.reference.value),
                    "" if comparison is None else _raw(comparison.difference),
                    ""
                    if comparison is None or comparison.difference is None
                    else int(comparison.outside),
                    "" if comparison is None else comparison.reference.source,
                ]
            )
    return out.getvalue().rstrip("\n")


def render(table: Table, fmt: str = "md") -> str:
    if fmt == "md":
        return render_markdown(table)
    if fmt == "latex":
        return render_latex(table)
    if fmt == "csv":
        return render_csv(table)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
