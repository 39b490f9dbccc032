"""Finished runs as models: open a run, select runs, rebuild and load a run's model."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from sweeplab.assembly import setup_data
from sweeplab.regimes.loading import load_backbone, load_model
from sweeplab.tracking import runs_cli
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import new_record, read_record, write_record
from sweeplab.tracking.runs import RunError, open_run, select_runs
from sweeplab.train import execute
from tests.conftest import compose_config

QUICK = [
    "trainer.max_epochs=2",
    "data.val_fraction=0.2",
    "eval.ood.detectors=[energy]",
    "eval.shift.corruptions=[]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One complete ERM run on digits, trained for two epochs."""
    store = tmp_path_factory.mktemp("store")
    cfg = compose_config([f"paths.root_dir={store}", "trainer.enable_progress_bar=false", *QUICK])
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg), QUICK)
    assert outcome.status == "complete", outcome.error
    return outcome.run_dir


def test_load_model_reproduces_the_cached_test_logits(finished):
    record = read_record(finished)
    model = load_model(finished)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    datamodule = setup_data(compose_config(record["overrides"]))
    logits = torch.cat(
        [
            model.predict_eval(datamodule.preprocess(x, train=False))[0]
            for x, _ in datamodule.loader("test")
        ]
    )
    cached = torch.load(finished / "eval_cache" / "test.pt", weights_only=True)["member_logits"]
    torch.testing.assert_close(logits, cached, atol=1e-6, rtol=0)
    # The best checkpoint is another model; the backbone alone is the same network.
    assert load_model(finished, "best").predict_eval(torch.zeros(1, 1, 8, 8))[0].shape == (1, 1, 8)
    backbone = load_backbone(finished)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(backbone(x), model(x))


def test_open_run_by_directory_id_and_prefix(finished):
    store = finished.parents[1]
    run_id = finished.name
    by_dir = open_run(finished)
    assert by_dir.run_id == run_id and by_dir.status == "complete"
    assert open_run(run_id, store).path == finished
    assert open_run(run_id[:5], store).path == finished
    assert by_dir.checkpoint("last").is_file() and by_dir.record_file.is_file()
    assert by_dir.eval_cache_dir.is_dir() and by_dir.config["seed"] == 0


def _one_line_error(call) -> str:
    with pytest.raises(RunError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_a_missing_run_is_one_line_naming_the_store(tmp_path):
    message = _one_line_error(lambda: open_run("0123abc", tmp_path / "runs"))
    assert "'0123abc'" in message and str(tmp_path / "runs") in message


def test_an_incomplete_run_is_refused_naming_its_record(tmp_path):
    run_dir = tmp_path / "runs" / "digits_small_cnn" / "aaaa11112222"
    record = new_record("aaaa11112222", "digits_small_cnn", {"seed": 0}, [], {})
    write_record(run_dir, record)
    message = _one_line_error(lambda: load_model(run_dir))
    assert "aaaa11112222 is running" in message and "record.json" in message
    assert open_run(run_dir, require_complete=False).status == "running"


def test_a_corrupt_record_is_one_line_naming_the_file(tmp_path):
    run_dir = tmp_path / "runs" / "digits_small_cnn" / "bbbb11112222"
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text("{not json")
    message = _one_line_error(lambda: open_run(run_dir))
    assert str(run_dir / "record.json") in message and "bbbb11112222" in message


def _copy_run(finished: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "runs" / finished.parent.name / finished.name
    shutil.copytree(finished, target)
    return target


def test_a_missing_or_corrupt_checkpoint_is_one_line_naming_the_file(finished, tmp_path):
    copy = _copy_run(finished, tmp_path)
    last = copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    message = _one_line_error(lambda: load_model(copy))
    assert str(last) in message and "corrupt" in message and copy.name in message
    last.unlink()
    message = _one_line_error(lambda: load_model(copy))
    assert f"no checkpoint at {last}" in message


def test_a_record_without_model_input_is_sized_from_its_data(finished, tmp_path):
    copy = _copy_run(finished, tmp_path)
    record = read_record(copy)
    record.pop("model_input")
    write_record(copy, record)
    assert load_model(copy).model_input.num_classes == 8


# --------------------------------------------------------------------------- selectors


def _store(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for index, (seed, backbone, status) in enumerate(
        [
            (0, "mlp", "complete"),
            (1, "mlp", "complete"),
            (2, "mlp", "failed"),
            (0, "small_cnn", "complete"),
            (1, "small_cnn", "running"),
        ]
    ):
        name = f"digits_{backbone}"
        run_id = f"{index:012d}"
        config = {"seed": seed, "backbone": {"name": backbone}, "data": {"name": "digits"}}
        record = new_record(run_id, name, config, [f"seed={seed}", f"backbone={backbone}"], {})
        record.update(status=status, created=f"2024-01-0{index + 1}T00:00:00+00:00")
        write_record(root / name / run_id, record)
    return root


def _listed(root: Path, filters: list[str]) -> list[str]:
    out = io.StringIO()
    with redirect_stdout(out):
        runs_cli.main(
            ["--runs-dir", str(root), "--status", "complete", "--format", "json", *filters]
        )
    return [row["run_id"] for row in json.loads(out.getvalue())]


@pytest.mark.parametrize(
    "filters",
    [
        ["name=digits_mlp"],
        ["seed=0"],
        ["backbone=small_cnn", "seed=0"],
        ["data=digits"],
        ["name=digits_mlp", "seed=0,1,2"],
        ["seed=1,0", "backbone=mlp,small_cnn"],
    ],
)
def test_a_selector_picks_exactly_what_sweeplab_runs_lists(tmp_path, filters):
    root = _store(tmp_path)
    selected = [run.run_id for run in select_runs(" ".join(filters), root)]
    assert selected == _listed(root, filters) and selected


def test_a_selector_that_matches_nothing_says_how_to_check(tmp_path):
    root = _store(tmp_path)
    message = _one_line_error(lambda: select_runs("name=digits_mlp seed=2", root))
    assert "no complete run matches 'name=digits_mlp seed=2'" in message
    assert "sweeplab runs" in message
    assert [r.run_id for r in select_runs("seed=2", root, status="failed")] == ["000000000002"]
    _one_line_error(lambda: select_runs("", root))
    _one_line_error(lambda: select_runs("seed", root))


def test_comma_values_are_alternatives_outside_brackets():
    from sweeplab.tracking.store import alternatives

    assert alternatives("0,1,2") == ["0", "1", "2"]
    assert alternatives("[8,16]") == ["[8,16]"]
    assert alternatives("[8,16],[4]") == ["[8,16]", "[4]"]
    assert alternatives("'a,b',c") == ["'a,b'", "c"]
    assert alternatives("{k: 1, j: 2}") == ["{k: 1, j: 2}"]


def test_a_list_override_is_matched_as_one_value(tmp_path):
    root = tmp_path / "runs"
    record = new_record(
        "c" * 12, "n", {"backbone": {"widths": [8, 16]}}, ["backbone.widths=[8,16]"], {}
    )
    record["status"] = "complete"
    write_record(root / "n" / ("c" * 12), record)
    assert len(select_runs("backbone.widths=[8,16]", root)) == 1
    assert len(select_runs("backbone.widths=[8,16],[4]", root)) == 1
    with pytest.raises(RunError):
        select_runs("backbone.widths=[8]", root)
