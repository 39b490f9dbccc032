"""The Python API over the run store, on hand-written records: it lists what ``sweeplab runs``
lists, reports broken runs instead of dropping them, and opens runs and tables."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

import sweeplab
from sweeplab import api
from sweeplab.tracking import runs_cli
from sweeplab.tracking.record import new_record, write_record
from sweeplab.tracking.runs import RunError
from sweeplab.tracking.store import metric_number
from sweeplab.tracking.sweeps import write_outcome

CHOICES = {"data": "digits", "backbone": "small_cnn", "augment": "none", "hydra/launcher": "basic"}


def _config(seed=0, backbone="small_cnn", augment="none", max_epochs=15):
    return {
        "name": f"digits_{backbone}",
        "seed": seed,
        "data": {"name": "digits", "batch_size": 64},
        "backbone": {"name": backbone},
        "augment": {"name": augment, "alpha": 0.2},
        "trainer": {"max_epochs": max_epochs},
        "eval": {"ood": {"detectors": ["msp", "energy"]}},
    }


def _run(root: Path, name: str, run_id: str, day: int, overrides, status="complete", **fields):
    settings = dict(o.split("=", 1) for o in overrides)
    config = _config(
        seed=int(settings.get("seed", 0)),
        backbone=settings.get("backbone", "small_cnn"),
        augment=settings.get("augment", "none"),
        max_epochs=int(settings.get("trainer.max_epochs", 15)),
    )
    record = new_record(run_id, name, config, list(overrides), {"git_sha": "abc"})
    choices = {**CHOICES, **{k: v for k, v in settings.items() if k in CHOICES}}
    record.update(status=status, created=f"2026-01-0{day}T12:00:00+00:00", choices=choices)
    record.update(fields)
    write_record(root / name / run_id, record)
    return root / name / run_id


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Seven runs: four complete, one failed, one running, one corrupt, one without a record."""
    root = tmp_path / "runs"

    def metrics(acc):
        return {"test/cls/acc": acc, "test/cal/ece": acc / 20, "ood/near/energy/auroc": "nan"}

    _run(root, "digits_small_cnn", "a0", 1, ["seed=0"], metrics=metrics(0.91), duration_s=3.5)
    _run(root, "digits_small_cnn", "a1", 2, ["seed=1"], metrics=metrics(0.93))
    _run(root, "digits_small_cnn", "m0", 3, ["augment=mixup", "seed=0"], metrics=metrics(0.95))
    _run(root, "digits_mlp", "p2", 4, ["backbone=mlp", "seed=2", "trainer.max_epochs=1", "name=digits_mlp"],
         metrics={"test/cls/acc": 0.8, "perf/train_samples_per_s": 1234.5})  # fmt: skip
    _run(root, "digits_small_cnn", "f1", 5, ["augment=mixup", "seed=1"], status="failed",
         error="Traceback (most recent call last):\nRuntimeError: loss is NaN")  # fmt: skip
    _run(root, "digits_small_cnn", "r2", 6, ["seed=2", "hydra.job.chdir=false"], status="running")
    corrupt = root / "digits_small_cnn" / "c9"
    corrupt.mkdir(parents=True)
    (corrupt / "record.json").write_text('{"status": "compl', encoding="utf-8")
    orphan = root / "digits_small_cnn" / "o9"
    (orphan / "checkpoints").mkdir(parents=True)
    return root


