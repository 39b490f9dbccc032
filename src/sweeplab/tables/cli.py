"""``sweeplab table SPEC``: render a paper table from the run store, launching what is missing.

With ``--launch`` one command reproduces a table: each cell whose runs are not
complete gets one ``sweeplab train -m`` over its missing seeds, and the table is
rendered from the records they write. A relaunch finds every run complete and
trains nothing, because cells are looked up by the same run id training uses.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from sweeplab.tables.catalog import find_spec, list_specs, spec_dirs
from sweeplab.tables.cells import WAITING, RunGroup, RunSlot, Table, resolve
from sweeplab.tables.compare import render_comparison
from sweeplab.tables.render import FORMATS, render
from sweeplab.tables.spec import SpecError, load_spec
from sweeplab.tracking import layout

LAUNCHERS = ("local", "joblib", "slurm", "ray")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeplab table",
        description="Render a table spec (experiments/*.yaml) as mean ± std over seeds "
        "beside the published values; --launch trains the missing runs first.",
        epilog="Example: sweeplab table digits_mixers --launch "
        "--launcher joblib paths.root_dir=/tmp/tables",
    )
    parser.add_argument(
        "spec",
        nargs="?",
        help="the table spec: a YAML file, or the name of a shipped spec or of one in "
        "--experiments-dir (e.g. digits_mixers); --list shows them",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides appended to the spec's base"
    )
    parser.add_argument(
        "--experiments-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="another directory of specs to find by name, searched before the shipped ones "
        "(repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the specs found by name")
    parser.add_argument("--format", choices=FORMATS, default="md", help="output (default: md)")
    parser.add_argument("--launch", action="store_true", help="train the missing runs first")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the missing runs and the commands, run nothing"
    )
    parser.add_argument(
        "--launcher", choices=LAUNCHERS, default=None, help="Hydra launcher for --launch"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="run store (default: where `sweeplab train` puts these runs: paths.runs_dir= "
        f"if the overrides give it, else {layout.RUNS_DIR_RULE}; paths.root_dir= stands in "
        f"for ${layout.HOME_ENV})",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("ROW_A", "ROW_B"),
        help="print the paired difference ROW_A − ROW_B over seeds with a 95%% interval",
    )
    return parser


def list_text(experiments_dirs: list[Path]) -> str:
    """``name  title  (path)`` of each spec found by name, for ``--list``."""
    rows = []
    for name, path in list_specs(experiments_dirs).items():
        try:
            title = load_spec(path).title
        except SpecError as exc:
            title = f"(unreadable: {exc})"
        rows.append([name, title, str(path)])
    where = ", ".join(str(d) for d in spec_dirs(experiments_dirs))
    if not rows:
        return f"no table specs in {where}"
    return tabulate(rows, headers=["spec", "title", "path"], tablefmt="simple")


def _group_cells(table: Table, group: RunGroup) -> str:
    """Which cells a run group feeds, for messages: ``row × col`` or ``row × (all columns)``."""
    if group.label:
        return f"requires: {group.label}"
    cells = [key for key, cell in table.cells.items() if cell.group is group]
    rows = sorted({row for row, _ in cells}, key=[r.label for r in table.spec.rows].index)
    columns = [column for _, column in cells]
    if len(columns) == len(table.spec.columns) and len(table.spec.columns) > 1:
        return f"{' / '.join(rows)} × (all columns)"
    return ", ".join(f"{row} × {column}" for row, column in cells)


@dataclass
class Launch:
    """One ``sweeplab train -m`` of a run group: the runs it trains and those that wait."""

    group: RunGroup
    slots: list[RunSlot]  # missing or unfinished, run id known
    waiting: list[RunSlot]  # made from runs that are not in the store yet
    command: list[str]


def launch_command(
    group: RunGroup, launcher: str | None, runs_dir: Path | None, slots: list[RunSlot] | None = None
) -> list[str]:
    """The ``sweeplab train -m`` command for a group's missing seeds (or ``slots``)."""
    seeds = ",".join(str(slot.seed) for slot in (group.launchable if slots is None else slots))
    command = ["sweeplab", "train", "-m", *group.overrides, f"seed={seeds}"]
    if runs_dir is not None:
        command.append(f"paths.runs_dir={runs_dir}")
    if launcher is not None:
        command.append(f"hydra/launcher={launcher}")
    return command


