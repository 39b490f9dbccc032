"""A bad value on the command line, one of every config group at least, through
``sweeplab train`` itself: exit code 2, one ``sweeplab:`` line that names the full key
and the value, no traceback, no other record changed, and the launch's own run (when it
is not the complete one) recorded as failed with the same reason. The messages themselves
are tested rule by rule in tests/test_schema.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sweeplab import cli
from sweeplab.evaluation.detectors import DETECTORS
from tests.conftest import message_lines, run_in_store

BASE = [
    "trainer.max_epochs=1",
    "data.val_fraction=0.2",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]

# (overrides, the line on stderr after "sweeplab: "). Keys that are not in the run id
# (trainer.log_every_n_steps, eval, callbacks.model_checkpoint, logger, paths,
# on_running) point at the complete run's own directory.
BAD_VALUES = [
    ("seed=-1", "seed must be an integer in [0, 2**32), got -1"),
    (
        "trainer.devices=0",
        "trainer.devices must be a device count ≥ 1, -1 (all), auto, or a list of device "
        "indices, got 0",
    ),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps must be a positive integer, got 0"),
    ("regime.optimizer.lr=abc", "regime.optimizer.lr must be > 0, got 'abc'"),
    ("regime.scheduler.min_lr_ratio=2", "regime.scheduler.min_lr_ratio must be in [0, 1], got 2"),
    ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
    ("backbone.widths=[32,0]", "backbone.widths must be a list of positive integers, got [32, 0]"),
    ("augment=mixup augment.alpha=-1", "augment.alpha must be > 0, got -1"),
    ("eval.calibration.n_bins=0", "eval.calibration.n_bins must be a positive integer, got 0"),
    (
        "eval.ood.detectors=[msp,nope]",
        f"eval.ood.detectors: unknown ['nope']; choose from {sorted(DETECTORS)}",
    ),
    (
        "callbacks.model_checkpoint.mode=up",
        "callbacks.model_checkpoint.mode must be one of min, max; got 'up'",
    ),
    (
        "logger=wandb logger.wandb.offline=sometimes",
        "logger.wandb.offline must be true or false, got 'sometimes'",
    ),
    ("paths.data_dir=7", "paths.data_dir must be a string, got 7"),
    ("on_running=later", "on_running must be one of skip, wait, steal; got 'later'"),
]


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory) -> Path:
    """A store holding one complete run of ``BASE``, trained once for the module."""
    root = tmp_path_factory.mktemp("store_with_a_complete_run")
    outcome = run_in_store(root, BASE)
    assert outcome.status == "complete", outcome.error
    return root


def record_bytes(store: Path) -> dict[Path, bytes]:
    return {path.relative_to(store): path.read_bytes() for path in store.rglob("record.json")}


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_value_is_one_line_exit_2_and_the_store_is_untouched(
    complete_store, tmp_path, monkeypatch, capsys, overrides, message
):
    store = tmp_path / "store"
    shutil.copytree(complete_store, store)  # each case starts from the one complete run
    monkeypatch.chdir(tmp_path)  # a relative path the launch makes stays out of the checkout
    monkeypatch.setattr(sys, "argv", ["sweeplab"])  # the command sets it for Hydra
    before = record_bytes(store)
    checkpoints = sorted(store.rglob("*.ckpt"))
    assert len(before) == 1
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", *BASE, *overrides.split(" "), f"paths.root_dir={store}"])

    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert message_lines(err) == [f"sweeplab: {message}"]
    assert "Traceback" not in out + err
    after = record_bytes(store)
    (complete,) = before
    assert after[complete] == before[complete], "the complete run's record is unchanged"
    new = [json.loads(text) for path, text in after.items() if path != complete]
    # The launch's own run, if it is not the complete one, is recorded as failed, untrained.
    assert len(new) <= 1
    assert all(r["status"] == "failed" and r["error"] == message for r in new)
    assert sorted(store.rglob("*.ckpt")) == checkpoints, "nothing trained"
