"""``sweeplab sync``: upload the offline W&B runs of a run store.

Runs go offline when no W&B credentials are found, leaving
``<run>/wandb/offline-run-*`` directories. This command finds them through the
store and hands them to ``wandb sync``; it checks for credentials first so that
it fails with a clear message instead of waiting at a login prompt.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sweeplab.tracking import layout
from sweeplab.tracking.loggers import wandb_api_key_found
from sweeplab.tracking.store import scan_store

OFFLINE_GLOB = "wandb/offline-run-*"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeplab sync",
        description="Upload the offline W&B runs found in a run store (wraps `wandb sync`).",
    )
    parser.add_argument(
        "--runs-dir", default=None, help=f"run store (default: {layout.RUNS_DIR_RULE})"
    )
    parser.add_argument(
        "--all", action="store_true", help="also upload runs that were synced before"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be uploaded, upload nothing"
    )
    return parser


def is_synced(offline_dir: Path) -> bool:
    """``wandb sync`` leaves a ``*.wandb.synced`` marker beside the run's data."""
    return any(offline_dir.glob("*.wandb.synced"))


def offline_runs(runs_dir: Path, include_synced: bool = False) -> list[Path]:
    """The offline W&B run directories of every run in the store, oldest run first (a
    debug run too: it has one only when its command asked for W&B)."""
    found = []
    for entry in scan_store(runs_dir, include_debug=True):
        for path in sorted(entry.path.glob(OFFLINE_GLOB)):
            if path.is_dir() and (include_synced or not is_synced(path)):
                found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    runs_dir = layout.runs_dir(args.runs_dir)
    paths = offline_runs(runs_dir, include_synced=args.all)
    if not paths:
        print(f"sweeplab sync: no offline W&B runs to upload in {runs_dir}.")
        return 0
    print(f"sweeplab sync: {len(paths)} offline W&B run(s) in {runs_dir}:")
    for path in paths:
        print(f"  {path}")
    if args.dry_run:
        return 0
    if not wandb_api_key_found():
        print(
            "sweeplab sync: no W&B credentials: set WANDB_API_KEY or run `wandb login`, "
            "then run this command again. Nothing was uploaded.",
            file=sys.stderr,
        )
        return 1
    wandb = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    if wandb is None:
        print("sweeplab sync: the `wandb` command is not installed.", file=sys.stderr)
        return 1
    env = {**os.environ}
    env.pop("WANDB_MODE", None)  # an offline mode left in the shell would upload nothing
    # No stdin: wandb must never sit waiting for an answer nobody will type.
    result = subprocess.run(
        [wandb, "sync", *map(str, paths)], stdin=subprocess.DEVNULL, env=env, check=False
    )
    if result.returncode != 0:
        print(f"sweeplab sync: `wandb sync` exited with code {result.returncode}.", file=sys.stderr)
    return result.returncode
