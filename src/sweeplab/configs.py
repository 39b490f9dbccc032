"""Locate the Hydra config tree: inside the installed wheel, or ``conf/`` of a checkout."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The directory holding ``train.yaml`` and the config groups."""
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "train.yaml").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if (checkout / "train.yaml").is_file():
        return checkout
    raise FileNotFoundError(
        f"sweeplab's configs were not found in {packaged} or {checkout}; reinstall sweeplab"
    )
