"""Finished runs as frozen models: rebuild a run's regime from its record, load its weights.

Ensembles of runs, distillation teachers, merge ingredients and ``init_from=`` all
start from :func:`load_model`. The stored config rebuilds the regime exactly as the
runner built it (:mod:`sweeplab.assembly`), for the image shape and class count in
the record, so the run's data never has to be set up; the checkpoint is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import OmegaConf
from torch import nn

from sweeplab.assembly import MODEL_INPUT_KEY, ModelInput, build_regime, setup_data
from sweeplab.regimes.base import Regime
from sweeplab.tracking.runs import Run, RunError, open_run

log = logging.getLogger(__name__)


def model_input_of(run: Run) -> ModelInput:
    """The image shape and class count the run's model was built for.

    Runs recorded before this was stored are sized by setting up their data once.
    """
    stored = run.record.get(MODEL_INPUT_KEY)
    if stored is not None:
        try:
            return ModelInput.from_record(stored)
        except ValueError as exc:
            raise RunError(f"run {run.run_id}: {run.record_file}: {exc}; retrain the run") from exc
    log.info("run %s records no %s; setting up its data to size it", run.run_id, MODEL_INPUT_KEY)
    return ModelInput.of(setup_data(OmegaConf.create(run.config)))


def _as_run(run: Run | str | os.PathLike, runs_dir: str | os.PathLike | None) -> Run:
    return run if isinstance(run, Run) else open_run(run, runs_dir)


def load_model(
    run: Run | str | os.PathLike,
    checkpoint: str = "last",
    runs_dir: str | os.PathLike | None = None,
) -> Regime:
    """The run's regime with the weights of ``checkpoint`` ("last" or "best"), frozen.

    ``run`` is a :class:`~sweeplab.tracking.runs.Run`, a run directory, or a run id
    (or unique prefix) in the store. The model is in eval mode on the CPU and none of
    its parameters requires gradients.
    """
    run = _as_run(run, runs_dir)
    path = run.checkpoint(checkpoint)
    cfg = OmegaConf.create(run.config)
    try:
        regime = build_regime(cfg, model_input_of(run))
    except RunError:
        raise
    except Exception as exc:
        raise RunError(
            f"run {run.run_id}: its stored config ({run.record_file}) no longer builds a model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        regime.load_state_dict(state)
    except Exception as exc:
        reason = "empty or truncated" if isinstance(exc, EOFError) else type(exc).__name__
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RunError(
            f"run {run.run_id}: checkpoint {path} is corrupt or does not match the run's model "
            f"({reason}: {detail}); retrain the run (delete its directory and relaunch)"
        ) from exc
    return freeze(regime)


def load_backbone(
    run: Run | str | os.PathLike,
    checkpoint: str = "last",
    runs_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """The frozen backbone of a single-model run (``features`` and ``head``)."""
    run = _as_run(run, runs_dir)
    regime = load_model(run, checkpoint)
    backbone = getattr(regime, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise RunError(
            f"run {run.run_id}: regime {regime.regime_name!r} has no single backbone; "
            "use load_model for its members"
        )
    return backbone


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: a model that is read, never trained."""
    module.eval()
    module.requires_grad_(False)
    return module
