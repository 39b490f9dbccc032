"""Reading ``metrics.csv``: the one parser shared by the training logger and the dashboard.

It lives apart from the Lightning logger that writes the file so that readers
(the dashboard on a machine that only holds copied runs) need neither torch nor
Lightning to show a run's learning curves.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from sweeplab.tracking.layout import METRICS_FILE

# Columns that come first in the file and hold integers, not metric values.
LEADING = ("epoch", "step")

__all__ = ["LEADING", "METRICS_FILE", "read_metrics_csv"]


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a metrics file with numbers parsed; empty cells are dropped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for key, value in raw.items():
                if value in (None, ""):
                    continue
                try:
                    number = float(value)
                    row[key] = int(number) if key in LEADING else number
                except ValueError:
                    row[key] = value
            rows.append(row)
    return rows
