"""The run's checkpoints: ``best.ckpt`` for the best val accuracy, ``last.ckpt`` every epoch.

``last.ckpt`` is what an interrupted run resumes from and what every later use of a
finished run loads: ``init_from``, teachers, merge ingredients, ensembles of runs,
``sweeplab eval`` and NAS. Lightning (2.6) rewrites it only in an epoch that also
saved a best checkpoint, so once val accuracy stops improving it keeps the weights
of the last improvement: a resumed run would repeat epochs, and a finished run would
be reloaded with older weights than its evaluation used. This callback writes it at
the end of every epoch as well.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class EveryEpochModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``save_last`` file is rewritten every epoch."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_unless_saved(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_unless_saved(trainer)

    def _save_last_unless_saved(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless this step saved one (the parent skips then too)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