def _listed(store: Path, *argv: str) -> list[dict]:
    """What ``sweeplab runs --format json --metrics all`` prints for these arguments."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert runs_cli.main(["--runs-dir", str(store), "--format", "json", "--metrics", "all",
                              *argv]) == 0  # fmt: skip
    return json.loads(out.getvalue())


def _same_number(a, b) -> bool:
    a, b = metric_number(a), metric_number(b)
    if a is None or b is None:
        return a is b or (a is None and b is not None and math.isnan(b))
    return a == b or (math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------- load_runs


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["seed=0"],
        ["seed=0,1"],
        ["augment=mixup"],
        ["backbone=mlp"],
        ["trainer.max_epochs=1"],
        ["name=digits_small_cnn", "seed=1"],
        ["--status", "complete"],
        ["--status", "unreadable"],
        ["--status", "failed", "augment=mixup"],
        ["seed=7"],
    ],
)
def test_load_runs_lists_what_sweeplab_runs_lists(store, argv):
    status = argv[1] if argv[:1] == ["--status"] else None
    filters = argv[2:] if status else argv
    frame = api.load_runs(store, where=filters, status=status)
    listed = _listed(store, *argv)
    assert list(frame["run_id"]) == [row["run_id"] for row in listed]
    assert list(frame["status"]) == [row["status"] for row in listed]
    by_id = frame.set_index("run_id")
    for row in listed:
        for key, value in row["metrics"].items():
            assert _same_number(by_id.loc[row["run_id"], key], value), (row["run_id"], key)
        assert by_id.loc[row["run_id"], "path"] == row["path"]


def test_keyword_filters_are_the_filter_strings(store):
    def ids(frame):
        return list(frame["run_id"])

    assert ids(api.load_runs(store, seed=[0, 1])) == ids(api.load_runs(store, where=["seed=0,1"]))
    assert ids(api.load_runs(store, seed="0,1")) == ["a0", "a1", "m0", "f1"]
    assert ids(api.load_runs(store, name="digits_small_cnn", augment="mixup")) == ["m0", "f1"]
    assert ids(api.load_runs(store, where="augment=mixup seed=0")) == ["m0"]
    assert ids(api.load_runs(store, status="complete", seed=2)) == ["p2"]
    assert ids(api.load_runs(store, **{"trainer.max_epochs": 1})) == ["p2"]
    with pytest.raises(ValueError, match="unknown status"):
        api.load_runs(store, status="done")
    with pytest.raises(ValueError, match="key=value"):
        api.load_runs(store, where=["seed"])


def test_the_api_reads_the_store_found_by_the_one_rule(store, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_RUNS_DIR", str(store))
    assert len(sweeplab.load_runs()) == 8


def test_a_sweep_selects_its_runs(store):
    sweep = store / "_sweeps" / "2026-01-01_00-00-00"
    for run_id in ("a0", "m0"):
        write_outcome(sweep, store / "digits_small_cnn" / run_id, "complete", None)
    assert list(api.load_runs(store, sweep=sweep.name)["run_id"]) == ["a0", "m0"]
    assert [r["run_id"] for r in _listed(store, "--sweep", sweep.name)] == ["a0", "m0"]
    with pytest.raises(ValueError, match="no sweep 'nope'"):
        api.load_runs(store, sweep="nope")


def test_columns_hold_overrides_choices_and_metrics(store):
    frame = api.load_runs(store).set_index("run_id")
    assert list(frame.columns[:2]) == ["name", "status"]
    # An override's value, typed; a run without the override has its config's value.
    assert frame.loc["a0", "seed"] == 0 and frame.loc["p2", "seed"] == 2
    assert (
        frame.loc["p2", "trainer.max_epochs"] == 1 and frame.loc["a0", "trainer.max_epochs"] == 15
    )
    assert frame.loc["m0", "augment"] == "mixup" and frame.loc["a0", "augment"] == "none"
    assert frame.loc["p2", "backbone"] == "mlp" and frame.loc["a0", "data"] == "digits"
    assert "hydra.job.chdir" not in frame and "hydra/launcher" not in frame
    assert frame.columns.is_unique and frame.loc["p2", "name"] == "digits_mlp"
    assert frame.loc["a0", "test/cls/acc"] == 0.91 and frame.loc["a0", "duration_s"] == 3.5
    assert math.isnan(frame.loc["a0", "ood/near/energy/auroc"])  # written as "nan"
    assert math.isnan(frame.loc["a0", "perf/train_samples_per_s"])  # a metric it lacks
    assert frame.loc["f1", "error"].endswith("RuntimeError: loss is NaN")
    assert frame.groupby("augment")["test/cls/acc"].count().to_dict() == {"mixup": 1, "none": 3}


def test_a_corrupt_record_is_reported_as_unreadable(store):
    frame = api.load_runs(store).set_index("run_id")
    assert len(frame) == 8  # nothing dropped
    assert frame.loc["c9", "status"] == frame.loc["o9", "status"] == "unreadable"
    assert "not readable as JSON" in frame.loc["c9", "problem"]
    assert "record.json" in frame.loc["c9", "problem"]
    assert "no record.json" in frame.loc["o9", "problem"]
    assert frame.loc["c9", "path"].endswith("c9") and pd.isna(frame.loc["c9", "seed"])
    assert list(api.load_runs(store, status="unreadable")["run_id"]) == ["c9", "o9"]
    assert api.load_runs(store, status="complete")["problem"].isna().all()


def test_an_empty_or_missing_store_is_an_empty_frame(tmp_path):
    for where in (tmp_path, tmp_path / "nowhere"):
        frame = api.load_runs(where)
        assert frame.empty and list(frame.columns[:3]) == ["run_id", "name", "status"]


# --------------------------------------------------------------------------- open_run


def test_open_run_of_a_missing_id_names_what_it_looked_for(store):
    with pytest.raises(RunError) as info:
        api.open_run("zz42", store)
    message = str(info.value)
    assert "'zz42'" in message and str(store) in message and "\n" not in message
    with pytest.raises(RunError, match="ambiguous"):
        api.open_run("a", store)
    with pytest.raises(RunError, match="not readable as JSON"):
        api.open_run("c9", store)
    with pytest.raises(RunError, match=r"no record\.json"):
        api.open_run(store / "digits_small_cnn" / "o9")


def test_open_run_gives_record_config_curves_cache_and_plots(store):
    run_dir = store / "digits_small_cnn" / "a0"
    (run_dir / "metrics.csv").write_text("epoch,step,val/cls/acc\n0,10,0.5\n1,20,0.75\n")
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "reliability_test.png").write_bytes(b"\x89PNG")
    run = api.open_run("a0", store)
    assert isinstance(run, sweeplab.api.RunData) and run.path == run_dir.resolve()
    assert run.record["metrics"]["test/cls/acc"] == 0.91 and run.config["seed"] == 0
    assert list(run.curves["val/cls/acc"]) == [0.5, 0.75]
    assert list(run.plots) == ["reliability_test.png"]
    assert list(run.eval_cache) == [] and "test" not in run.eval_cache
    with pytest.raises(KeyError, match=r"no eval cache 'test'.*eval_cache"):
        run.eval_cache["test"]
    assert api.open_run(run_dir).run_id == "a0"  # by directory
    failed = api.open_run("f1", store)
    assert failed.status == "failed" and failed.error.endswith("loss is NaN")
    with pytest.raises(RunError, match="not complete"):
        api.open_run("f1", store, require_complete=True)


IMPORTS = """
import json, sys
import sweeplab
bare = [m for m in ("pandas", "torch", "hydra") if m in sys.modules]
from sweeplab import load_runs, open_run
runs = load_runs(STORE)
run = open_run("a0", STORE)
names, curves = list(run.eval_cache), run.curves
before = [m for m in ("torch", "pytorch_lightning", "lightning", "hydra") if m in sys.modules]
test = run.eval_cache["test"]
print(json.dumps({"bare": bare, "before": before, "names": names, "rows": len(runs),
                  "shape": list(test.member_logits.shape), "again": run.eval_cache["test"] is test}))
