"""The training app: compose → instantiate → fit → evaluate → record.

One call of :func:`execute` is one run in ``runs/<name>/<run_id>/``. A complete
run is skipped, an interrupted one resumes from ``checkpoints/last.ckpt``, and a
failure is written to the record instead of stopping the other jobs of a sweep.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeplab.configs import config_dir
from sweeplab.console import duration, status
from sweeplab.console import is_rank_zero as _is_rank_zero
from sweeplab.files import atomic_write_text
from sweeplab.tracking.identity import compute_run_id, register_resolvers
from sweeplab.tracking.layout import (
    BEST_CKPT,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_CKPT,
    METRICS_FILE,
    PLOTS_DIR,
    RECORD_FILE,
)
from sweeplab.tracking.lineage import SOURCES_FIELD, pin_sources
from sweeplab.tracking.record import (
    CorruptRecordError,
    new_record,
    now_iso,
    read_record,
    write_record,
)
from sweeplab.tracking.run_lock import LOCK_FILE, Holder, RunLock, read_holder
from sweeplab.tracking.sweeps import RUNNING_ELSEWHERE, write_outcome

log = logging.getLogger("sweeplab.train")
register_resolvers()


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


_DROP_ADVERTISEMENTS = _DropAdvertisements()


def _quiet_third_party_noise() -> None:
    """Silence messages that say nothing about this run (idempotent: once per sweep job)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DROP_ADVERTISEMENTS)
    for message in (
        r".*is smaller than the logging interval.*",  # we log per epoch, on purpose
        r".*isinstance\(treespec, LeafSpec\).*",  # Lightning vs torch pytree deprecation
    ):
        warnings.filterwarnings("ignore", message=message)


@dataclass
class Outcome:
    """What happened to one run of a launch: ``complete``, ``skipped``, ``failed`` or
    ``running_elsewhere`` (another trainer holds its lock; ``error`` then names it)."""

    run_dir: Path
    status: str
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    # A config value that cannot work: the run did not start and its record is untouched.
    bad_config: bool = False


# What the log line of a finished run shows (the record holds everything).
SUMMARY_METRICS = (
    "test/cls/acc",
    "test/cls/nll",
    "test/cal/ece",
    "test/cal/ece_ts",
    "ood/near/energy/auroc",
    "ood/far/energy/auroc",
    "shift/mean/acc",
)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; the command exits with ``128 + signum``, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SLURM_REQUEUE_SIGNAL = signal.SIGUSR1  # `#SBATCH --signal=SIGUSR1@90`, as Lightning expects
CONFIG_ERROR_EXIT = 2  # a config value that cannot work, as `sweeplab eval` exits for one
RESUME_HINT = "relaunch to resume from checkpoints/last.ckpt"


def _requeue_slurm_job() -> None:
    """``scontrol requeue`` this job from rank 0, as Lightning's SIGUSR1 handler does.

    SLURM then stops the job (SIGTERM) and later reruns its command, which finds the
    same run id and run directory and resumes from ``checkpoints/last.ckpt``.
    """
    if not _is_rank_zero():
        return
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = os.environ.get("SLURM_JOB_ID", "")
    if array_job:
        job = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    try:
        code: int | str = subprocess.call(["scontrol", "requeue", job])
    except OSError as exc:
        code = str(exc)
    if code == 0:
        log.info("asked SLURM to requeue job %s", job)
    else:
        log.error("`scontrol requeue %s` failed (%s): relaunch the run to resume it", job, code)


