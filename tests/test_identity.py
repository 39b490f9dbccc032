"""Run identity and the run record."""

from __future__ import annotations

import json

import pytest

from sweeplab.files import atomic_write_text
from sweeplab.tracking.identity import compute_run_id, result_config
from sweeplab.tracking.record import (
    CorruptRecordError,
    new_record,
    read_record,
    write_record,
)
from tests.conftest import compose_config


def test_run_id_ignores_non_result_keys():
    base = compose_config()
    same = compose_config(
        [
            "paths.root_dir=/elsewhere",
            "name=renamed",
            "tags=[a,b]",
            "logger=wandb",
            "trainer.enable_progress_bar=false",
            "data.num_workers=3",
        ]
    )
    assert compute_run_id(base) == compute_run_id(same)


@pytest.mark.parametrize(
    "override", ["seed=1", "backbone=mlp", "regime.optimizer.lr=0.1", "trainer.max_epochs=3"]
)
def test_run_id_changes_with_result_keys(override):
    assert compute_run_id(compose_config()) != compute_run_id(compose_config([override]))


def test_run_id_is_order_independent_and_short():
    config = result_config(compose_config())
    reordered = json.loads(json.dumps(config, sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    run_id = compute_run_id(config)
    assert run_id == compute_run_id(reordered)
    assert len(run_id) == 12 and int(run_id, 16) >= 0


def test_run_id_uses_only_the_file_name_of_data_root():
    a = {"data": {"root": "/a/b/cifar10-jpg.tar.gz"}, "seed": 0}
    b = {"data": {"root": "../shared/data/cifar10-jpg.tar.gz"}, "seed": 0}
    c = {"data": {"root": "/a/b/other.tar.gz"}, "seed": 0}
    assert compute_run_id(a) == compute_run_id(b) != compute_run_id(c)


def test_seed_zero_is_in_the_hash():
    assert compute_run_id({"seed": 0}) != compute_run_id({"seed": None})


def test_hydra_run_dir_uses_the_run_id(tmp_path):
    cfg = compose_config([f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    run_dir = cfg.hydra.run.dir
    assert run_dir == f"{tmp_path}/runs/digits_small_cnn/{compute_run_id(cfg)}"


def test_record_round_trip_and_atomic_write(tmp_path):
    record = new_record("abc", "demo", {"seed": 0}, ["seed=0"], {"python": "3.11"})
    record["metrics"] = {"test/cls/acc": 0.5, "odd": float("nan")}
    write_record(tmp_path, record)
    loaded = read_record(tmp_path)
    assert loaded["run_id"] == "abc" and loaded["status"] == "running"
    assert loaded["metrics"]["odd"] == "nan"  # still valid JSON
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    for key in (
        "schema",
        "run_id",
        "name",
        "status",
        "error",
        "created",
        "finished",
        "duration_s",
        "config",
        "overrides",
        "metrics",
        "provenance",
        "artifacts",
    ):
        assert key in loaded


def test_record_rejects_bad_status(tmp_path):
    record = new_record("abc", "demo", {}, [], {})
    record["status"] = "done"
    with pytest.raises(ValueError, match="status"):
        write_record(tmp_path, record)


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '{"schema": 1}', '{"schema":1,"run_id":"x","status":"odd"}']
)
def test_corrupt_records_are_reported(tmp_path, text):
    atomic_write_text(tmp_path / "record.json", text)
    with pytest.raises(CorruptRecordError, match=r"record\.json"):
        read_record(tmp_path)


def test_missing_record_is_none(tmp_path):
    assert read_record(tmp_path) is None


def test_run_id_ignores_how_data_is_fetched():
    base = compose_config(["data=cifar10"])
    same = compose_config(["data=cifar10", "data.download=true", "data.num_workers=4"])
    assert compute_run_id(base) == compute_run_id(same)
    streamed = compose_config(["data=imagefolder", "data.in_memory=false"])
    assert compute_run_id(streamed) == compute_run_id(compose_config(["data=imagefolder"]))
