"""The output ensemble of a run's sources, as the baseline a weight merge is judged by.

A merge (``regime=merge``) averages its ingredients' weights; the question every
merging paper asks is how that compares with averaging their outputs. The
ingredients are finished runs whose eval caches already hold their test logits, so
the ensemble costs no forward pass: their member logits are concatenated and scored
by the mean probability (§6), with the same metric functions as the run's own.
The keys are ``merge/ensemble/test/cls/{acc,nll,brier}`` and
``merge/ensemble/test/cal/ece``. They are computed from the run's record, so
``sweeplab eval`` recomputes them as it does every other evaluation metric.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from sweeplab.evaluation.cache import load_outputs
from sweeplab.metrics.calibration import expected_calibration_error
from sweeplab.metrics.classification import classification_metrics, ensemble_log_probs
from sweeplab.tracking.record import CorruptRecordError, read_record

log = logging.getLogger(__name__)

PREFIX = "merge/ensemble"
FLAG = "ensemble_baseline"  # regime.ensemble_baseline asks for it


def source_ensemble_metrics(run_dir: Path, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """``merge/ensemble/test/…`` of the sources named by ``regime.runs`` in the run's
    record, when its regime asks for them (``regime.ensemble_baseline``); else ``{}``.

    A source without a test cache of the same labels is skipped with a warning, and
    with it the baseline, since an ensemble of fewer runs would not be the baseline.
    """
    from sweeplab.tracking.runs import RunError, open_run

    try:
        record = read_record(run_dir) or {}
    except CorruptRecordError:
        return {}  # the runner reports a broken record itself
    config = record.get("config") or {}
    regime = config.get("regime") or {}
    if not regime.get(FLAG) or not isinstance(regime.get("runs"), list):
        return {}
    if regime.get("tasks"):
        return {}  # heads of different tasks: no output ensemble; the fine-tunes are the baseline
    runs_dir = (config.get("paths") or {}).get("runs_dir")
    logits = []
    for run_id in regime["runs"]:
        try:
            run = open_run(run_id, runs_dir)
            outputs = load_outputs(run.path, "test")
        except (RunError, OSError, ValueError) as exc:
            log.warning("no ensemble baseline: source %s has no test eval cache (%s)", run_id, exc)
            return {}
        if not torch.equal(outputs.labels, labels):
            log.warning("no ensemble baseline: source %s was tested on other samples", run_id)
            return {}
        logits.append(outputs.member_logits)
    member_logits = torch.cat(logits, dim=1)
    metrics = classification_metrics(member_logits, labels, f"{PREFIX}/test")
    probs = ensemble_log_probs(member_logits).double().exp()
    metrics[f"{PREFIX}/test/cal/ece"] = expected_calibration_error(probs, labels, n_bins)
    return metrics
