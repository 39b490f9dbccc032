"""``sweeplab publish``: a finished run sent to TensorBoard or W&B (offline) from the store,
and the skip line of ``sweeplab train logger=…`` on a complete run that points to it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from sweeplab import cli
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.metrics_csv import read_metrics_csv
from sweeplab.tracking.record import read_record
from sweeplab.train import execute
from tests.conftest import compose_config, run_in_store
from tests.test_wandb import _items, _records

TINY = [
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "eval.shift.corruptions=[gaussian_noise]",
    "eval.shift.severities=[1]",
    "eval.ood.detectors=[msp,energy]",
    "eval.calibration.calibrators=[ts]",
]


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    """A run trained with the CSV logger only."""
    outcome = run_in_store(tmp_path_factory.mktemp("store"), TINY)
    assert outcome.status == "complete", outcome.error
    assert not (outcome.run_dir / "tensorboard").exists()
    return outcome.run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def test_publish_to_tensorboard(complete_run, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = copy_run(complete_run, tmp_path)
    before = (run_dir / "record.json").read_bytes()
    code = cli.main(
        ["publish", f"run={run_dir.name}", f"paths.root_dir={tmp_path}", "logger=tensorboard"]
    )
    assert code == 0
    assert f"run {run_dir.name} published to tensorboard" in capsys.readouterr().out
    assert (run_dir / "record.json").read_bytes() == before  # the record is only read

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    rows = [row for row in read_metrics_csv(run_dir / "metrics.csv") if "val/cls/acc" in row]
    assert len(rows) == 2
    # Every epoch's row at its step, then (as in training) the summary at the last step.
    val = events.Scalars("val/cls/acc")[: len(rows)]
    assert [e.step for e in val] == [row["step"] for row in rows]
    assert [e.value for e in val] == pytest.approx([row["val/cls/acc"] for row in rows])
    metrics = read_record(run_dir)["metrics"]
    for key in ("test/cls/acc", "test/cal/ece", "ood/near/energy/auroc", "shift/mean/acc"):
        (event,) = events.Scalars(key)
        assert event.value == pytest.approx(metrics[key], rel=1e-6)
    plots = {f"plots/{p.stem}" for p in (run_dir / "plots").glob("*.png")}
    assert "plots/reliability_test" in plots and plots <= set(tags["images"])
    hparams = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["trainer"]["max_epochs"] == 2 and hparams["seed"] == 0


def test_publish_to_wandb_offline(complete_run, tmp_path):
    run_dir = copy_run(complete_run, tmp_path)
    assert cli.main(["publish", f"run={run_dir}", "logger=wandb", "tags=[x]"]) == 1
    assert cli.main(["publish", f"run={run_dir}", "logger=wandb"]) == 0
    (offline,) = run_dir.glob("wandb/offline-run-*")
    record = read_record(run_dir)
    assert offline.name.endswith(record["logger_ids"]["wandb"])
    config, summary, history = {}, {}, []
    for item in _records(offline):
        kind = item.WhichOneof("record_type")
        if kind == "config":
            config.update(_items(item.config.update))
        elif kind == "summary":
            summary.update(_items(item.summary.update))
        elif kind == "history":
            history.append(_items(item.history.item))
    assert config["trainer"]["max_epochs"] == 2
    assert config["eval"]["ood"]["detectors"] == ["msp", "energy"]
    assert [row["epoch"] for row in history if "val/cls/acc" in row] == [0, 1]
    for key in ("test/cls/acc", "test/cal/ece_ts", "ood/far/msp/auroc"):
        assert summary[key] == pytest.approx(record["metrics"][key])
    assert summary["plots/reliability_test.path"].startswith("media/images/plots/")


def test_publish_refuses_what_it_cannot_send(complete_run, tmp_path, capsys):
    run_dir = copy_run(complete_run, tmp_path)
    assert cli.main(["publish", f"run={run_dir}"]) == 1
    assert "no logger to publish to" in capsys.readouterr().err
    failed = json.loads((run_dir / "record.json").read_text())
    failed["status"] = "failed"
    (run_dir / "record.json").write_text(json.dumps(failed))
    assert cli.main(["publish", f"run={run_dir}", "logger=tensorboard"]) == 1
    assert "only complete runs are published" in capsys.readouterr().err
    assert not (run_dir / "tensorboard").exists()


def test_train_on_a_complete_run_says_nothing_reached_the_logger(complete_run, caplog):
    root = complete_run.parents[2]
    cfg = compose_config([f"paths.root_dir={root}", *TINY, "logger=wandb"])
    assert compute_run_id(cfg) == complete_run.name
    with caplog.at_level(logging.INFO, logger="sweeplab"):
        outcome = execute(cfg, complete_run)
    assert outcome.status == "skipped"
    assert "nothing was sent to wandb" in caplog.text
    assert f"sweeplab publish run={complete_run.name} logger=wandb" in caplog.text
    assert not (complete_run / "wandb").exists()
    caplog.clear()
    plain = compose_config([f"paths.root_dir={root}", *TINY])
    with caplog.at_level(logging.INFO, logger="sweeplab"):
        assert execute(plain, complete_run).status == "skipped"
    assert "skipped" in caplog.text and "publish" not in caplog.text
