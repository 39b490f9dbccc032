"""What each job of a sweep did, written where every launcher can reach it.

Launchers other than Hydra's basic one run jobs in other processes (joblib
workers, SLURM tasks, Ray actors), so nothing a job keeps in memory reaches the
launching process. Each job therefore writes its outcome to
``<sweep_dir>/outcomes/<run_id>.json``; the :class:`SweepSummary` callback reads
them back in the launching process once the launcher returns, and
``sweeplab runs --by-sweep`` reads them later.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweeplab.files import atomic_write_text

SWEEPS_DIR = "_sweeps"
OUTCOMES_DIR = "outcomes"
# ``running_elsewhere``: another trainer held the run's lock, so this job left it alone.
RUNNING_ELSEWHERE = "running_elsewhere"
OUTCOME_STATUSES = ("complete", "skipped", "failed", RUNNING_ELSEWHERE)
SWEEP_TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"  # as hydra.sweep.dir names them
SWEEP_TIME_LENGTH = len("2024-01-31_12-00-00")


def named_sweep_dir(label: str) -> str:
    """The ``hydra.sweep.dir=`` override of a sweep named ``<label>_<launch time>``."""
    return f"hydra.sweep.dir=${{paths.runs_dir}}/{SWEEPS_DIR}/{label}_${{now:{SWEEP_TIME_FORMAT}}}"


def write_outcome(
    sweep_dir: str | os.PathLike, run_dir: Path, status: str, error: str | None
) -> Path:
    """Record one job's outcome in its sweep directory (atomic: a reader never sees half)."""
    run_dir = Path(run_dir)
    path = Path(sweep_dir) / OUTCOMES_DIR / f"{run_dir.name}.json"
    payload = {
        "run_dir": str(run_dir),
        "run_id": run_dir.name,
        "name": run_dir.parent.name,
        "status": status,
        "error": error,
        "written": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def read_outcomes(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The outcomes recorded in ``sweep_dir``, by run id; an unreadable file counts as failed."""
    outcomes = []
    for path in sorted((Path(sweep_dir) / OUTCOMES_DIR).glob("*.json")):
        try:
            outcome = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(outcome, dict) or outcome.get("status") not in OUTCOME_STATUSES:
                raise ValueError("not an outcome record")
        except (OSError, ValueError) as exc:
            outcome = {
                "run_dir": "",
                "run_id": path.stem,
                "name": "",
                "status": "failed",
                "error": f"unreadable outcome {path}: {exc}",
            }
        outcomes.append(outcome)
    return outcomes


@dataclass
class Sweep:
    """One launch of ``sweeplab train -m``: its directory and its jobs' outcomes."""

    path: Path
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def started(self) -> str:
        """When it was launched: from the time its directory name ends with (Hydra's
        default name is only the time), else its mtime."""
        try:
            moment = datetime.strptime(self.name[-SWEEP_TIME_LENGTH:], SWEEP_TIME_FORMAT)
        except ValueError:
            try:
                moment = datetime.fromtimestamp(self.path.stat().st_mtime)
            except OSError:
                return ""
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    @property
    def counts(self) -> Counter:
        return Counter(o.get("status") for o in self.outcomes)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o.get("status") == "failed"]

    @property
    def running_elsewhere(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o.get("status") == RUNNING_ELSEWHERE]

    @property
    def run_ids(self) -> set[str]:
        return {str(o.get("run_id")) for o in self.outcomes}

    def summary_line(self) -> str:
        """Counts of each outcome; runs held by another trainer only when there are some."""
        counts = self.counts
        elsewhere = counts[RUNNING_ELSEWHERE]
        return (
            f"sweep: {len(self.outcomes)} runs — {counts['complete']} complete, "
            f"{counts['skipped']} already complete (skipped), {counts['failed']} failed"
            + (f", {elsewhere} running elsewhere (skipped)" if elsewhere else "")
        )


def scan_sweeps(runs_dir: str | os.PathLike) -> list[Sweep]:
    """Every sweep under ``<runs_dir>/_sweeps/``, oldest first."""
    root = Path(runs_dir) / SWEEPS_DIR
    if not root.is_dir():
        return []
    sweeps = [Sweep(p, read_outcomes(p)) for p in sorted(root.iterdir()) if p.is_dir()]
    return sorted(sweeps, key=lambda s: (s.started, s.name))


# The summary of the last sweep launched in this process (``sweeplab train`` exits on it).
LAST_SWEEP: Sweep | None = None


def report(sweep: Sweep, runs_dir: str | os.PathLike) -> str:
    """What a researcher needs after a sweep: counts, each failure and why, where to look."""
    lines = [sweep.summary_line()]
    lines += [f"  failed: {o.get('run_dir')}: {o.get('error')}" for o in sweep.failed]
    lines += [
        f"  running elsewhere: {o.get('run_dir')} ({o.get('error')})"
        for o in sweep.running_elsewhere
    ]
    lines.append(f"  runs: {Path(runs_dir).resolve()}")
    lines.append(f"  sweep: {sweep.path.resolve()} (sweeplab runs --sweep {sweep.name})")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Prints the sweep's summary in the launching process, after any launcher returns."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Resolved once here so the end sees the same timestamped directory.
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_SWEEP
        sweep_dir = self.sweep_dir or Path(str(config.hydra.sweep.dir))
        LAST_SWEEP = Sweep(sweep_dir, read_outcomes(sweep_dir))
        print(report(LAST_SWEEP, str(config.paths.runs_dir)), flush=True)
