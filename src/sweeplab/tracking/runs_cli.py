"""``sweeplab runs``: list the run store as a table, CSV or JSON.

The listing answers "what have I run, what broke, how did it do" without
opening any run directory. Tables are for reading; CSV and JSON carry raw
values for scripts, and keep messages on stderr so stdout always parses.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from sweeplab.tracking import layout
from sweeplab.tracking.run_groups import Group, Summary, group_runs
from sweeplab.tracking.store import (
    RUN_STATUSES,
    RunEntry,
    UnknownSweepError,
    filter_runs,
    select,
)
from sweeplab.tracking.sweeps import OUTCOME_STATUSES, SWEEPS_DIR, Sweep, scan_sweeps

# Accuracy, calibration and OOD detection (energy score, near and far sets) side by side.
DEFAULT_METRICS = (
    "test/cls/acc",
    "test/cal/ece",
    "ood/near/energy/auroc",
    "ood/far/energy/auroc",
)
OVERRIDES_WIDTH = 48
NOTE_WIDTH = 60


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeplab runs",
        description="List the runs in a run store, newest last.",
        epilog="Filters: key=value matches a run launched with that override or whose "
        "resolved config has that value (e.g. seed=0 data=digits trainer.max_epochs=5); "
        "seed=0,1,2 matches any of the values. --group-by augment averages each "
        "augment's runs over seeds.",
    )
    parser.add_argument(
        "--runs-dir",
        default=None,
        help=f"run store (default: {layout.RUNS_DIR_RULE})",
    )
    parser.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metric keys or globs (e.g. 'test/cal/*'), or 'all' "
        f"(default: {','.join(DEFAULT_METRICS)})",
    )
    parser.add_argument(
        "--by-sweep",
        action="store_true",
        help="list the sweeps (launches of `sweeplab train -m`) and what their runs did",
    )
    parser.add_argument(
        "--sweep", metavar="NAME", help="only the runs of this sweep (a directory in _sweeps/)"
    )
    parser.add_argument(
        "--group-by",
        metavar="KEYS",
        help="comma-separated keys (e.g. augment or augment,backbone): one row per value, "
        "each metric as mean ± std over the group's complete runs (its seeds), with n",
    )
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="also list the runs of the debug presets (debug=fdr, limit, overfit), "
        "which are left out by default",
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("filters", nargs="*", metavar="key=value", help="config/override filters")
    return parser


# --------------------------------------------------------------------------- formatting


def format_number(value: Any) -> str:
    """Four decimals for the usual [0, 1] metrics (so columns align), else 4 significant digits.

    Large counts (throughputs) are shown whole rather than in exponent form.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e4:
        return f"{value:.0f}"
    if magnitude < 1 and (magnitude >= 1e-3 or value == 0):
        return f"{value:.4f}"
    return f"{value:.4g}"


def format_duration(seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def compact_overrides(overrides: Sequence[str], width: int = OVERRIDES_WIDTH) -> str:
    """``k=v k=v``, leaving out Hydra's own settings, which do not change results."""
    shown = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return _truncate(" ".join(shown), width) if shown else "-"


def _short_error(error: Any) -> str:
    """The line of an error that says what went wrong (a traceback's last line)."""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        error = f"{kind}: {message}" if kind and message else (message or kind or error)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def note(entry: RunEntry) -> str:
    """Why a run is not a normal result: its error, or why it could not be read."""
    if entry.problem:
        return entry.problem.replace(f"{entry.path}{os.sep}", "")
    if entry.status == "failed":
        error = (entry.record or {}).get("error")
        return (_short_error(error) if error is not None else "") or "failed (no error recorded)"
    if entry.debug_run:
        return "debug run"
    return ""


# --------------------------------------------------------------------------- columns


def select_metrics(entries: Sequence[RunEntry], spec: str | None) -> list[str]:
    """Metric columns to show: the requested keys/globs that some listed run has."""
    available: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        for key in entry.metrics:
            if key not in seen:
                seen.add(key)
                available.append(key)
    if spec is None:
        wanted = list(DEFAULT_METRICS)
    else:
        wanted = [part.strip() for part in spec.split(",") if part.strip()]
    columns: list[str] = []
    for pattern in wanted:
        if pattern == "all":
            pattern = "*"
        if any(ch in pattern for ch in "*?["):
            found = sorted(k for k in available if fnmatch.fnmatchcase(k, pattern))
        else:
            found = [pattern] if pattern in seen else []
        columns.extend(k for k in found if k not in columns)
    return columns


def summary(listed: Sequence[RunEntry], total: int, runs_dir: Path) -> str:
    counts = Counter(e.status for e in listed)
    parts = ", ".join(f"{counts[s]} {s}" for s in RUN_STATUSES if counts[s])
    runs = "run" if len(listed) == 1 else "runs"
    scope = f"in {runs_dir}" if len(listed) == total else f"of {total} in {runs_dir}"
    return f"{len(listed)} {runs} ({scope}): {parts}"


def render_table(entries: Sequence[RunEntry], metrics: Sequence[str]) -> str:
    notes = [note(e) for e in entries]
    headers = ["run_id", "name", "status", "overrides", *metrics, "duration"]
    if any(notes):
        headers.append("note")
    rows = []
    for entry, text in zip(entries, notes, strict=True):
        row = [entry.run_id, entry.name, entry.status, compact_overrides(entry.overrides)]
        row += [format_number(entry.metrics.get(m)) for m in metrics]
        row.append(format_duration(entry.duration_s))
        if any(notes):
            row.append(_truncate(text, NOTE_WIDTH))
        rows.append(row)
    align = (
        ["left"] * 4 + ["right"] * (len(metrics) + 1) + ["left"] * (len(headers) - len(metrics) - 5)
    )
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align)