def _interrupting_signals() -> tuple[signal.Signals, ...]:
    """SIGINT and SIGTERM; on SLURM (as Lightning detects it) also its requeue signal."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return (*INTERRUPTING_SIGNALS, SLURM_REQUEUE_SIGNAL)
    return INTERRUPTING_SIGNALS


@contextmanager
def _interruptible() -> Iterator[list[int]]:
    """SIGINT and SIGTERM (Ctrl-C; ``timeout``, SLURM and preemption) raise :class:`Interrupted`.

    Yields the signals received. Only the first raises, so that a second one cannot
    cut the record short. During ``trainer.fit`` Lightning puts its own SIGTERM
    handler first and calls the one found here after it, so a signal ends the same
    way inside and outside fit; a signal that was ignored when the run started
    (a background job's SIGINT) stays ignored.

    On SLURM, SIGUSR1 (sent before the time limit) requeues the job and raises too.
    Lightning's own SIGUSR1 handler is then not installed (it yields to one already
    there): it would save ``hpc_ckpt_N.ckpt`` from inside the signal handler, at any
    point of a step and mid-epoch, and resume from it whenever ``fit`` is given no
    checkpoint. That resume is not exact (the data loader restarts the epoch without
    its order or random state), and outside ``fit`` (data preparation, evaluation)
    SIGUSR1 would kill the process with its record left ``running``. Resuming from
    the epoch's ``last.ckpt`` keeps a requeued run's metrics identical to an
    uninterrupted one.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame) -> None:
        received.append(signum)
        if signum == SLURM_REQUEUE_SIGNAL:
            _requeue_slurm_job()
        if len(received) == 1:
            raise Interrupted(signum)

    previous = {signum: signal.getsignal(signum) for signum in _interrupting_signals()}
    for signum, handler_before in previous.items():
        if handler_before is not signal.SIG_IGN:
            signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, handler_before in previous.items():
            if handler_before is not None:
                signal.signal(signum, handler_before)


def _interrupting_signal(exc: BaseException, received: list[int]) -> int | None:
    """The signal that stopped the run, also when Lightning turned it into its own exception
    (``SIGTERMException`` from its loops, ``SystemExit(1)`` after a KeyboardInterrupt)."""
    if received:
        return received[0]
    if isinstance(exc, Interrupted):
        return exc.signum
    if type(exc).__name__ == "SIGTERMException":
        return int(signal.SIGTERM)
    return None


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    keys = [key for key in cfg if key != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def _short_error(exc: BaseException) -> str:
    """``Type: message`` of the error that matters, on one line, for records and summaries.

    Hydra wraps errors raised while instantiating a config node, and a node built
    inside another (the backbone, inside the regime) is wrapped twice; the innermost
    error says what was wrong and the innermost wrapper which node it was. A disk fault
    (full disk, corrupt archive, …) is said as the user fixes it, without the type.
    """
    from sweeplab.disk_faults import describe

    inner, node = exc, None
    while type(inner).__name__ == "InstantiationException" and inner.__cause__ is not None:
        keys = re.findall(r"full_key: (\S+)", str(inner))
        node = keys[-1] if keys else node
        inner = inner.__cause__
    fault = describe(inner)
    message = " ".join((fault or str(inner).strip() or repr(inner)).split())
    if node is not None:
        message += f" (while creating `{node}`)"
    return message if fault is not None else f"{type(inner).__name__}: {message}"


def _start_record(
    cfg: DictConfig,
    run_dir: Path,
    run_id: str,
    overrides: list[str],
    choices: dict[str, str],
    sources: list[str],
) -> dict:
    """The record this attempt continues: a new one, or the previous attempt's.

    ``sources`` are the ids of the runs this one is made from (its lineage).
    """
    from sweeplab.tracking.loggers import new_wandb_id
    from sweeplab.tracking.provenance import collect_provenance

    try:
        previous = read_record(run_dir)
    except CorruptRecordError as exc:
        log.warning("%s — starting a new record for this run", exc)
        previous = None
    config = resolved_config(cfg)
    provenance = collect_provenance(str(cfg.trainer.get("accelerator")), overrides)
    if previous is None:
        record = new_record(run_id, str(cfg.name), config, overrides, provenance)
    else:
        record = previous
        record.pop("traceback", None)
        record.update(
            status="running",
            error=None,
            finished=None,
            attempts=int(previous.get("attempts", 1)) + 1,
            config=config,
            overrides=overrides,
            provenance=provenance,
        )
    record["choices"] = choices
    if sources:
        record[SOURCES_FIELD] = sources
    record.setdefault("logger_ids", {})
    record["logger_ids"].setdefault("wandb", new_wandb_id(run_id))
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(config))
    record["artifacts"]["config"] = CONFIG_FILE
    write_record(run_dir, record)
    return record


