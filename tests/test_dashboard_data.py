"""The dashboard's data layer on hand-written run stores: index, filters, columns, groups."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sweeplab.dashboard import tables
from sweeplab.dashboard.index import StoreIndex
from sweeplab.dashboard.launch import main as dashboard_main
from sweeplab.dashboard.launch import port_in_use
from sweeplab.tracking.record import new_record, write_record
from sweeplab.tracking.store import filter_runs, scan_store

BASE_CONFIG = {
    "name": "digits_small_cnn",
    "seed": 0,
    "data": {"name": "digits"},
    "backbone": {"name": "small_cnn"},
    "augment": {"name": "none", "alpha": 0.2},
    "trainer": {"max_epochs": 5},
}


def make_run(
    runs_dir: Path,
    run_id: str,
    overrides: list[str],
    metrics: dict[str, float] | None = None,
    status: str = "complete",
    name: str = "digits_small_cnn",
    created: str = "2026-01-01T00:00:00+00:00",
) -> Path:
    """A run directory with a record whose config reflects ``overrides`` (dotted keys)."""
    config = json.loads(json.dumps(BASE_CONFIG))
    for override in overrides:
        key, _, value = override.partition("=")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        parsed = json.loads(value) if value[:1].isdigit() else value
        if isinstance(node.get(leaf), dict):
            node[leaf]["name"] = parsed
        else:
            node[leaf] = parsed
    run_dir = runs_dir / name / run_id
    run_dir.mkdir(parents=True)
    record = new_record(run_id, name, config, overrides, {})
    record.update(status=status, metrics=metrics or {}, created=created)
    if status == "failed":
        record["error"] = "RuntimeError: loss is NaN"
    write_record(run_dir, record)
    return run_dir


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Two recipes × two seeds, a running run, a failed run, a corrupt and a record-less run."""
    runs = tmp_path / "runs"
    for i, (mixer, seed, acc) in enumerate(
        [("none", 0, 0.90), ("none", 1, 0.92), ("mixup", 0, 0.94), ("mixup", 1, 0.96)]
    ):
        make_run(
            runs,
            f"r{i}",
            [f"augment={mixer}", f"seed={seed}"],
            {"test/cls/acc": acc, "test/cal/ece": 0.05 + i / 100, "val/cls/acc": acc},
            created=f"2026-01-01T00:00:0{i}+00:00",
        )
    make_run(
        runs,
        "run5",
        ["augment=mixup", "seed=2"],
        status="running",
        created="2026-01-01T00:00:05+00:00",
    )
    make_run(
        runs,
        "fail6",
        ["augment=cutmix", "seed=0"],
        status="failed",
        created="2026-01-01T00:00:06+00:00",
    )
    corrupt = runs / "digits_small_cnn" / "corrupt7"
    corrupt.mkdir()
    (corrupt / "record.json").write_text('{"status": "compl')
    orphan = runs / "digits_small_cnn" / "orphan8"
    (orphan / "checkpoints").mkdir(parents=True)
    (runs / "_sweeps" / "2026-01-01").mkdir(parents=True)  # sweep metadata, not a run
    return runs


def by_id(entries):
    return {e.run_id: e for e in entries}


# --------------------------------------------------------------------------- index


def test_index_lists_what_scan_store_lists(runs_dir):
    index = StoreIndex(runs_dir)
    entries = index.refresh()
    assert [e.path for e in entries] == [e.path for e in scan_store(runs_dir)]
    statuses = {e.run_id: e.status for e in entries}
    assert statuses["run5"] == "running" and statuses["fail6"] == "failed"
    assert statuses["corrupt7"] == statuses["orphan8"] == "unreadable"
    assert "not readable as JSON" in by_id(entries)["corrupt7"].problem
    assert "no record.json" in by_id(entries)["orphan8"].problem