def _raw_row(entry: RunEntry, metrics: Sequence[str]) -> dict[str, Any]:
    return {
        "run_id": entry.run_id,
        "name": entry.name,
        "status": entry.status,
        "created": entry.created,
        "duration_s": entry.duration_s,
        "overrides": entry.overrides,
        "metrics": {m: entry.metrics[m] for m in metrics if m in entry.metrics},
        "error": (entry.record or {}).get("error"),
        "problem": entry.problem,
        "path": str(entry.path),
    }


def write_csv(entries: Sequence[RunEntry], metrics: Sequence[str], out) -> None:
    fields = ["run_id", "name", "status", "created", "duration_s", "overrides", *metrics]
    fields += ["error", "problem", "path"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        row = _raw_row(entry, metrics)
        row.update(row.pop("metrics"))
        row["overrides"] = " ".join(row["overrides"])
        row["error"] = _short_error(row["error"]) if row["error"] is not None else None
        writer.writerow(row)


def write_json(entries: Sequence[RunEntry], metrics: Sequence[str], out) -> None:
    json.dump([_raw_row(e, metrics) for e in entries], out, indent=2, default=str)
    out.write("\n")


# --------------------------------------------------------------------------- groups


def format_summary(summary: Summary | None, n: int) -> str:
    """``mean ± std``, with the count when fewer of the group's ``n`` runs have the metric."""
    if summary is None:
        return ""
    text = format_number(summary.mean)
    if summary.std is not None:
        text += f" ± {format_number(summary.std)}"
    return text if summary.n == n else f"{text} (n={summary.n})"


def render_groups(groups: Sequence[Group], keys: Sequence[str], metrics: Sequence[str]) -> str:
    pooled = any(group.pooled_over for group in groups)
    headers = [*keys, "n", "seeds", *metrics] + ["pooled over"] * pooled
    rows = []
    for group in groups:
        row = [value or "-" for value in group.values]
        row += [str(len(group.runs)), _truncate(",".join(group.seeds), 24)]
        row += [format_summary(group.metrics.get(m), len(group.runs)) for m in metrics]
        if pooled:
            row.append(", ".join(group.pooled_over))
        rows.append(row)
    align = ["left"] * len(keys) + ["right"] * (len(metrics) + 2) + ["left"] * pooled
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align)


