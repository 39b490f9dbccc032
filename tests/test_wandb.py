"""W&B in offline mode: what a run leaves in its wandb directory, and ``sweeplab sync``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.loggers import wandb_group
from sweeplab.tracking.record import read_record
from sweeplab.tracking.sync import main as sync_main
from sweeplab.tracking.sync import offline_runs
from sweeplab.train import execute

from .conftest import FAST

BLOCK = 32768
FULL, LAST = 1, 4


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One short run logged to W&B offline: (run directory, offline W&B run directory)."""
    from .conftest import compose_config

    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("WANDB_API_KEY", raising=False)
    root = tmp_path_factory.mktemp("wandb_store")
    overrides = [
        *FAST,
        "logger=wandb",
        "logger.wandb.log_model=true",
        "tags=[smoke,digits]",
        "eval.shift.severities=[1]",
    ]
    cfg = compose_config(
        [f"paths.root_dir={root}", "trainer.enable_progress_bar=false", *overrides]
    )
    run_dir = root / "runs" / str(cfg.name) / compute_run_id(cfg)
    try:
        outcome = execute(cfg, run_dir, overrides=overrides)
    finally:
        mp.undo()
    assert outcome.status == "complete", outcome.error
    (offline,) = run_dir.glob("wandb/offline-run-*")
    return run_dir, offline


def _records(offline: Path):
    """The protobuf records of an offline run's ``.wandb`` file (what ``wandb sync`` uploads).

    The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of
    chunks, each with a 7-byte header (crc32, length, type: full/first/middle/last).
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = offline.glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(updates) -> dict:
    return {".".join(i.nested_key) or i.key: json.loads(i.value_json) for i in updates}


@pytest.fixture(scope="module")
def logged(wandb_run) -> dict:
    """What the run sent to W&B: run metadata, config, summary and history rows."""
    _, offline = wandb_run
    out = {"config": {}, "summary": {}, "history": [], "run": None, "artifacts": []}
    for record in _records(offline):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
    return out


def test_config_is_nested(logged):
    config = logged["config"]
    assert config["trainer"]["max_epochs"] == 2
    assert config["backbone"]["name"] == "small_cnn"
    assert config["eval"]["shift"]["severities"] == [1]
    assert config["seed"] == 0


def test_summary_holds_the_record_metrics(wandb_run, logged):
    run_dir, _ = wandb_run
    metrics = read_record(run_dir)["metrics"]
    summary = logged["summary"]
    for key in ("test/cls/acc", "test/cal/ece", "ood/near/energy/auroc", "shift/mean/acc"):
        assert summary[key] == pytest.approx(metrics[key])


def test_epoch_metrics_against_epoch_and_step(logged):
    rows = [row for row in logged["history"] if "val/cls/acc" in row]
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(row["trainer/global_step"] > 0 for row in rows)


def test_plots_are_logged_as_images(wandb_run, logged):
    run_dir, offline = wandb_run
    plots = sorted(p.stem for p in (run_dir / "plots").glob("*.png"))
    assert "reliability_test" in plots and "mixed_samples" in plots
    media = [p.name for p in (offline / "files" / "media" / "images" / "plots").glob("*.png")]
    for stem in plots:
        assert any(name.startswith(f"{stem}_") for name in media), (stem, media)
        assert logged["summary"][f"plots/{stem}.path"].startswith("media/images/plots/")


def test_log_model_adds_the_checkpoints_as_an_artifact_offline(logged):
    (artifact,) = logged["artifacts"]
    assert artifact.type == "model"
    assert {entry.path for entry in artifact.manifest.contents} == {"last.ckpt", "best.ckpt"}


def test_run_name_group_and_tags(wandb_run, logged):
    run_dir, offline = wandb_run
    record = read_record(run_dir)
    run = logged["run"]
    assert run.display_name == f"digits_small_cnn/{run_dir.name}"
    assert run.run_group == run.display_name  # not in a sweep: the run is its own group
    assert list(run.tags) == ["smoke", "digits"]
    assert offline.name.endswith(record["logger_ids"]["wandb"])
    assert wandb_group("x/y") == "x/y"


def test_sync_lists_offline_runs_and_refuses_without_credentials(
    wandb_run, monkeypatch, tmp_path, capsys
):
    run_dir, offline = wandb_run
    runs_dir = run_dir.parent.parent
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert offline_runs(runs_dir) == [offline]

    assert sync_main(["--runs-dir", str(runs_dir), "--dry-run"]) == 0
    assert str(offline) in capsys.readouterr().out

    assert sync_main(["--runs-dir", str(runs_dir)]) == 1
    err = capsys.readouterr().err
    assert "no W&B credentials" in err and "WANDB_API_KEY" in err and "wandb login" in err


def test_sync_of_a_store_without_offline_runs(tmp_path, capsys):
    assert sync_main(["--runs-dir", str(tmp_path)]) == 0
    assert "no offline W&B runs" in capsys.readouterr().out


def test_group_is_the_sweep_under_multirun():
    from hydra.core.hydra_config import HydraConfig

    from .conftest import compose_config

    cfg = compose_config(
        ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/store/runs/_sweeps/2026-01-01_00-00-00"],
        return_hydra_config=True,
    )
    HydraConfig.instance().set_config(cfg)
    try:
        assert wandb_group("digits_small_cnn/abc") == "2026-01-01_00-00-00"
    finally:
        HydraConfig.instance().cfg = None
