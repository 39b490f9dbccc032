"""The publish app: ``sweeplab publish run=<dir|id> logger=tensorboard|wandb``.

Sends a finished run to a logger from the run store, as if the logger had been
configured when it trained: the stored config as hyperparameters, every row of
``metrics.csv`` at its step, the record's metrics as the summary at the last step,
and the pictures under ``plots/``. Nothing is retrained or re-evaluated. W&B
continues the run's own W&B id (``logger_ids.wandb`` in the record), offline unless
credentials are found (then ``sweeplab sync`` uploads it); TensorBoard writes its
event files under the run directory (``tensorboard/``), as a training run would.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeplab.tracking.layout import METRICS_FILE, PLOTS_DIR, runs_dir_from_overrides

log = logging.getLogger("sweeplab.publish")

USAGE = """usage: sweeplab publish run=<run dir | run id> logger=<tensorboard|wandb> [logger.… overrides]

Send a finished run (its config, per-epoch metrics from metrics.csv, summary metrics and
plots) from the run store to a logger, without training again, e.g.
  sweeplab publish run=0123abcd4567 logger=wandb
  sweeplab publish run=runs/digits_small_cnn/0123abcd4567 logger=tensorboard
  sweeplab publish run=0123abcd4567 logger=wandb logger.wandb.project=my_project
W&B is offline unless credentials are found; upload offline runs with sweeplab sync.
A run id is looked up in the run store: paths.runs_dir=… if given, else $SWEEPLAB_RUNS_DIR,
else $SWEEPLAB_HOME/runs, else ./runs.
"""

PUBLISH_OVERRIDE_PREFIXES = ("logger=", "logger.", "logger/", "paths.")


class PublishError(Exception):
    """A publication that cannot start; the message says what to do."""


def logger_config(overrides: list[str], tags: Any = None) -> DictConfig:
    """The ``logger`` node that ``sweeplab train`` would build from ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sweeplab.configs import config_dir
    from sweeplab.tracking.identity import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
    except Exception as exc:
        raise PublishError(f"the overrides do not compose: {exc}") from exc
    finally:
        GlobalHydra.instance().clear()
    if tags is not None:
        OmegaConf.update(cfg, "tags", tags, force_add=True)
    return cfg.logger


def publish_run(run_dir: Path, overrides: list[str]) -> list[str]:
    """Send the complete run at ``run_dir`` to the loggers of ``overrides``; their names."""
    from sweeplab.tracking.csv_logger import RunCSVLogger
    from sweeplab.tracking.loggers import (
        build_loggers,
        close_loggers,
        publish_images,
        publish_summary,
    )
    from sweeplab.tracking.metrics_csv import LEADING, read_metrics_csv
    from sweeplab.tracking.record import CorruptRecordError, read_record

    bad = [o for o in overrides if not o.lstrip("+~").startswith(PUBLISH_OVERRIDE_PREFIXES)]
    if bad:
        raise PublishError(f"sweeplab publish takes logger (and paths) overrides only, got {bad}")
    try:
        record = read_record(run_dir)
    except CorruptRecordError as exc:
        raise PublishError(str(exc)) from exc
    if record is None or record.get("status") != "complete":
        status = "without a record" if record is None else record.get("status")
        raise PublishError(f"run {run_dir} is {status}; only complete runs are published")
    config = record.get("config") or {}
    logger_cfg = logger_config(overrides, config.get("tags"))
    run_name = f"{record.get('name') or run_dir.parent.name}/{run_dir.name}"
    wandb_id = (record.get("logger_ids") or {}).get("wandb")
    built = build_loggers(logger_cfg, run_dir, run_name, wandb_id)
    loggers = [logger for logger in built if not isinstance(logger, RunCSVLogger)]
    if not loggers:
        raise PublishError("no logger to publish to: add logger=tensorboard or logger=wandb")
    try:
        for logger in loggers:
            logger.log_hyperparams(config)
        step = 0
        for row in read_metrics_csv(run_dir / METRICS_FILE):
            values = {
                k: v for k, v in row.items() if k not in LEADING and isinstance(v, int | float)
            }
            step = int(row.get("step", step))
            if "epoch" in row:
                values["epoch"] = row["epoch"]
            if values:
                for logger in loggers:
                    logger.log_metrics(values, step=step)
        step = int((record.get("metrics") or {}).get("train/steps", step))
        publish_summary(loggers, record.get("metrics") or {}, step=step)
        pictures = {f"{PLOTS_DIR}/{p.stem}": p for p in sorted((run_dir / PLOTS_DIR).glob("*.png"))}
        publish_images(loggers, pictures, step=step)
        for logger in loggers:
            logger.save()
            if type(logger).__name__ != "WandbLogger":
                logger.finalize("success")
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers)
    return [type(logger).__name__.removesuffix("Logger").lower() for logger in loggers]


def main(args: list[str]) -> int:
    from sweeplab.tracking.runs import RunError, open_run

    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    specs = [a for a in args if a.startswith("run=")]
    overrides = [a for a in args if not a.startswith("run=")]
    if len(specs) != 1:
        print(f"sweeplab publish: give exactly one run=<dir|id>\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        run = open_run(
            specs[0].partition("=")[2], runs_dir_from_overrides(overrides), require_complete=False
        )
        names = publish_run(run.path, overrides)
    except (PublishError, RunError) as exc:
        print(f"sweeplab publish: {exc}", file=sys.stderr)
        return 1
    print(f"run {run.path.name} published to {', '.join(names)} from {run.path}")
    return 0
