"""Locate the Hydra config tree shipped with sweeplab.

In a checkout ``src/sweeplab/conf`` is a link to the top-level ``conf/``; in an
installed wheel it is a real directory. Either way it sits beside this file.

The launcher presets ``hydra/launcher/{joblib,ray,submitit_local}`` share their names
with the plugins' own configs on purpose: the plugins' schemas give every key we leave
out. Hydra warns about that in every process that composes them (each joblib worker,
Ray actor or submitit job composes its job's config), so the warning is silenced here,
on import, which happens in each of those processes before it composes anything.
"""

from __future__ import annotations

import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def config_dir() -> Path:
    """The directory holding ``train.yaml`` and the config groups."""
    here = Path(__file__).resolve().parent / "conf"
    if not (here / "train.yaml").is_file():
        raise FileNotFoundError(f"sweeplab's configs are missing from {here}; reinstall sweeplab")
    return here
