"""Several trainer processes writing into one store at once (their runs, the shared data
and caches): every run ends complete, the store lists exactly them, nothing is left over."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from sweeplab import cli
from sweeplab.tracking.record import read_record
from sweeplab.tracking.run_lock import LOCK_FILE
from sweeplab.tracking.runs_cli import main as runs_main
from sweeplab.tracking.store import scan_store

TINY = [
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.val_fraction=0.2",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]
SEEDS = (0, 1, 2, 3)
# What a run imports on its way (the heavy part of a command's start).
WARM = (
    "pytorch_lightning",
    "sklearn.datasets",
    "sweeplab.train",
    "sweeplab.assembly",
    "sweeplab.regimes.erm",
    "sweeplab.tracking.loggers",
    "sweeplab.tracking.provenance",
    "sweeplab.evaluation.passes",
    "sweeplab.evaluation.report",
    "sweeplab.evaluation.detectors",
    "sweeplab.evaluation.calibrators",
)


def _train(args: list[str], log: Path) -> None:
    """``sweeplab train args`` in a forked child, its output in ``log``: a process of its
    own that skips the interpreter's start and the imports (seconds each on 2 cores)."""
    import torch

    torch.set_num_threads(1)  # as the commands run (OMP_NUM_THREADS=1)
    stream = log.open("w", buffering=1)
    os.dup2(stream.fileno(), 1)
    os.dup2(stream.fileno(), 2)
    sys.stdout = sys.stderr = stream
    sys.argv = ["sweeplab"]
    sys.exit(cli.main(["train", *args]))


@pytest.mark.timeout(240)
def test_four_trainers_into_one_store_leave_four_complete_runs_and_no_leftovers(tmp_path, capsys):
    for module in WARM:  # imported once here, not once in every child
        importlib.import_module(module)
    store = tmp_path / "store"
    fork = multiprocessing.get_context("fork")
    logs = [tmp_path / f"seed{seed}.log" for seed in SEEDS]
    trainers = [
        fork.Process(target=_train, args=([*TINY, f"seed={seed}", f"paths.root_dir={store}"], log))
        for seed, log in zip(SEEDS, logs, strict=True)
    ]
    try:
        for trainer in trainers:
            trainer.start()
        for trainer in trainers:
            trainer.join(timeout=200)
    finally:
        for trainer in trainers:
            if trainer.is_alive():
                trainer.kill()
                trainer.join()
    outputs = [log.read_text()[-3000:] for log in logs]
    assert [trainer.exitcode for trainer in trainers] == [0] * len(SEEDS), outputs

    runs = store / "runs"
    found = sorted(runs.glob("*/*/record.json"))
    assert len(found) == len(SEEDS)
    records = [read_record(path.parent) for path in found]
    assert all(r["status"] == "complete" and r["attempts"] == 1 for r in records)
    assert sorted(r["config"]["seed"] for r in records) == list(SEEDS)
    assert len({r["run_id"] for r in records}) == len(SEEDS)

    entries = scan_store(runs)
    assert [e.problem for e in entries] == [None] * len(SEEDS)
    assert sorted(e.path for e in entries) == sorted(path.parent for path in found)

    capsys.readouterr()
    assert runs_main(["--runs-dir", str(runs)]) == 0
    listing = capsys.readouterr().out
    assert all(r["run_id"] in listing for r in records)
    assert f"{len(SEEDS)} complete" in listing

    leftovers = [
        path
        for path in store.rglob("*")
        if path.name.endswith(".tmp") or path.name == LOCK_FILE or ".claim." in path.name
    ]
    assert leftovers == []
