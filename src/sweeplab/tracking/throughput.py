"""Training throughput in samples per second, measured without per-step syncs."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch


def _synchronize(module: pl.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class TrainThroughput(pl.Callback):
    """Times each training epoch (excluding validation) and logs ``perf/train_samples_per_s``.

    The run's figure is the median over epochs, leaving out the first epoch of each
    attempt when there are others (it pays for warm-up: allocator, cuDNN autotuning,
    compilation). The rates are kept in the checkpoint, so a resumed run reports the
    epochs its final model was trained on, each measured by the attempt that trained
    it: without them a run resumed from its last epoch's checkpoint (killed during
    evaluation, or its record lost) would report no throughput, and one resumed
    mid-training only its last attempt's epochs, warm-up included.
    """

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.warm_up: list[bool] = []  # per rate: the first epoch of its attempt
        self._start: float | None = None
        self._end: float | None = None
        self._samples = 0
        self._epochs_this_attempt = 0

    def state_dict(self) -> dict[str, Any]:
        return {"rates": list(self.rates), "warm_up": list(self.warm_up)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rates = [float(rate) for rate in state_dict.get("rates", [])]
        self.warm_up = [bool(flag) for flag in state_dict.get("warm_up", [])]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _synchronize(pl_module)
        self._start, self._end, self._samples = time.perf_counter(), None, 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._samples += len(batch[0]) * trainer.world_size

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self._stop(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(pl_module)
        if self._start is not None and self._samples > 0:
            rate = self.rates[-1]
            pl_module.log("perf/train_samples_per_s", rate, on_epoch=True, rank_zero_only=True)
        self._start = None

    def _stop(self, pl_module: pl.LightningModule) -> None:
        """Stop the epoch's clock and keep its rate: at validation, when there is one, since
        the epoch's checkpoint is saved after validation and before the epoch ends."""
        if self._start is None or self._end is not None:
            return
        _synchronize(pl_module)
        self._end = time.perf_counter()
        if self._samples == 0:
            return
        self.rates.append(self._samples / max(self._end - self._start, 1e-9))
        self.warm_up.append(self._epochs_this_attempt == 0)
        self._epochs_this_attempt += 1

    def summary(self) -> float | None:
        """Median samples/s over epochs, each attempt's first left out when there are others."""
        warmed = [rate for rate, first in zip(self.rates, self.warm_up, strict=True) if not first]
        rates = warmed or self.rates
        return statistics.median(rates) if rates else None
