"""Build the configured experiment loggers for one run directory.

``metrics.csv`` is always written; W&B goes offline when no credentials are
present and keeps one W&B run id per sweeplab run so a resume continues it.
Runs of one sweep share a W&B group, so W&B shows a sweep the way the store does.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sweeplab.tracking.csv_logger import RunCSVLogger
from sweeplab.tracking.layout import CHECKPOINT_DIR

log = logging.getLogger(__name__)
# Marks a W&B logger whose run logs its checkpoints itself when it closes.
CHECKPOINTS_AT_CLOSE = "sweeplab_checkpoints_at_close"


def wandb_api_key_found() -> bool:
    """True when an API key is in the environment or in ~/.netrc (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def wandb_has_credentials() -> bool:
    """True when a run may go online: a key is found and no offline mode is forced."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return False
    return wandb_api_key_found()


def wandb_group(run_name: str) -> str:
    """The W&B group of a run: its sweep (the sweep directory's name) under ``-m``, else itself."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                return Path(str(hydra_cfg.sweep.dir)).name
    except (ImportError, ValueError):
        pass
    return run_name


def new_wandb_id(run_id: str) -> str:
    """A W&B run id tied to the sweeplab run, unique across run stores."""
    return f"{run_id}-{secrets.token_hex(3)}"


def build_loggers(
    logger_cfg: DictConfig | None,
    run_dir: Path,
    run_name: str,
    wandb_id: str | None,
) -> list[Any]:
    """Instantiate every logger in ``logger_cfg``; add the CSV logger if it is missing."""
    loggers: list[Any] = []
    for key, cfg in (logger_cfg or {}).items():
        if cfg is None or "_target_" not in cfg:
            continue
        target = str(cfg["_target_"])
        if target.endswith("WandbLogger"):
            options = OmegaConf.to_container(cfg, resolve=True)
            offline = options.pop("offline", None)
            if offline is None:
                offline = not wandb_has_credentials()
            if not options.get("group"):
                options["group"] = wandb_group(run_name)
            # Lightning refuses log_model offline; W&B itself keeps artifacts for `wandb sync`,
            # so offline runs log their checkpoints when they close (see close_loggers).
            checkpoints_at_close = bool(offline and options.get("log_model"))
            if checkpoints_at_close:
                options["log_model"] = False
            logger = instantiate(
                options,
                save_dir=str(run_dir),
                name=run_name,
                id=wandb_id,
                resume="allow",
                offline=offline,
            )
            setattr(logger, CHECKPOINTS_AT_CLOSE, checkpoints_at_close)
            loggers.append(logger)
        else:
            try:
                loggers.append(instantiate(cfg, save_dir=str(run_dir)))
            except Exception as exc:
                raise ValueError(f"logger.{key} could not be created: {exc}") from exc
    if not any(isinstance(logger, RunCSVLogger) for logger in loggers):
        loggers.insert(0, RunCSVLogger(save_dir=run_dir))
    return loggers


def csv_logger(loggers: list[Any]) -> RunCSVLogger:
    return next(logger for logger in loggers if isinstance(logger, RunCSVLogger))


def publish_summary(loggers: list[Any], metrics: dict[str, float | str], step: int) -> None:
    """Send the final metrics to every logger except the CSV (they live in the record).

    Text values (a lineage such as ``teacher/run_ids``) go into W&B's summary like the
    numbers; other loggers' ``log_metrics`` takes numbers only, so they get them as
    hyperparameters.
    """
    numbers = {key: value for key, value in metrics.items() if not isinstance(value, str)}
    texts = {key: value for key, value in metrics.items() if isinstance(value, str)}
    for logger in loggers:
        if isinstance(logger, RunCSVLogger):
            continue
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update(metrics)
        else:
            logger.log_metrics(numbers, step=step)
            if texts:
                logger.log_hyperparams(texts)
            logger.save()


def publish_images(loggers: list[Any], images: dict[str, Path], step: int) -> None:
    """Send the run's pictures (``key -> PNG path``) to the loggers that show images."""
    if not images:
        return
    for logger in loggers:
        name = type(logger).__name__
        if name == "WandbLogger":
            import wandb

            logger.experiment.log(
                {key: wandb.Image(str(path)) for key, path in images.items()}, commit=False
            )
        elif name == "TensorBoardLogger":
            import numpy as np
            from PIL import Image

            for key, path in images.items():
                with Image.open(path) as picture:
                    pixels = np.asarray(picture.convert("RGB"))
                logger.experiment.add_image(key, pixels, global_step=step, dataformats="HWC")


def log_checkpoints(experiment: Any, run_dir: Path) -> None:
    """Add the run's checkpoints to the W&B run as one ``model`` artifact."""
    import wandb

    paths = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    if not paths:
        return
    artifact = wandb.Artifact(f"model-{experiment.id}", type="model")
    for path in paths:
        artifact.add_file(str(path), name=path.name)
    experiment.log_artifact(artifact, aliases=["latest"])


def close_loggers(loggers: list[Any], failed: bool = False) -> None:
    """Finish W&B runs (marked failed when the run failed); say how to upload offline ones."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        experiment = getattr(logger, "_experiment", None)  # None: no W&B run was started
        if experiment is None or not hasattr(experiment, "finish"):
            continue
        if getattr(logger, CHECKPOINTS_AT_CLOSE, False) and not failed:
            log_checkpoints(experiment, Path(logger.save_dir))
        offline = getattr(experiment.settings, "mode", "") == "offline" or getattr(
            experiment.settings, "_offline", False
        )
        run_path = Path(experiment.dir).parent
        experiment.finish(exit_code=1 if failed else 0)
        if offline:
            log.info(
                "W&B run saved offline in %s; upload it with `sweeplab sync` (or `make sync`)",
                run_path,
            )