def _checkpoint_epoch(path: Path) -> int:
    """Validate a checkpoint before resuming from it; returns the epoch it ends."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        return int(checkpoint["epoch"])
    except Exception as exc:
        if isinstance(exc, EOFError):
            reason = "the file is empty or truncated"
        elif type(exc).__name__ == "UnpicklingError":
            reason = "not a checkpoint that loads safely with torch.load(weights_only=True)"
        else:
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        raise RuntimeError(
            f"cannot resume: checkpoint {path} is corrupt or unreadable ({reason}). "
            "Delete it to restart this run from scratch."
        ) from exc


def _fit_and_evaluate(cfg: DictConfig, run_dir: Path, record: dict | None) -> dict | None:
    """Train and evaluate. Returns the metrics on rank 0, ``None`` on other ranks."""
    status("loading torch and Lightning")
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from sweeplab.assembly import MODEL_INPUT_KEY, ModelInput, build_components
    from sweeplab.tracking.loggers import build_loggers, close_loggers

    if cfg.eval_checkpoint not in ("last", "best"):
        raise ValueError(f"eval_checkpoint must be 'last' or 'best', got {cfg.eval_checkpoint!r}")
    _quiet_third_party_noise()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule, module = build_components(cfg, announce=status)
    if record is not None:
        record[MODEL_INPUT_KEY] = ModelInput.of(datamodule).to_record()

    ckpt_dir = run_dir / CHECKPOINT_DIR
    callbacks = []
    for key, callback_cfg in (cfg.get("callbacks") or {}).items():
        if callback_cfg is None:
            continue
        target = str(callback_cfg.get("_target_", ""))
        extra = {"dirpath": str(ckpt_dir)} if target.endswith("ModelCheckpoint") else {}
        try:
            callbacks.append(instantiate(callback_cfg, **extra))
        except Exception as exc:
            raise ValueError(f"callbacks.{key} could not be created: {exc}") from exc
    callbacks += _progress_bar(cfg, callbacks)

    # Only rank 0 holds the record; loggers on other ranks never start a W&B run.
    wandb_id = (record or {}).get("logger_ids", {}).get("wandb")
    loggers = build_loggers(cfg.get("logger"), run_dir, f"{cfg.name}/{run_dir.name}", wandb_id)
    try:
        return _train_and_evaluate(cfg, run_dir, record, datamodule, module, callbacks, loggers)
    except BaseException:
        close_loggers(loggers, failed=True)  # never leave a W&B run open for the next job
        raise


def _progress_bar(cfg: DictConfig, callbacks: list) -> list:
    """The training bar (running loss, last val accuracy), unless the trainer shows none
    or a configured callback is a bar already."""
    from pytorch_lightning.callbacks import ProgressBar

    from sweeplab.tracking.progress_bar import TrainProgressBar

    if not cfg.trainer.get("enable_progress_bar", True):
        return []
    if any(isinstance(callback, ProgressBar) for callback in callbacks):
        return []
    return [TrainProgressBar()]


def _train_and_evaluate(
    cfg: DictConfig,
    run_dir: Path,
    record: dict | None,
    datamodule,
    module,
    callbacks: list,
    loggers: list,
) -> dict | None:
    """Fit (resuming from last.ckpt if there is one), then evaluate once on rank 0."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    from sweeplab.tracking.loggers import close_loggers, publish_images, publish_summary
    from sweeplab.tracking.throughput import TrainThroughput

    ckpt_dir = run_dir / CHECKPOINT_DIR
    config = resolved_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(config)  # the CSV logger ignores it: config.yaml has it
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir)
    )

    last = ckpt_dir / LAST_CKPT
    if module.trains:
        status(
            f"training: {cfg.trainer.get('max_epochs')} epoch(s) on {trainer.strategy.root_device}"
        )
        _fit(trainer, module, datamodule, last, loggers, record)
    else:
        log.info("regime %s does not train: evaluating it as built", module.regime_name)
        _save_built(module, last)
    if not trainer.is_global_zero:
        return None

    # Evaluate once, on this process, on exactly the N samples of each split.
    if cfg.eval_checkpoint == "best" and module.trains:
        best = ckpt_dir / BEST_CKPT
        if not best.exists():
            raise FileNotFoundError(f"eval_checkpoint=best but {best} was not written (no val?)")
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    # Lightning moves the model back to the CPU at teardown; evaluate where it trained.
    device = trainer.strategy.root_device
    module.to(device).eval()
    status("evaluating (eval=full for the full protocol)")
    metrics, artifacts, details = _evaluate(cfg, module, datamodule, device, run_dir)
    plots_dir = run_dir / PLOTS_DIR if cfg.eval.get("plots", True) else None
    own_metrics, own_files = module.write_outputs(run_dir, plots_dir)
    metrics.update(own_metrics)
    artifacts.update(own_files)

    throughput = next((cb for cb in callbacks if isinstance(cb, TrainThroughput)), None)
    if throughput is not None and throughput.summary() is not None:
        metrics["perf/train_samples_per_s"] = throughput.summary()
    metrics["train/epochs"] = float(trainer.current_epoch)
    metrics["train/steps"] = float(trainer.global_step)
    # What the regime says about its source runs (a student's teachers) is published
    # beside the run's metrics, not stored among them.
    summary = {**metrics, **module.source_summary(metrics, plots_dir)}
    publish_summary(loggers, summary, step=trainer.global_step)
    pictures = run_pictures(run_dir)
    publish_images(loggers, pictures, step=trainer.global_step)
    close_loggers(loggers)
    artifacts.update({key: str(path.relative_to(run_dir)) for key, path in pictures.items()})

    artifacts["metrics_csv"] = METRICS_FILE
    if last.exists():
        artifacts["last_ckpt"] = f"{CHECKPOINT_DIR}/{LAST_CKPT}"
    if (ckpt_dir / BEST_CKPT).exists():
        artifacts["best_ckpt"] = f"{CHECKPOINT_DIR}/{BEST_CKPT}"
    if record is not None:
        record["artifacts"].update(artifacts)
        record["evaluation"] = details
    return metrics


