"""``last.ckpt`` holds the last epoch's weights, also when val accuracy stopped improving."""

from __future__ import annotations

from pathlib import Path

import torch

from sweeplab.regimes.loading import load_model
from sweeplab.tracking.runs import open_run
from tests.conftest import run_in_store


def test_last_checkpoint_is_the_final_epoch_even_without_a_new_best(tmp_path):
    # A learning rate this small leaves val accuracy unchanged after the first epoch, so
    # only epoch 0 is a best; Lightning alone would keep last.ckpt at epoch 0.
    overrides = [
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "regime.optimizer.lr=1e-12",
        "eval.shift.corruptions=[]",
        "eval.ood.detectors=[msp]",
        "eval.plots=false",
    ]
    outcome = run_in_store(tmp_path, overrides)
    assert outcome.status == "complete", outcome.error
    checkpoints = Path(outcome.run_dir) / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == 6
    # what a later use of the run loads is what it was evaluated with
    run = open_run(outcome.run_dir)
    module = load_model(run)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, last["state_dict"][key], rtol=0, atol=0)
