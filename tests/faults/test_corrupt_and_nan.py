"""Damaged files in a run directory (checkpoint, record, eval cache) and a loss that
diverges: each ends as a rerun or a failure that names what is wrong, never a traceback."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from sweeplab import cli
from sweeplab.evaluation.cache import cache_file
from sweeplab.tracking.record import read_record
from sweeplab.train import execute
from tests.conftest import FAST, run_in_store
from tests.test_train import run, run_dir_of


def test_corrupt_checkpoint_is_reported(make_cfg, store):
    cfg = make_cfg(*FAST)
    run_dir = run_dir_of(store, cfg)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    outcome = execute(cfg, run_dir)
    assert outcome.status == "failed"
    assert "corrupt" in outcome.error and "last.ckpt" in outcome.error
    assert read_record(run_dir)["status"] == "failed"


def test_a_corrupt_record_is_rerun_not_trusted(make_cfg, store):
    cfg = make_cfg(*FAST)
    run_dir = run_dir_of(store, cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text('{"status": "complete", "trunc')
    outcome = execute(cfg, run_dir)
    assert outcome.status == "complete"
    assert read_record(run_dir)["metrics"]["test/cls/acc"] > 0.5


def test_nan_loss_fails_the_run_with_the_reason(make_cfg, store):
    outcome = run(
        make_cfg, store, *FAST, "regime.optimizer.lr=1e12", "regime.optimizer.momentum=0.99"
    )
    assert outcome.status == "failed"
    record = read_record(outcome.run_dir)
    assert record["status"] == "failed"
    assert "NaN or infinite" in record["error"]
    assert "regime.optimizer.lr" in record["error"]


# A run with OOD sets (each with a val part) and a shift pass, small enough to evaluate
# again several times.
EVALUATED = [
    *FAST,
    "eval.shift.corruptions=[contrast]",
    "eval.shift.severities=[3]",
    "eval.ood.detectors=[msp,knn]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """One complete run, trained once for the module; tests damage copies of it."""
    store = tmp_path_factory.mktemp("evaluated")
    outcome = run_in_store(store, EVALUATED)
    assert outcome.status == "complete", outcome.error
    return outcome.run_dir


# A split, the val part of an OOD set (read by no fingerprint check before), the shift
# pass and the classifier head.
CACHES = ["test", "ood/noise/val", "shift", "head"]


@pytest.mark.parametrize("name", CACHES)
def test_a_truncated_eval_cache_file_is_recomputed_with_a_warning(
    evaluated_run, tmp_path, capsys, caplog, name
):
    run_dir = tmp_path / "runs" / evaluated_run.parent.name / evaluated_run.name
    shutil.copytree(evaluated_run, run_dir)
    damaged = cache_file(run_dir, name)
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    before = read_record(run_dir)

    with caplog.at_level(logging.WARNING, logger="sweeplab.evaluation.passes"):
        assert cli.main(["eval", f"run={run_dir}"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"eval cache {damaged} is corrupt or truncated: recomputing it" in warnings

    record = read_record(run_dir)
    assert record["evaluation"]["recomputed"], "the model ran again for the damaged file"

    def results(metrics):  # the evaluation's own timings differ from run to run
        return {k: v for k, v in metrics.items() if not k.startswith("perf/eval/")}

    assert results(record["metrics"]) == results(before["metrics"])
    assert cache_file(run_dir, name).read_bytes() != data[: len(data) // 2]
    assert json.loads((run_dir / "record.json").read_text())["status"] == "complete"