def _fit(trainer, module, datamodule, last: Path, loggers, record) -> None:
    """``trainer.fit``, resuming from ``last`` when an earlier attempt left it."""
    from sweeplab.tracking.loggers import csv_logger

    ckpt_path = None
    if last.exists():
        resume_epoch = _checkpoint_epoch(last)
        log.info("resuming from %s (epoch %d done)", last, resume_epoch + 1)
        csv_logger(loggers).drop_epochs_from(resume_epoch + 1)
        ckpt_path = str(last)
        if record is not None:
            record.setdefault("resumed_from_epochs", []).append(resume_epoch + 1)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted; relaunch to resume from last.ckpt")


def _save_built(module, path: Path) -> None:
    """The weights of a regime that does not train, as its checkpoint (for ``sweeplab eval``)."""
    import io

    import torch

    from sweeplab.files import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "epoch": 0, "global_step": 0}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _evaluate(cfg: DictConfig, module, datamodule, device, run_dir: Path):
    """One pass over each evaluation set into the eval cache, then every metric from it,
    each phase shown as a bar (as training is, with ``trainer.enable_progress_bar``) and
    timed as ``perf/eval/<phase>_s``."""
    from sweeplab.evaluation.passes import EvalPasses
    from sweeplab.evaluation.progress import EvalProgress
    from sweeplab.evaluation.report import evaluate_cached

    progress = EvalProgress(show=bool(cfg.trainer.get("enable_progress_bar", True)))
    passes = EvalPasses(cfg.eval, run_dir, force=True)
    artifacts = passes.run(module, datamodule, device, progress)
    report = evaluate_cached(run_dir, cfg.eval, progress)
    metrics = {**report.metrics, **progress.metrics()}
    return metrics, {**artifacts, **report.artifacts}, report.details


def run_pictures(run_dir: Path) -> dict[str, Path]:
    """Every picture the run wrote under ``plots/``, keyed as the loggers show them."""
    return {f"{PLOTS_DIR}/{p.stem}": p for p in sorted((run_dir / PLOTS_DIR).glob("*.png"))}


