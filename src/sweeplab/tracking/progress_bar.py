"""The training bar: Lightning's, on stderr, with the running loss and the last val accuracy.

Lightning draws its bars on stdout, where they would mix with a run's results
(``sweeplab train … > result.txt``); here they go to stderr. Lightning's bar shows only
what is logged with ``prog_bar=True`` (and a logger version number that says nothing
here); the regimes log their loss once per epoch, to keep the device free of per-step
syncs. This bar reads the loss the regime is accumulating only when it redraws, and the
val accuracy of the last validation.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

from pytorch_lightning.callbacks import TQDMProgressBar

VAL_ACC = "val/cls/acc"


def _on_stderr(make_bar: Callable[[], Any]) -> Any:
    """A bar Lightning makes for ``sys.stdout``, made for stderr instead."""
    with redirect_stdout(sys.stderr):
        return make_bar()


class TrainProgressBar(TQDMProgressBar):
    """``Epoch 3: 40%|████ | 6/15 [00:02<00:03, loss=0.412, val_acc=0.873]`` on stderr."""

    def init_sanity_tqdm(self):
        return _on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return _on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return _on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return _on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):
        return _on_stderr(super().init_predict_tqdm)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        running_loss = getattr(pl_module, "running_loss", None)
        loss = running_loss() if callable(running_loss) else None
        if loss is not None:
            metrics["loss"] = f"{loss:.4g}"
        val_acc = trainer.callback_metrics.get(VAL_ACC)
        if val_acc is not None:
            metrics["val_acc"] = f"{float(val_acc):.4f}"
        return metrics
