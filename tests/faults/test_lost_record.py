"""A run resumed after its record was lost: its checkpoint alone carries what the record needs."""

from __future__ import annotations

import statistics

import torch

from sweeplab.tracking.layout import CHECKPOINT_DIR, LAST_CKPT, RECORD_FILE
from sweeplab.tracking.throughput import TrainThroughput
from tests.conftest import run_in_store
from tests.test_sweeps import QUICK


def _rates(run_dir) -> list[float]:
    checkpoint = torch.load(run_dir / CHECKPOINT_DIR / LAST_CKPT, weights_only=True)
    return checkpoint["callbacks"]["TrainThroughput"]["rates"]


def test_a_resumed_run_whose_record_was_lost_keeps_its_throughput(store, monkeypatch):
    start = TrainThroughput.on_train_epoch_start

    def killed_after_the_first_checkpoint(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")
        start(self, trainer, pl_module)

    monkeypatch.setattr(TrainThroughput, "on_train_epoch_start", killed_after_the_first_checkpoint)
    killed = run_in_store(store, QUICK)
    assert killed.status == "failed"
    monkeypatch.setattr(TrainThroughput, "on_train_epoch_start", start)
    run_dir = killed.run_dir
    (first_epoch,) = _rates(run_dir)

    (run_dir / RECORD_FILE).unlink()
    resumed = run_in_store(store, QUICK)
    record = resumed.record
    assert resumed.status == "complete" and record["attempts"] == 1
    assert record["resumed_from_epochs"] == [1]
    rates = _rates(run_dir)
    assert len(rates) == 2 and rates[0] == first_epoch  # measured by the killed attempt
    # Each rate is its attempt's first epoch (warm-up), so both count.
    assert record["metrics"]["perf/train_samples_per_s"] == statistics.median(rates)

    # Lost again after it finished: resumed from its final checkpoint, it trains nothing
    # and reports the same throughput.
    (run_dir / RECORD_FILE).unlink()
    again = run_in_store(store, QUICK)
    assert again.status == "complete" and again.record["resumed_from_epochs"] == [2]
    assert again.record["metrics"]["perf/train_samples_per_s"] == statistics.median(rates)
