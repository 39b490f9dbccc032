"""``metrics.csv`` beside the record: per-epoch metrics that survive a resume.

Lightning's own CSVLogger deletes an existing ``metrics.csv`` when it starts in a
non-empty directory, which loses the history of a resumed run. This logger keeps
the rows already written, lets the runner drop rows from epochs that will be
re-run, and rewrites the file atomically so a kill never leaves half a row.
"""

from __future__ import annotations

import csv
import io
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from sweeplab.files import atomic_write_text
from sweeplab.tracking.metrics_csv import LEADING, METRICS_FILE, read_metrics_csv

__all__ = ["METRICS_FILE", "RunCSVLogger", "read_metrics_csv"]


class RunCSVLogger(Logger):
    """CSV of logged metrics, one row per global step at which something was logged."""

    def __init__(self, save_dir: str | os.PathLike, name: str = "", version: str = "") -> None:
        super().__init__()
        self._save_dir = str(save_dir)
        self._name = name
        self._version = version
        self.path = Path(save_dir) / METRICS_FILE
        self.rows: list[dict[str, Any]] = read_metrics_csv(self.path)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return self._save_dir

    def drop_epochs_from(self, epoch: int) -> None:
        """Forget rows of ``epoch`` and later: a resumed run is about to log them again."""
        self.rows = [row for row in self.rows if row.get("epoch", -1) < epoch]
        self._write()

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """The resolved config lives in config.yaml and the record, not in the CSV."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {key: float(value) for key, value in metrics.items()}
        if "epoch" in row:
            row["epoch"] = int(row["epoch"])
        row["step"] = int(step) if step is not None else len(self.rows)
        if self.rows and self.rows[-1]["step"] == row["step"]:
            self.rows[-1].update(row)  # val and train metrics of one epoch share a row
        else:
            self.rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        self._write()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write()

    def _write(self) -> None:
        keys = sorted({key for row in self.rows for key in row} - set(LEADING))
        fields = [key for key in LEADING if any(key in row for row in self.rows)] + keys
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())