def test_index_rereads_only_changed_records(runs_dir):
    index = StoreIndex(runs_dir)
    index.refresh()
    first_reads, version = index.reads, index.version
    index.refresh()
    assert index.version == version  # nothing changed: what pages cached on it still holds
    # Only the record-less directory is looked at again (it may have gained a record).
    assert index.reads - first_reads == 1

    run_dir = runs_dir / "digits_small_cnn" / "run5"
    record = json.loads((run_dir / "record.json").read_text())
    record.update(status="complete", metrics={"test/cls/acc": 0.97})
    write_record(run_dir, record)
    os.utime(run_dir / "record.json", ns=(1, 1))  # a new signature even on coarse clocks
    before = index.reads
    entries = by_id(index.refresh())
    assert index.reads - before == 2  # the changed record and the record-less directory
    assert index.version == version + 1
    assert entries["run5"].status == "complete"
    assert entries["run5"].metrics["test/cls/acc"] == 0.97

    make_run(runs_dir, "new9", ["seed=9"], created="2026-01-02T00:00:00+00:00")
    (runs_dir / "digits_small_cnn" / "corrupt7" / "record.json").unlink()
    (runs_dir / "digits_small_cnn" / "corrupt7").rmdir()
    entries = index.refresh()
    ids = [e.run_id for e in entries]
    assert ids.index("new9") > ids.index("fail6")  # sorted by creation time
    assert "corrupt7" not in by_id(entries)
    assert index.get("new9").path == runs_dir / "digits_small_cnn" / "new9"


def test_index_of_a_missing_store_is_empty(tmp_path):
    assert StoreIndex(tmp_path / "nowhere").refresh() == []


def test_index_of_a_thousand_runs_reads_each_record_once(tmp_path):
    runs = tmp_path / "runs"
    for i in range(1000):
        run_dir = runs / f"name{i % 10}" / f"run{i:04d}"
        run_dir.mkdir(parents=True)
        record = new_record(f"run{i:04d}", f"name{i % 10}", {"seed": i % 5}, [f"seed={i % 5}"], {})
        record.update(status="complete", metrics={"test/cls/acc": i / 1000})
        record["created"] = f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
        write_record(run_dir, record)
    index = StoreIndex(runs)
    entries = index.refresh()
    assert len(entries) == 1000 and index.reads == 1000
    assert index.refresh() == entries and index.reads == 1000  # nothing changed: nothing reread
    frame = tables.runs_frame(entries)
    assert len(frame) == 1000
    assert list(frame.columns[:4]) == ["run_id", "status", "test/cls/acc", "seed"]
    assert len(filter_runs(entries, where=["seed=3"])) == 200


# --------------------------------------------------------------------------- runs table


def test_varying_keys_are_the_overrides_that_differ(runs_dir):
    entries = scan_store(runs_dir)
    assert tables.varying_keys(entries) == ["augment", "seed"]
    same_seed = [e for e in entries if e.record and "seed=0" in e.overrides]
    assert tables.varying_keys(same_seed) == ["augment"]