def config_error(cfg: DictConfig) -> ValueError | None:
    """What is wrong with a value of ``cfg`` (its message names the full key, the value
    and what is allowed), if anything: every value by its type and range, then what
    ``eval`` names."""
    from sweeplab.evaluation.passes import check_eval_config
    from sweeplab.schema import check_config

    try:
        check_config(cfg)
        check_eval_config(cfg.eval, (cfg.get("data") or {}).get("held_out_classes"))
    except ValueError as exc:
        return exc
    return None


def _record_bad_value(
    cfg: DictConfig, run_dir: Path, overrides: list[str], choices: dict[str, str], error: ValueError
) -> None:
    """Record a run whose config cannot work as ``failed`` with the reason, so that a sweep's
    listing shows it beside the others. Only a new or failed record is written: a complete
    run stays complete (an ``eval.*`` typo must not undo it), and a ``running`` one may
    belong to a live trainer."""
    try:
        previous = read_record(run_dir)
    except CorruptRecordError:
        previous = None
    if previous is not None and previous.get("status") != "failed":
        return
    try:
        run_id = compute_run_id(cfg)
    except Exception:  # the id itself cannot be computed: there is no run to record
        return
    record = _start_record(cfg, run_dir, run_id, overrides, choices, [])
    trace = "".join(traceback.format_exception(error))
    record.update(status="failed", error=str(error), traceback=trace, finished=now_iso())
    write_record(run_dir, record)


def _skip_if_complete(run_dir: Path, cfg: DictConfig | None = None) -> Outcome | None:
    """A ``skipped`` outcome when ``run_dir`` holds a complete record (a corrupt one reruns).

    When ``cfg`` names loggers beyond the CSV, the log line says that nothing reached
    them and gives the ``sweeplab publish`` command that sends the finished run.
    """
    try:
        record = read_record(run_dir)
    except CorruptRecordError:
        return None
    if record is None or record.get("status") != "complete":
        return None
    log.info("run %s is already complete: %s (skipped)", record["run_id"], run_dir)
    loggers = _publishing_loggers(cfg)
    if loggers:
        log.info(
            "nothing was sent to %s; to send the finished run (config, metrics, plots): %s",
            " or ".join(loggers),
            "; ".join(f"sweeplab publish run={record['run_id']} logger={name}" for name in loggers),
        )
    return Outcome(run_dir, "skipped", record=record)


def _publishing_loggers(cfg: DictConfig | None) -> list[str]:
    """The configured loggers that ``sweeplab publish`` can send a run to."""
    logger_cfg = (cfg.get("logger") if cfg is not None else None) or {}
    return [
        name
        for name in ("wandb", "tensorboard")
        if isinstance(logger_cfg.get(name), DictConfig) and "_target_" in logger_cfg[name]
    ]


def _running_elsewhere(run_dir: Path, holder: Holder | None) -> Outcome:
    """The outcome of a run that another trainer holds: not trained here, not a failure."""
    detail = holder.describe() if holder is not None else "another trainer holds its lock"
    return Outcome(run_dir, RUNNING_ELSEWHERE, detail)


def _lock_run(cfg: DictConfig, run_dir: Path) -> tuple[RunLock | None, Outcome | None]:
    """Take the run's lock as ``on_running`` says: the held lock, or the outcome of this launch.

    The record is checked again once the lock is ours: the trainer we waited for (or
    one that finished just before we locked) may have completed the run.
    """
    lock = RunLock(run_dir)
    other = lock.acquire(cfg.get("on_running", "skip"))  # checked with the config
    if other is not None:
        return None, _running_elsewhere(run_dir, other)
    skipped = _skip_if_complete(run_dir, cfg)
    if skipped is not None:
        lock.release()
        return None, skipped
    return lock, None


def _failure_reason(exc: BaseException, received: list[int]) -> str:
    """What the record says: the error, or which signal interrupted the run."""
    signum = _interrupting_signal(exc, received)
    if signum == SLURM_REQUEUE_SIGNAL:
        return f"interrupted by SIGUSR1 (SLURM's requeue signal); {RESUME_HINT}"
    if signum is not None:
        return f"interrupted by {signal.Signals(signum).name}; {RESUME_HINT}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return f"interrupted ({_short_error(exc)}); {RESUME_HINT}"
    return _short_error(exc)


