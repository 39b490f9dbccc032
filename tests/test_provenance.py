"""The record's provenance command reruns the run: ``sweeplab train`` with its own overrides,
quoted for a shell, composing to the same run id."""

from __future__ import annotations

import shlex
import sys

from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.provenance import rerun_command
from sweeplab.tracking.record import read_record
from sweeplab.train import _start_record
from tests.conftest import compose_config


def test_the_recorded_command_reruns_to_the_same_run_id(tmp_path):
    overrides = [
        "seed=3",
        "backbone=mlp",
        "regime.optimizer.lr=0.05",
        "data.train_subset=100",
        "eval.ood.hyperparameters.knn={k: 3}",
        f"paths.root_dir={tmp_path / 'a store'}",
    ]
    cfg = compose_config(overrides)
    run_id = compute_run_id(cfg)
    run_dir = tmp_path / "runs" / str(cfg.name) / run_id
    run_dir.mkdir(parents=True)
    _start_record(cfg, run_dir, run_id, overrides, {}, [])

    provenance = read_record(run_dir)["provenance"]
    command = provenance["command"]
    assert command.startswith("sweeplab train seed=3 backbone=mlp ")
    assert "'eval.ood.hyperparameters.knn={k: 3}'" in command  # quoted for the shell
    words = shlex.split(command)
    assert words == ["sweeplab", "train", *overrides]
    assert compute_run_id(compose_config(words[2:])) == run_id
    # The process's own command line (a sweep's, a launcher worker's) is kept beside it.
    assert provenance["argv"] == sys.argv


def test_rerun_command_of_no_overrides_is_the_default_run():
    assert rerun_command([]) == "sweeplab train"
    assert compute_run_id(compose_config(shlex.split(rerun_command([]))[2:])) == compute_run_id(
        compose_config([])
    )
