"""A sweep over a list of whole override sets, launched as one batch.

Hydra's basic sweeper runs the Cartesian product of comma-separated values, so runs
that differ in *which* keys they set (the cells of a table: ``augment=mixup`` in one,
``regime.optimizer.lr=0.05`` in another) need one sweep each, and a parallel launcher
only ever sees one cell's seeds. This sweeper reads the jobs from a file, one override
list per job, and hands all of them to the configured launcher (basic, joblib,
submitit, ray) in one call::

    sweeplab train -m hydra/sweeper=jobs hydra.sweeper.jobs_file=jobs.yaml paths.runs_dir=/x

    # jobs.yaml
    - [augment=none, seed=0]
    - [regime.optimizer.lr=0.05, seed=0]

The overrides on the command line are shared by every job (comma-separated values there
are still swept: each value × each job). The jobs are copied into the sweep directory as
``jobs.yaml``, beside Hydra's ``multirun.yaml``, so the sweep can be launched again.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOBS_FILE = "jobs.yaml"


def read_jobs(path: str | Path) -> list[list[str]]:
    """The override lists of a jobs file: a YAML list whose items are lists of
    ``key=value`` strings, or one string of space-separated overrides."""
    try:
        jobs = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HydraException(f"hydra.sweeper.jobs_file={path}: cannot read it ({exc})") from exc
    if not isinstance(jobs, list) or not jobs:
        raise HydraException(f"hydra.sweeper.jobs_file={path}: expected a non-empty list of jobs")
    result = []
    for number, job in enumerate(jobs, 1):
        overrides = shlex.split(job) if isinstance(job, str) else job
        if not isinstance(overrides, list) or not all(
            isinstance(o, str) and "=" in o for o in overrides
        ):
            raise HydraException(
                f"hydra.sweeper.jobs_file={path}: job {number} is not a list of key=value "
                f"overrides: {job!r}"
            )
        result.append(list(overrides))
    return result


class JobsSweeper(Sweeper):
    """Launches every job of ``jobs_file`` (after the command line's shared overrides)
    in one batch, so a parallel launcher runs them side by side."""

    def __init__(self, jobs_file: str | None = None) -> None:
        super().__init__()
        self.jobs_file = jobs_file
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def batch(self, arguments: list[str]) -> list[list[str]]:
        """Every job's overrides: each combination of the shared ones, then the job's own."""
        if not self.jobs_file:
            raise HydraException("hydra/sweeper=jobs needs hydra.sweeper.jobs_file=<file>")
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        (shared,) = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
        return [[*common, *job] for common in shared for job in read_jobs(self.jobs_file)]

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        batch = self.batch(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / JOBS_FILE).write_text(
            yaml.safe_dump(read_jobs(self.jobs_file), default_flow_style=None, width=10**6),
            encoding="utf-8",
        )
        self.validate_batch_is_legal(batch)
        log.info("%d jobs in one batch", len(batch))
        results = self.launcher.launch(batch, initial_job_idx=0)
        for result in results:
            _ = result.return_value  # a job that raised raises here, as Hydra's own sweeper does
        return [results]
