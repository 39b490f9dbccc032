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

    The run's figure is the median over epochs, leaving out the first when there
    are several (it pays for warm-up: allocator, cuDNN autotuning, compilation).
    """

    def __init__(self) -> None:
        self.rates: list[float] = []
        self._start: float | None = None
        self._end: float | None = None
        self._samples = 0

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
        if self._start is None or self._end is None or self._samples == 0:
            return
        rate = self._samples / max(self._end - self._start, 1e-9)
        self.rates.append(rate)
        pl_module.log("perf/train_samples_per_s", rate, on_epoch=True, rank_zero_only=True)
        self._start = None

    def _stop(self, pl_module: pl.LightningModule) -> None:
        if self._start is not None and self._end is None:
            _synchronize(pl_module)
            self._end = time.perf_counter()

    def summary(self) -> float | None:
        """Median samples/s over epochs, the first left out when there are several."""
        rates = self.rates[1:] if len(self.rates) > 1 else self.rates
        return statistics.median(rates) if rates else None
