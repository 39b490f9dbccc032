"""Locate the Hydra config tree shipped with sweeplab.

In a checkout ``src/sweeplab/conf`` is a link to the top-level ``conf/``; in an
installed wheel it is a real directory. Either way it sits beside this file.
"""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The directory holding ``train.yaml`` and the config groups."""
    here = Path(__file__).resolve().parent / "conf"
    if not (here / "train.yaml").is_file():
        raise FileNotFoundError(f"sweeplab's configs are missing from {here}; reinstall sweeplab")
    return here