def _record_failure(exc, received, cfg, run_dir, run_id, overrides, record, started) -> dict:
    """Write the failed (or interrupted) attempt into the record (rank 0), log it, return it.

    An interrupted run then raises :class:`Interrupted`, whichever form the signal took
    on its way out of Lightning, so that the command exits with ``128 + signum``.
    """
    error = _failure_reason(exc, received)
    if _is_rank_zero():
        if record is None:
            record = new_record(run_id, str(cfg.get("name", "")), {}, overrides, {})
        record.update(
            status="failed",
            error=error,
            traceback=traceback.format_exc(limit=20),
            finished=now_iso(),
            duration_s=round((record.get("duration_s") or 0) + time.time() - started, 3),
        )
        write_record(run_dir, record)
    log.error("run %s failed: %s", run_dir, error)
    signum = _interrupting_signal(exc, received)
    if signum is not None:
        raise Interrupted(signum) from exc
    return record or {}


def execute(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str] | None = None,
    choices: dict[str, str] | None = None,
) -> Outcome:
    """One run, start to record. Never raises for a run-level failure: returns it.

    ``choices`` maps config groups to the option chosen (Hydra's runtime choices),
    so the store can filter by ``backbone=timm`` even when it was a default.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides or [])
    rank_zero = _is_rank_zero()
    bad_value = config_error(cfg)  # before anything, also when the run is complete
    if bad_value is not None:
        log.error("run could not start: %s", bad_value)
        if rank_zero:
            _record_bad_value(cfg, run_dir, overrides, dict(choices or {}), bad_value)
        return Outcome(run_dir, "failed", str(bad_value), bad_config=True)
    try:
        run_id = compute_run_id(cfg)
        sources = pin_sources(cfg)  # the stored config names its source runs by id
    except Exception as exc:
        log.error("run could not start: %s", _short_error(exc))
        return Outcome(run_dir, "failed", _short_error(exc))
    skipped = _skip_if_complete(run_dir, cfg)
    if skipped is not None:
        return skipped
    lock = None
    if rank_zero:  # the other DDP ranks train the run their rank 0 has locked
        lock, outcome = _lock_run(cfg, run_dir)
        if outcome is not None:
            return outcome
    try:
        return _attempt(cfg, run_dir, run_id, overrides, choices, sources, lock)
    finally:
        if lock is not None:
            lock.release()


def _attempt(
    cfg: DictConfig,
    run_dir: Path,
    run_id: str,
    overrides: list[str],
    choices: dict[str, str] | None,
    sources: list[str],
    lock: RunLock | None,
) -> Outcome:
    """Train, evaluate and record one attempt at the run, holding its lock (rank 0).

    A trainer whose lock was stolen does not write its final record over the thief's.
    """
    rank_zero = _is_rank_zero()
    started = time.time()
    record = None
    status(f"run {run_id}: {run_dir}")
    with _interruptible() as received:
        try:
            if rank_zero:
                record = _start_record(
                    cfg, run_dir, run_id, overrides, dict(choices or {}), sources
                )
            metrics = _fit_and_evaluate(cfg, run_dir, record)
        except BaseException as exc:
            record = _record_failure(
                exc, received, cfg, run_dir, run_id, overrides, record, started
            )
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return Outcome(run_dir, "failed", _failure_reason(exc, received), record)

    if record is None:  # not rank zero: the record belongs to rank 0
        return Outcome(run_dir, "complete")
    if lock is not None and not lock.still_held():
        holder = read_holder(lock.path)
        thief = holder.describe() if holder is not None else "its lock file is gone"
        error = (
            f"another trainer took this run's lock ({thief}; on_running=steal): "
            "the results of this attempt were not recorded"
        )
        log.error("run %s: %s", run_dir, error)
        return Outcome(run_dir, "failed", error)
    record.update(
        status="complete",
        error=None,
        metrics={**record.get("metrics", {}), **metrics},
        finished=now_iso(),
        duration_s=round((record.get("duration_s") or 0) + time.time() - started, 3),
    )
    write_record(run_dir, record)
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in SUMMARY_METRICS if k in metrics)
    log.info("run complete: %s  (%s)  %s", run_dir, duration(record["duration_s"]), summary)
    return Outcome(run_dir, "complete", record=record)


def results(outcome: Outcome) -> str:
    """What a single run prints on stdout: its directory, its duration (this attempt's
    evaluation beside it) and the summary metrics, one per line."""
    record = outcome.record
    metrics = record.get("metrics") or {}
    spent = [duration(record.get("duration_s") or 0)]
    if "perf/eval/total_s" in metrics:
        spent.append(f"evaluation {duration(metrics['perf/eval/total_s'])}")
    if outcome.status == "skipped":
        state = f"already complete (it took {', '.join(spent)})"
    else:
        state = f"complete in {spent[0]}" + "".join(f" ({part})" for part in spent[1:])
    lines = [f"run {record.get('run_id')} {state}: {outcome.run_dir}"]
    width = max(len(key) for key in SUMMARY_METRICS)
    lines += [f"  {k:<{width}}  {metrics[k]:.4f}" for k in SUMMARY_METRICS if k in metrics]
    return "\n".join(lines)


def _spawns_processes(cfg: DictConfig) -> bool:
    """True when Lightning would start its own worker processes for this run (DDP)."""
    devices = cfg.trainer.get("devices", 1)
    return str(devices) not in ("1", "[0]", "None") and "LOCAL_RANK" not in os.environ


def execute_in_own_process(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> Outcome:
    """Run one sweep job as a single-run ``sweeplab train`` in a child process.

    Lightning's DDP launcher restarts ``sys.argv`` for its other ranks; inside a
    sweep that is the whole sweep command, which would launch the sweep again.
    A child started with only this job's overrides gives Lightning a single-run
    command to restart, so each job trains on its devices and writes one record.
    """
    bad_value = config_error(cfg)
    if bad_value is not None:
        log.error("run could not start: %s", bad_value)
        return Outcome(run_dir, "failed", str(bad_value), bad_config=True)
    skipped = _skip_if_complete(run_dir)
    if skipped is not None:
        return skipped
    command = [sys.executable, "-m", "sweeplab", "train", *overrides, f'hydra.run.dir="{run_dir}"']
    log.info("starting the multi-device job in its own process: %s", run_dir)
    result = subprocess.run(command, check=False)
    try:
        record = read_record(run_dir) or {}
    except CorruptRecordError as exc:
        return Outcome(run_dir, "failed", str(exc))
    if record.get("status") == "complete" and result.returncode == 0:
        return Outcome(run_dir, "complete", record=record)
    if result.returncode == 0:  # the job's process exits 0 on an incomplete run only when
        # another trainer holds its lock (the child locks it: this process never does)
        return _running_elsewhere(run_dir, read_holder(run_dir / LOCK_FILE))
    error = record.get("error") or f"the job's process exited with code {result.returncode}"
    return Outcome(run_dir, "failed", error, record)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``sweeplab train``."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun and _spawns_processes(cfg):
        outcome = execute_in_own_process(cfg, run_dir, overrides)
    else:
        choices = {
            group: str(option)
            for group, option in hydra_cfg.runtime.choices.items()
            if not group.startswith("hydra") and option is not None
        }
        outcome = execute(cfg, run_dir, overrides, choices)
    if multirun and _is_rank_zero():
        # This process may not be the launcher's: the outcome goes where the sweep's summary reads.
        write_outcome(hydra_cfg.sweep.dir, outcome.run_dir, outcome.status, outcome.error)
    if outcome.bad_config and not multirun:
        print(f"sweeplab: {outcome.error}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT)
    if outcome.status == RUNNING_ELSEWHERE:
        if multirun:
            log.info("run %s is running elsewhere (%s): skipped", outcome.run_dir, outcome.error)
        else:
            print(f"sweeplab: running elsewhere ({outcome.error}): {outcome.run_dir}", flush=True)
    finished = outcome.status in ("complete", "skipped") and outcome.record
    if finished and not multirun and _is_rank_zero():
        print(results(outcome), flush=True)
    if outcome.status == "failed" and not multirun:
        raise SystemExit(
            f"sweeplab: run failed: {outcome.error}\n  record: {outcome.run_dir / RECORD_FILE}"
        )


if __name__ == "__main__":
    main()