def _plan(table: Table, args: argparse.Namespace) -> list[Launch]:
    """The launches of the missing runs: the required source runs first, then the cells;
    a run that two groups name (a required run that is also a cell) is launched once."""
    plan, planned = [], set()
    for group in [*table.required, *table.groups]:
        slots = [slot for slot in group.launchable if slot.run_id not in planned]
        planned.update(slot.run_id for slot in slots)
        waiting = [slot for slot in group.incomplete if slot.status == WAITING]
        if slots or waiting:
            command = launch_command(group, args.launcher, args.runs_dir, slots)
            plan.append(Launch(group, slots, waiting, command))
    return plan


def describe_plan(table: Table, plan: list[Launch]) -> str:
    if not plan:
        return f"nothing to run: all {sum(len(g.slots) for g in table.groups)} runs are complete"
    total = sum(len(launch.slots) + len(launch.waiting) for launch in plan)
    lines = [
        f"{total} missing run{'s' * (total != 1)} in {len(plan)} launch{'es' * (len(plan) != 1)}:"
    ]
    for launch in plan:
        lines.append(f"  {_group_cells(table, launch.group)}")
        for slot in launch.slots:
            lines.append(f"    seed {slot.seed}: {slot.run_dir} ({slot.status})")
        for slot in launch.waiting:
            lines.append(f"    seed {slot.seed}: waiting for its source runs (launched first)")
        if launch.slots:
            lines.append(f"    $ {shlex.join(launch.command)}")
    return "\n".join(lines)


def _launch(table: Table, plan: list[Launch]) -> list[str]:
    """Run each command (its output to stderr, so stdout stays the table); returns failures."""
    failures = []
    for launch in plan:
        if not launch.slots:
            continue
        print(f"launching {shlex.join(launch.command)}", file=sys.stderr, flush=True)
        argv = [sys.executable, "-m", "sweeplab", *launch.command[1:]]
        result = subprocess.run(argv, stdout=2, check=False)  # fd 2: stdout is the table
        if result.returncode != 0:
            failures.append(f"{_group_cells(table, launch.group)}: exit code {result.returncode}")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sweeplab table``; 2 for a bad spec or arguments, 1 if runs failed."""
    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: not a key=value override: {' '.join(bad)}", file=sys.stderr)
        return 2
    if args.list:
        print(list_text(args.experiments_dir))
        return 0
    if args.spec is None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: name a spec (or --list the known ones)", file=sys.stderr)
        return 2
    try:
        spec_path = find_spec(args.spec, args.experiments_dir)
        spec = load_spec(spec_path).with_extra_overrides(args.overrides)
        if args.compare:
            labels = [row.label for row in spec.rows]
            unknown = [label for label in args.compare if label not in labels]
            if unknown:
                raise SpecError(
                    f"--compare: no row {unknown[0]!r} in {spec.path} (rows: {', '.join(labels)})"
                )
        table = resolve(spec, args.runs_dir)
    except SpecError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2

    plan = _plan(table, args)
    if args.dry_run:
        print(describe_plan(table, plan))
        return 0
    failures = []
    if args.launch and plan:
        print(describe_plan(table, plan), file=sys.stderr, flush=True)
        failures = _launch(table, plan)
        table.reload()
        if not failures and any(group.incomplete for group in table.groups):
            # Cells made from other runs know their run ids once those runs exist.
            table = resolve(spec, args.runs_dir)
            plan = _plan(table, args)
            if plan:
                print(describe_plan(table, plan), file=sys.stderr, flush=True)
                failures = _launch(table, plan)
                table.reload()

    print(render(table, args.format))
    if args.compare:
        comparison = render_comparison(table, *args.compare)
        if args.format == "csv":
            print(comparison, file=sys.stderr)
        else:
            prefix = "% " if args.format == "latex" else ""
            print()
            print("\n".join(prefix + line for line in comparison.splitlines()))

    status = 0
    for column in table.absent_metrics():
        print(
            f"{parser.prog}: error: {spec.where(column.metric_line)}: metric {column.metric!r} "
            f"(column {column.label!r}) is in none of the complete runs it reads",
            file=sys.stderr,
        )
        status = 1
    for failure in failures:
        print(f"{parser.prog}: launch failed: {failure}", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
