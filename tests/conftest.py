"""Shared fixtures: compose configs the way `sweeplab train` does, in a temp run store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from sweeplab.configs import config_dir
from sweeplab.tracking.identity import register_resolvers

register_resolvers()


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test worker: ``make test`` runs a worker per core, and more
    threads than cores would make every worker wait on the others (the commands the
    tests start run with ``OMP_NUM_THREADS=1`` for the same reason)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> None:
    """An in-process ``sweeplab train`` lets Hydra give the root logger handlers on the
    test's captured stderr, which is closed after the test; later tests logging through
    them would print "--- Logging error ---". The handlers a test added are taken off."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):  # pytest's own capture handlers come and go itself
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own store, named in the environment, is never written by the tests."""
    monkeypatch.delenv("SWEEPLAB_RUNS_DIR", raising=False)
    monkeypatch.delenv("SWEEPLAB_HOME", raising=False)


USER_MESSAGE = re.compile(r"^sweeplab[\w ]*: ")  # "sweeplab: …", "sweeplab nas search: …"


def message_lines(stderr: str) -> list[str]:
    """What a command said to the user on stderr: its ``sweeplab: …`` lines, without the
    status lines (``[sweeplab] …``), log records and progress bars around them."""
    return [line for line in stderr.splitlines() if USER_MESSAGE.match(line)]


def compose_config(overrides: list[str] = (), return_hydra_config: bool = False) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture
def one_thread():
    """One torch thread in this process, as the commands the tests start run
    (``OMP_NUM_THREADS=1``), so that in-process metrics equal theirs bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty run store with its own cache directory."""
    return tmp_path


@pytest.fixture
def make_cfg(store: Path) -> Callable[..., DictConfig]:
    """Compose the train config with paths pointing into the temp store."""

    def _make(*overrides: str) -> DictConfig:
        return compose_config(
            [f"paths.root_dir={store}", "trainer.enable_progress_bar=false", *overrides]
        )

    return _make


FAST = [
    "trainer.max_epochs=2",
    "data.val_fraction=0.2",
]


def start_sweeplab(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``python -m sweeplab …`` in the background, quiet, in its own process group (so it
    can be killed as a whole), with the environment ``run_cli`` gives it."""
    return subprocess.Popen(
        [sys.executable, "-m", "sweeplab", *args],
        cwd=cwd,
        env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(args: list[str], cwd: Path, ready: Callable[[], bool], timeout: float = 180) -> bool:
    """Start ``python -m sweeplab …`` and SIGKILL its whole process group once ``ready()``
    holds (polled every few ms) or ``timeout`` passes; returns whether ``ready()`` held."""
    process = start_sweeplab(args, cwd)
    deadline = time.time() + timeout
    held = False
    while time.time() < deadline and process.poll() is None and not held:
        held = ready()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return held


def run_in_store(store: Path, overrides: list[str]):
    """One in-process ``sweeplab train`` of ``overrides`` into ``store``, in the run directory
    Hydra would pick (source selectors pinned to run ids, or their text if they match nothing)."""
    from sweeplab.tracking.identity import compute_run_id
    from sweeplab.train import execute

    cfg = compose_config(
        [f"paths.root_dir={store}", "trainer.enable_progress_bar=false", *overrides]
    )
    try:  # as tracking.identity._run_id_resolver does it
        run_id = compute_run_id(cfg)
    except ValueError:
        run_id = compute_run_id(cfg, pin_sources=False)
    return execute(cfg, store / "runs" / cfg.name / run_id, overrides, {"regime": cfg.regime.name})


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None):
    """Run ``python -m sweeplab …`` in a subprocess and return the completed process."""
    # One thread per process: sweeps and DDP ranks share the two cores.
    full_env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    full_env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "sweeplab", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def basic_launcher_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``train -m seed=0,1`` (quick runs) on Hydra's basic launcher, once per session: the
    store root and the command's result, which every other launcher must reproduce."""
    from tests.test_sweeps import QUICK

    root = tmp_path_factory.mktemp("basic_launcher")
    args = ["train", "-m", "seed=0,1", *QUICK, "hydra/launcher=local", f"paths.root_dir={root}"]
    result = run_cli(args, cwd=root, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result
