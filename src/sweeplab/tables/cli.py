"""``sweeplab table SPEC``: render a paper table from the run store, launching what is missing.

With ``--launch`` one command reproduces a table: every run that is not complete,
whatever cell it belongs to, goes into one ``sweeplab train -m`` over a list of whole
override sets (``hydra/sweeper=jobs``), so a parallel launcher runs the cells side by
side, and the table is rendered from the records they write. The sweep is named after
the spec. A relaunch finds every run complete and trains nothing, because cells are
looked up by the same run id training uses.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from tabulate import tabulate

from sweeplab.tables.catalog import find_spec, list_specs, spec_dirs
from sweeplab.tables.cells import WAITING, RunGroup, RunSlot, Table, resolve
from sweeplab.tables.compare import render_comparison
from sweeplab.tables.render import FORMATS, render
from sweeplab.tables.spec import SpecError, TableSpec, load_spec
from sweeplab.tracking import layout
from sweeplab.tracking.sweeps import named_sweep_dir

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
        "--dry-run",
        action="store_true",
        help="list the missing runs, the sweep command and its jobs; run nothing",
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
    """The missing runs of one run group: those the sweep trains and those that wait."""

    group: RunGroup
    slots: list[RunSlot]  # missing or unfinished, run id known
    waiting: list[RunSlot]  # made from runs that are not in the store yet
    overrides: tuple[str, ...]  # the group's own, after the spec's base


@dataclass
class Plan:
    """Every missing run of a table, and the one sweep that trains those it can now."""

    launches: list[Launch]
    command: list[str]  # ``sweeplab train -m``, its jobs file named by :data:`JOBS_FILE_ARG`

    @property
    def jobs(self) -> list[list[str]]:
        """One override list per run to train: the group's overrides and the seed."""
        return [
            [*launch.overrides, f"seed={slot.seed}"]
            for launch in self.launches
            for slot in launch.slots
        ]

    def command_with(self, jobs_file: str | Path) -> list[str]:
        return [str(jobs_file) if part == JOBS_FILE_ARG else part for part in self.command]


# Where the command names its jobs file, which exists only while the sweep is launched.
JOBS_FILE_ARG = "hydra.sweeper.jobs_file=JOBS.yaml"


def sweep_label(spec: TableSpec) -> str:
    """The spec's file name as a directory name (the sweep is named after it)."""
    return re.sub(r"[^\w.-]+", "_", spec.path.stem) or "table"


def sweep_command(spec: TableSpec, launcher: str | None, runs_dir: Path | None) -> list[str]:
    """``sweeplab train -m`` over a jobs file (``hydra/sweeper=jobs``): the spec's base
    overrides shared by every job, the sweep named after the spec."""
    command = ["sweeplab", "train", "-m", "hydra/sweeper=jobs", JOBS_FILE_ARG]
    command += [o.text for o in spec.base]
    if runs_dir is not None:
        command.append(f"paths.runs_dir={runs_dir}")
    if launcher is not None:
        command.append(f"hydra/launcher={launcher}")
    command.append(named_sweep_dir(sweep_label(spec)))
    return command


def _own_overrides(spec: TableSpec, group: RunGroup) -> tuple[str, ...]:
    base = tuple(o.text for o in spec.base)
    assert group.overrides[: len(base)] == base, "a run group's overrides start with the base"
    return group.overrides[len(base) :]


def _plan(table: Table, args: argparse.Namespace) -> Plan:
    """The missing runs: the required source runs and the cells, in one sweep; a run that
    two groups name (a required run that is also a cell) is trained once. Cells made from
    runs not in the store yet wait for a second sweep."""
    launches, planned = [], set()
    for group in [*table.required, *table.groups]:
        slots = [slot for slot in group.launchable if slot.run_id not in planned]
        planned.update(slot.run_id for slot in slots)
        waiting = [slot for slot in group.incomplete if slot.status == WAITING]
        if slots or waiting:
            launches.append(Launch(group, slots, waiting, _own_overrides(table.spec, group)))
    return Plan(launches, sweep_command(table.spec, args.launcher, args.runs_dir))


def jobs_yaml(jobs: list[list[str]]) -> str:
    return yaml.safe_dump(jobs, default_flow_style=None, width=10**6)


def describe_plan(table: Table, plan: Plan) -> str:
    if not plan.launches:
        return f"nothing to run: all {sum(len(g.slots) for g in table.groups)} runs are complete"
    runs = len(plan.jobs)
    waiting = sum(len(launch.waiting) for launch in plan.launches)
    head = f"{runs} missing run{'s' * (runs != 1)} in one sweep"
    if waiting:
        head += f", {waiting} more once their source runs exist (a second sweep)"
    lines = [head + ":"]
    for launch in plan.launches:
        own = " ".join(launch.overrides) or "(the base only)"
        lines.append(f"  {_group_cells(table, launch.group)}: {own}")
        for slot in launch.slots:
            lines.append(f"    seed {slot.seed}: {slot.run_dir} ({slot.status})")
        for slot in launch.waiting:
            lines.append(f"    seed {slot.seed}: waiting for its source runs (launched first)")
    if runs:
        lines.append(f"  $ {shlex.join(plan.command)}")
        lines.append("  JOBS.yaml (one run each):")
        lines += [f"    {line}" for line in jobs_yaml(plan.jobs).splitlines()]
    return "\n".join(lines)


def _launch(plan: Plan) -> list[str]:
    """Run the sweep (its output to stderr, so stdout stays the table); returns failures."""
    if not plan.jobs:
        return []
    with tempfile.TemporaryDirectory(prefix="sweeplab-table-") as tmp:
        jobs_file = Path(tmp) / "jobs.yaml"
        jobs_file.write_text(jobs_yaml(plan.jobs), encoding="utf-8")
        command = plan.command_with(f"hydra.sweeper.jobs_file={jobs_file}")
        print(f"launching {shlex.join(command)}", file=sys.stderr, flush=True)
        argv = [sys.executable, "-m", "sweeplab", *command[1:]]
        result = subprocess.run(argv, stdout=2, check=False)  # fd 2: stdout is the table
    if result.returncode != 0:
        return [f"the sweep of {len(plan.jobs)} runs: exit code {result.returncode}"]
    return []


def _launch_until_done(table: Table, plan: Plan, spec: TableSpec, args) -> tuple[Table, list[str]]:
    """Sweep after sweep until nothing is left to train: runs made from other runs know
    their run ids only once those exist, so a chain base → fine-tunes → merges takes one
    sweep per level. Stops at a failure, or when a sweep would train only runs an
    earlier one already tried (they failed inside it)."""
    failures: list[str] = []
    tried: set[str] = set()
    while True:
        print(describe_plan(table, plan), file=sys.stderr, flush=True)
        failures = _launch(plan)
        tried.update(slot.run_id for launch in plan.launches for slot in launch.slots)
        table.reload()
        waiting = [group for group in [*table.required, *table.groups] if group.incomplete]
        if failures or not waiting:
            return table, failures
        # Runs made from other runs know their run ids once those runs exist.
        table = resolve(spec, args.runs_dir)
        plan = _plan(table, args)
        new = {slot.run_id for launch in plan.launches for slot in launch.slots} - tried
        if not new:
            return table, failures


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
    if args.launch and plan.launches:
        table, failures = _launch_until_done(table, plan, spec, args)

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