"""


def test_the_api_imports_torch_only_to_open_an_eval_cache(store):
    import torch

    from sweeplab.evaluation.cache import EvalOutputs, save_outputs

    run_dir = store / "digits_small_cnn" / "a0"
    outputs = EvalOutputs(torch.zeros(5, 1, 3), torch.zeros(5, 4), torch.arange(5))
    save_outputs(outputs, run_dir, "test")
    save_outputs(outputs, run_dir, "ood/noise/test")
    result = subprocess.run(
        [sys.executable, "-c", f"STORE = {str(store)!r}\n" + IMPORTS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bare"] == [] and report["before"] == []
    assert report["names"] == ["ood/noise/test", "test"] and report["rows"] == 8
    assert report["shape"] == [5, 1, 3] and report["again"] is True


# --------------------------------------------------------------------------- load_table

SPEC = """\
title: Mixers
base: [trainer.max_epochs=1]
seeds: [0, 1]
rows:
  - {label: none, overrides: [augment=none]}
  - {label: mixup, overrides: [augment=mixup]}
columns:
  - {label: acc (%), metric: test/cls/acc, format: {percent: true, decimals: 1}}
  - {label: ECE, metric: test/cal/ece, format: {decimals: 3, lower_is_better: true}}
references:
  - {row: mixup, column: acc (%), value: 90.0, source: "A paper, Table 1", tolerance: 1.0}
