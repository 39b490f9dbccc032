"""Paired comparison of two rows over seeds: mean difference with a 95% t interval.

Runs of two rows that share a seed share its data split and initial draw, so the
per-seed differences vary less than the rows do and a paired interval is the
honest one to report next to a table of means.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from sweeplab.tables.cells import Table
from sweeplab.tables.render import number, signed

# t_{0.975, df} for df = 1..30, used when scipy is not importable.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z_975 = 1.959964


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return T_975[df - 1] if df <= len(T_975) else Z_975


@dataclass
class PairedDifference:
    """Mean of (a − b) over the seeds both rows have, with its 95% interval half-width."""

    mean: float | None
    half_width: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def paired_difference(a: dict[int, float], b: dict[int, float]) -> PairedDifference:
    """Pairs values by seed; the interval needs two pairs, the mean one."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return PairedDifference(None, None, 0)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, None, 1)
    sd = statistics.stdev(diffs)
    return PairedDifference(
        mean, t_quantile_975(len(diffs) - 1) * sd / math.sqrt(len(diffs)), len(diffs)
    )


def compare_rows(table: Table, row_a: str, row_b: str) -> dict[str, PairedDifference]:
    """Per column, the paired difference ``row_a − row_b`` in display units."""
    labels = [row.label for row in table.spec.rows]
    for label in (row_a, row_b):
        if label not in labels:
            raise KeyError(f"no row {label!r} in {table.spec.path} (rows: {', '.join(labels)})")
    return {
        column.label: paired_difference(
            table.cell(row_a, column.label).values, table.cell(row_b, column.label).values
        )
        for column in table.spec.columns
    }


def render_comparison(table: Table, row_a: str, row_b: str) -> str:
    """Lines to print under the table."""
    lines = [f"paired difference {row_a} − {row_b} over seeds (mean [95% t interval], n):"]
    results = compare_rows(table, row_a, row_b)
    for column in table.spec.columns:
        result = results[column.label]
        decimals = column.format.decimals
        better = "lower" if column.format.lower_is_better else "higher"
        if result.mean is None:
            text = "no seed with a value in both rows"
        elif result.half_width is None:
            text = f"{signed(result.mean, decimals)} (one pair: no interval), n=1"
        else:
            text = (
                f"{signed(result.mean, decimals)} [{number(result.low, decimals)}, "
                f"{number(result.high, decimals)}], n={result.n}"
            )
        lines.append(f"  {column.label} ({better} is better): {text}")
    return "\n".join(lines)