def test_a_default_counts_as_a_value_of_a_varying_key(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a", [])
    make_run(runs, "b", ["trainer.max_epochs=10"])
    entries = scan_store(runs)
    assert tables.varying_keys(entries) == ["trainer.max_epochs"]
    assert [tables.setting(e, "trainer.max_epochs") for e in entries] == ["5", "10"]


def test_runs_frame_has_status_varying_overrides_and_key_metrics(runs_dir):
    frame = tables.runs_frame(scan_store(runs_dir)).set_index("run_id")
    # metrics first, then the settings that differ, then the rest
    assert list(frame.columns[:5]) == ["status", "test/cls/acc", "test/cal/ece", "augment", "seed"]
    assert list(frame.columns[5:]) == ["name", "duration_s", "created", "note", "path"]
    assert "ood/near/energy/auroc" not in frame  # no run has it
    assert frame.loc["r2", "augment"] == "mixup" and frame.loc["r2", "test/cls/acc"] == 0.94
    assert frame.loc["fail6", "note"] == "RuntimeError: loss is NaN"
    assert "not readable" in frame.loc["corrupt7", "note"]
    assert frame.loc["corrupt7", "status"] == "unreadable"


def test_filters_reuse_the_store_filter(runs_dir):
    entries = scan_store(runs_dir)
    mixup = filter_runs(entries, where=["augment=mixup"])
    assert {e.run_id for e in mixup} == {"r2", "r3", "run5"}
    assert {e.run_id for e in filter_runs(mixup, where=["seed=1"])} == {"r3"}
    assert {e.run_id for e in filter_runs(entries, status="unreadable")} == {"corrupt7", "orphan8"}
    with pytest.raises(ValueError, match="key=value"):
        filter_runs(entries, where=["augment"])


# --------------------------------------------------------------------------- groups


def test_seed_groups_average_over_seeds(runs_dir):
    complete = filter_runs(scan_store(runs_dir), status="complete")
    groups = tables.group_runs(complete)
    assert {k: [e.run_id for e in v] for k, v in groups.items()} == {
        "augment=none": ["r0", "r1"],
        "augment=mixup": ["r2", "r3"],
    }
    summary = tables.aggregate(groups, ["test/cls/acc"]).set_index("group")
    assert summary.loc["augment=none", "test/cls/acc mean"] == pytest.approx(0.91)
    assert summary.loc["augment=mixup", "test/cls/acc std"] == pytest.approx(0.0141421, rel=1e-4)
    assert summary.loc["augment=mixup", "runs"] == 2


def test_group_by_any_config_key(runs_dir):
    entries = scan_store(runs_dir)
    groups = tables.group_runs(entries, by="seed")
    assert sorted(groups) == ["seed=0", "seed=1", "seed=2"]
    assert {e.run_id for e in groups["seed=0"]} == {"r0", "r2", "fail6"}
    summary = tables.aggregate(groups, ["test/cls/acc"]).set_index("group")
    assert summary.loc["seed=0", "test/cls/acc n"] == 2  # the failed run has no metric
    assert pd.isna(summary.loc["seed=2", "test/cls/acc mean"])


# --------------------------------------------------------------------------- one run


def test_metric_families(tmp_path):
    metrics = {
        "test/cls/acc": 0.9,
        "val/cls/nll": 0.3,
        "test/cal/ece": 0.05,
        "test/cal/ece_ts": 0.02,
        "ood/held_out/knn/auroc": 0.8,
        "ood/held_out/knn/fpr95": 0.4,
        "ood/near/energy/auroc": 0.7,
        "shift/contrast/1/acc": 0.85,
        "shift/contrast/mean/acc": 0.8,
        "shift/mean/acc": 0.75,
        "perf/train_samples_per_s": 1000.0,
        "test/cls/brier": "NaN",
    }
    families = tables.metric_families(metrics)
    cls = families["classification"].set_index(["split", "metric"])["value"]
    assert cls[("test", "acc")] == 0.9 and cls[("val", "nll")] == 0.3
    assert cls[("test", "brier")] != cls[("test", "brier")]  # NaN stays NaN
    assert set(families["calibration"]["metric"]) == {"ece", "ece_ts"}
    ood = families["ood"].set_index(["set", "detector"])
    assert ood.loc[("held_out", "knn"), "fpr95"] == 0.4
    assert ood.loc[("near", "energy"), "auroc"] == 0.7
    shift = families["shift"].set_index(["corruption", "severity"])
    assert shift.loc[("contrast", "1"), "acc"] == 0.85
    assert shift.loc[("contrast", "mean"), "acc"] == 0.8
    assert shift.loc[("all", "mean"), "acc"] == 0.75
    assert list(families["other"]["metric"]) == ["perf/train_samples_per_s"]


def test_learning_curves_and_mean_curve(tmp_path):
    runs = []
    for i, values in enumerate([(0.5, 0.7), (0.7, 0.9)]):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        (run_dir / "metrics.csv").write_text(
            f"epoch,step,train/cls/loss,val/cls/acc\n0,10,1.0,{values[0]}\n1,20,0.5,{values[1]}\n"
        )
        runs.append(run_dir)
    frame = tables.learning_curves(runs[0])
    assert list(frame["epoch"]) == [0, 1] and list(frame["val/cls/acc"]) == [0.5, 0.7]
    mean = tables.mean_curve([tables.learning_curves(r) for r in runs], "val/cls/acc")
    assert list(mean["epoch"]) == [0, 1]
    assert list(mean["val/cls/acc"]) == pytest.approx([0.6, 0.8])
    assert tables.learning_curves(tmp_path / "missing").empty


def test_reliability_bins_drop_empty_bins_and_tolerate_bad_files(tmp_path):
    (tmp_path / "plots").mkdir()
    bins = {
        "edges": [0.0, 0.5, 1.0],
        "count": [0, 10],
        "confidence": [None, 0.8],
        "accuracy": [None, 0.7],
    }
    (tmp_path / "plots" / "reliability_test.json").write_text(
        json.dumps({"before": bins, "after_ts": bins, "broken": {"edges": 3}})
    )
    variants = tables.reliability(tmp_path)
    assert sorted(variants) == ["after_ts", "before"]
    assert variants["before"].to_dict("records") == [
        {"bin_center": 0.75, "count": 10, "confidence": 0.8, "accuracy": 0.7}
    ]
    (tmp_path / "plots" / "reliability_test.json").write_text("{not json")
    assert tables.reliability(tmp_path) == {}


def test_pictures_are_the_pngs_under_plots(tmp_path):
    (tmp_path / "plots").mkdir()
    for name in ("reliability_test.png", "mixed_samples.png", "reliability_test.json"):
        (tmp_path / "plots" / name).write_bytes(b"x")
    assert [p.name for p in tables.pictures(tmp_path)] == [
        "mixed_samples.png",
        "reliability_test.png",
    ]


# --------------------------------------------------------------------------- ensembles

ENSEMBLE_METRICS = {
    "test/cls/acc": 0.95,
    "test/cls/nll": 0.20,
    "test/cal/ece": 0.03,
    "ood/near/energy/auroc": 0.81,
    "ood/near/msp/auroc": 0.79,
    **{f"ens/member_{m}/test/cls/acc": 0.90 + m / 100 for m in range(3)},
    **{f"ens/member_{m}/test/cls/nll": 0.30 + m / 100 for m in range(3)},
    **{f"ens/member_{m}/test/cal/ece": 0.05 for m in range(3)},
    "ens/member_mean/test/cls/acc": 0.91,
    "ens/member_mean/test/cls/nll": 0.31,
    "ens/member_mean/test/cal/ece": 0.05,
    "ens/test/disagreement": 0.12,
    "ens/test/mutual_info": 0.04,
    "ens/val/disagreement": 0.11,
}


def make_ensemble_run(runs_dir: Path, run_id: str, sources: list[str]) -> Path:
    """A run made from other runs: member metrics and the ids it was made from."""
    run_dir = make_run(runs_dir, run_id, ["regime=ensemble"], ENSEMBLE_METRICS)
    record = json.loads((run_dir / "record.json").read_text())
    record["sources"] = sorted(sources)
    write_record(run_dir, record)
    return run_dir


def test_members_chart_data_has_each_member_their_mean_and_the_ensemble(tmp_path):
    from sweeplab.evaluation.ensemble_summary import comparison_frame, diversity_frame

    run_dir = make_ensemble_run(tmp_path / "runs", "ens0", ["r1", "r0"])
    (entry,) = scan_store(tmp_path / "runs")
    assert entry.record["sources"] == ["r0", "r1"] and entry.path == run_dir
    frame = comparison_frame(entry.metrics)
    acc = frame[frame["metric"] == "acc"]
    assert list(acc["model"]) == ["member 0", "member 1", "member 2", "member mean", "ensemble"]
    assert list(acc["kind"]) == ["member"] * 3 + ["member mean", "ensemble"]
    assert list(acc["value"]) == pytest.approx([0.90, 0.91, 0.92, 0.91, 0.95])
    assert list(dict.fromkeys(frame["metric"])) == [
        "acc", "nll", "ece", "near-OOD AUROC (energy)",
    ]  # fmt: skip
    auroc = frame[frame["metric"] == "near-OOD AUROC (energy)"]
    assert auroc.to_dict("records") == [
        {"model": "ensemble", "kind": "ensemble", "metric": "near-OOD AUROC (energy)",
         "value": 0.81}
    ]  # fmt: skip
    spread = diversity_frame(entry.metrics).set_index("diversity")
    assert spread.loc["disagreement", "test"] == 0.12 and spread.loc["disagreement", "val"] == 0.11
    assert spread.loc["mutual_info", "test"] == 0.04
    assert list(spread.index) == ["disagreement", "mutual_info"]


def test_members_chart_data_is_empty_for_a_single_model(tmp_path):
    from sweeplab.evaluation.ensemble_summary import comparison_frame, has_members

    metrics = {"test/cls/acc": 0.9, "ood/near/msp/auroc": 0.7}
    assert not has_members(metrics)
    frame = comparison_frame(metrics)
    assert list(frame["model"]) == ["ensemble", "ensemble"]  # the model itself, no members
    assert list(frame["metric"]) == ["acc", "near-OOD AUROC (msp)"]
    assert comparison_frame({}).empty and list(comparison_frame({}).columns) == [
        "model", "kind", "metric", "value",
    ]  # fmt: skip


# --------------------------------------------------------------------------- launcher


def test_an_occupied_port_is_named_and_fails(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert dashboard_main(["--runs-dir", str(tmp_path), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port}" in err and "--port" in err