"""


def test_load_table_gives_the_cells_sweeplab_table_renders(tmp_path):
    from sweeplab.tables.cells import resolve
    from sweeplab.tables.render import render_csv
    from sweeplab.tables.spec import load_spec

    spec_file = tmp_path / "mixers.yaml"
    spec_file.write_text(SPEC)
    store = tmp_path / "runs"
    values = {("none", 0): 0.90, ("none", 1): 0.92, ("mixup", 0): 0.93}  # mixup seed 1: not run
    table = resolve(load_spec(spec_file), store)
    for (row, seed), acc in values.items():
        slot = next(s for s in table.cell(row, "acc (%)").group.slots if s.seed == seed)
        record = new_record(slot.run_id, slot.run_dir.parent.name, {"seed": seed}, [], {})
        record.update(status="complete", metrics={"test/cls/acc": acc, "test/cal/ece": acc / 10})
        write_record(slot.run_dir, record)

    cells = api.load_table(spec_file, store).set_index(["row", "column"])
    assert len(cells) == 4
    none_acc = cells.loc[("none", "acc (%)")]
    assert none_acc["mean"] == pytest.approx(91.0) and none_acc["n"] == 2
    assert none_acc["values"] == pytest.approx({0: 90.0, 1: 92.0})
    assert none_acc["std"] == pytest.approx(math.sqrt(2))
    mixup_acc = cells.loc[("mixup", "acc (%)")]
    assert mixup_acc["n"] == 1 and mixup_acc["missing"] == 1 and math.isnan(mixup_acc["std"])
    assert mixup_acc["reference"] == 90.0 and mixup_acc["difference"] == pytest.approx(3.0)
    assert bool(mixup_acc["outside_tolerance"]) and mixup_acc["source"] == "A paper, Table 1"
    assert bool(mixup_acc["best"]) and bool(cells.loc[("none", "ECE"), "best"])
    assert len(mixup_acc["run_ids"]) == 2

    table.reload()
    rendered = list(csv_rows(render_csv(table)))
    for line in rendered:
        cell = cells.loc[(line["row"], line["column"])]
        assert int(line["n"]) == cell["n"] and int(line["missing"]) == cell["missing"]
        assert float(line["mean"]) == pytest.approx(cell["mean"], rel=1e-9)
        assert bool(int(line["best"])) == bool(cell["best"])

    # Extra overrides move every cell to other runs, as on the command line.
    other = api.load_table(spec_file, store, overrides=["trainer.max_epochs=2"])
    assert other["n"].sum() == 0 and other["mean"].isna().all()


def csv_rows(text: str):
    import csv

    return csv.DictReader(io.StringIO(text))
