"""Where a result came from: code version, library versions, host and device."""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "hydra-core",
    "timm",
    "torchmetrics",
    "sweeplab",
)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit sha and dirty flag of the repository holding ``path`` (sweeplab's source by default)."""
    path = path or Path(__file__).resolve().parent
    sha = _git(["rev-parse", "HEAD"], path)
    if sha is None:
        return {"sha": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], path)
    return {"sha": sha, "dirty": bool(status)}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_description(accelerator: str | None = None) -> str:
    import torch

    if accelerator in (None, "gpu", "cuda", "auto") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def rerun_command(overrides: list[str]) -> str:
    """The shell command that reruns a run: ``sweeplab train`` with its own overrides
    (a sweep job's, not the sweep's), each quoted for a POSIX shell."""
    return shlex.join(["sweeplab", "train", *overrides])


def collect_provenance(
    accelerator: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """``command`` reruns the run (:func:`rerun_command` of ``overrides``); ``argv`` is the
    process's own command line (a sweep's, or a launcher's worker)."""
    provenance = {
        "git": git_state(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in PACKAGES},
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device_description(accelerator),
        "argv": list(sys.argv),
    }
    if overrides is not None:
        provenance["command"] = rerun_command(overrides)
    return provenance