def _group_row(group: Group, keys: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    return {
        "group": dict(zip(keys, group.values, strict=True)),
        "n": len(group.runs),
        "seeds": group.seeds,
        "metrics": {
            m: {"mean": s.mean, "std": s.std, "n": s.n}
            for m in metrics
            if (s := group.metrics.get(m)) is not None
        },
        "pooled_over": group.pooled_over,
        "run_ids": [run.run_id for run in group.runs],
    }


def write_groups(groups: Sequence[Group], keys: Sequence[str], metrics: Sequence[str], fmt: str):
    rows = [_group_row(group, keys, metrics) for group in groups]
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    fields = [*keys, "n", "seeds"]
    fields += [f"{m}:{part}" for m in metrics for part in ("mean", "std", "n")]
    fields.append("pooled_over")
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {**row["group"], "n": row["n"], "seeds": " ".join(row["seeds"])}
        for metric, summary in row["metrics"].items():
            flat.update({f"{metric}:{part}": value for part, value in summary.items()})
        flat["pooled_over"] = " ".join(row["pooled_over"])
        writer.writerow(flat)


def group_summary(groups: Sequence[Group], listed: Sequence[RunEntry]) -> str:
    complete = sum(len(group.runs) for group in groups)
    text = (
        f"{len(groups)} group{'s' * (len(groups) != 1)} of {complete} complete "
        f"run{'s' * (complete != 1)}"
    )
    others = len(listed) - complete
    if others:
        text += f" ({others} listed run{'s' * (others != 1)} not complete, left out)"
    text += "; mean ± std over each group's runs (sample std, ddof = 1)"
    if any(group.pooled_over for group in groups):
        text += "; pooled over: settings other than the seed that differ inside a group"
    return text


# --------------------------------------------------------------------------- sweeps


def _sweep_row(sweep: Sweep) -> dict[str, Any]:
    counts = sweep.counts
    return {
        "sweep": sweep.name,
        "started": sweep.started,
        "runs": len(sweep.outcomes),
        **{status: counts[status] for status in OUTCOME_STATUSES},
        "path": str(sweep.path),
    }


def list_sweeps(sweeps: Sequence[Sweep], runs_dir: Path, fmt: str) -> int:
    """``--by-sweep``: one row per sweep with how many of its runs completed, skipped, failed."""
    rows = [_sweep_row(s) for s in sweeps]
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(_sweep_row(Sweep(runs_dir))))
        writer.writeheader()
        writer.writerows(rows)
    elif rows:
        headers = ["sweep", "started", "runs", *OUTCOME_STATUSES]
        table = [[row[h] for h in headers] for row in rows]
        print(tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True))
        print()
        noun = "sweep" if len(rows) == 1 else "sweeps"
        where = runs_dir / SWEEPS_DIR
        print(f"{len(rows)} {noun} in {where} (list one: sweeplab runs --sweep NAME)")
    if not rows:
        print(
            f"No sweeps in {runs_dir.resolve()}: launch one with `sweeplab train -m …`.",
            file=sys.stdout if fmt == "table" else sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------- main


def _empty_message(runs_dir: Path) -> str:
    where = runs_dir.resolve()
    if not runs_dir.exists():
        state = "does not exist"
    elif not runs_dir.is_dir():
        state = "is a file, not a run store (a directory of runs)"
    else:
        state = "holds no runs"
    return (
        f"No runs: {where} {state}.\n"
        "Launch a first run with `sweeplab train` (add overrides, or -m for a sweep), "
        f"or point --runs-dir, ${layout.RUNS_DIR_ENV} or ${layout.HOME_ENV} at an existing run store."
    )


def _main_grouped(args, parser, listed, entries, runs_dir: Path) -> int:
    keys = [key.strip() for key in args.group_by.split(",") if key.strip()]
    if not keys:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: --group-by needs a key (e.g. augment)", file=sys.stderr)
        return 2
    complete = [e for e in listed if e.status == "complete"]
    metrics = select_metrics(complete, args.metrics)
    groups = group_runs(listed, keys, metrics)
    out = sys.stdout if args.format == "table" else sys.stderr
    if args.format != "table":
        write_groups(groups, keys, metrics, args.format)
    elif groups:
        print(render_groups(groups, keys, metrics))
        print()
    if not entries:
        print(_empty_message(runs_dir), file=out)
    elif not groups:
        print(
            f"No complete runs to group ({len(listed)} listed, {len(entries)} in {runs_dir}).",
            file=out,
        )
    else:
        print(group_summary(groups, listed), file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sweeplab runs``; returns the exit code (2 for bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    runs_dir = layout.runs_dir(args.runs_dir)

    if args.by_sweep:
        return list_sweeps(scan_sweeps(runs_dir), runs_dir, args.format)
    try:
        entries, listed = select(
            runs_dir,
            status=args.status,
            where=args.filters,
            sweep=args.sweep,
            include_debug=args.include_debug,
        )
    except UnknownSweepError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    metrics = select_metrics(listed, args.metrics)
    if args.metrics and listed:
        for key in args.metrics.split(","):
            key = key.strip()
            if key and key != "all" and not any(c in key for c in "*?[") and key not in metrics:
                print(f"note: no listed run has metric {key!r}", file=sys.stderr)
    if args.group_by is not None:
        return _main_grouped(args, parser, listed, entries, runs_dir)
    hidden = [] if args.include_debug else [e for e in entries if e.debug_run]
    hidden = filter_runs(hidden, status=args.status, where=args.filters)
    message = None
    if not entries:
        message = _empty_message(runs_dir)
    elif not listed and not hidden:
        criteria = " ".join([f"--status {args.status}"] * bool(args.status) + args.filters)
        message = f"No runs match {criteria} ({len(entries)} in {runs_dir})."

    if args.format == "csv":
        write_csv(listed, metrics, sys.stdout)
    elif args.format == "json":
        write_json(listed, metrics, sys.stdout)
    elif listed:
        print(render_table(listed, metrics))
        print()
        print(summary(listed, len(entries), runs_dir))
    if message:
        print(message, file=sys.stdout if args.format == "table" else sys.stderr)
    elif args.format != "table":
        print(summary(listed, len(entries), runs_dir), file=sys.stderr)
    if hidden:
        runs = "run matches" if len(hidden) == 1 else "runs match"
        too = " too" if listed else ""
        print(
            f"{len(hidden)} debug {runs}{too}, not listed (--include-debug lists them).",
            file=sys.stdout if args.format == "table" else sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
