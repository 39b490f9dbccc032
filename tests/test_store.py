"""The run store reader and ``sweeplab runs``: scan, filter, list, on a hand-built store."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from sweeplab.tracking import runs_cli
from sweeplab.tracking.record import new_record, write_record
from sweeplab.tracking.store import (
    MISSING,
    RunEntry,
    config_value,
    filter_runs,
    matches,
    scan_store,
)

PROVENANCE = {"git_sha": "abc123", "dirty": False}


def _config(seed, data="digits", batch_size=64, max_epochs=5, backbone="smallcnn"):
    return {
        "seed": seed,
        "data": {"name": data, "batch_size": batch_size},
        "backbone": {"name": backbone, "width": 32},
        "trainer": {"max_epochs": max_epochs},
        "optim": {"lr": 0.001},
        "compile": False,
        "tags": ["a", "b"],
    }


def _run(root, name, run_id, day, config, overrides, status="complete", **fields):
    record = new_record(run_id, name, config, overrides, PROVENANCE)
    record.update(status=status, created=f"2024-01-0{day}T12:00:00+00:00", **fields)
    write_record(root / name / run_id, record)


def _set_mtime(path: Path, day: int) -> None:
    stamp = datetime.fromisoformat(f"2024-01-0{day}T12:00:00+00:00").timestamp()
    os.utime(path, (stamp, stamp))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Six runs (2 complete, 1 failed, 1 running, 2 unreadable) plus things that are not runs."""
    root = tmp_path / "runs"
    metrics = {
        "test/cls/acc": 0.971234,
        "test/cls/nll": 0.1,
        "test/cls/brier": 0.05,
        "val/cls/acc": 0.96,
        "perf/train_samples_per_s": 12345.6,
    }
    # Written out of date order, so the scan has to sort.
    _run(root, "digits", "bbb", 2, _config(1, backbone="mlp"), ["seed=1", "backbone=mlp"],
         metrics={**metrics, "test/cls/acc": 0.95}, duration_s=61.0)  # fmt: skip
    _run(root, "digits", "aaa", 1, _config(0), ["seed=0"], metrics=metrics, duration_s=12.34)
    _run(root, "digits", "ccc", 3, _config(2, batch_size=32), ["seed=2", "data.batch_size=32"],
         status="failed", duration_s=3.0,
         error="Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n")  # fmt: skip
    _run(root, "mnist", "ddd", 4, _config(0, data="mnist", max_epochs=1),
         ["+data=mnist", "trainer.max_epochs=1", "hydra.job.chdir=false"], status="running")  # fmt: skip

    corrupt = root / "mnist" / "eee"
    corrupt.mkdir(parents=True)
    (corrupt / "record.json").write_text("{not json", encoding="utf-8")
    _set_mtime(corrupt, 5)
    no_record = root / "mnist" / "fff"
    no_record.mkdir()
    (no_record / "config.yaml").write_text("seed: 3\n", encoding="utf-8")
    _set_mtime(no_record, 6)

    (root / "mnist" / "empty").mkdir()  # no record, no run files: not a run
    (root / "_sweeps" / "2024-01-01" / "x").mkdir(parents=True)
    (root / "_sweeps" / "2024-01-01" / "multirun.yaml").write_text("{}", encoding="utf-8")
    (root / ".cache" / "y").mkdir(parents=True)
    (root / "README.txt").write_text("stray file", encoding="utf-8")
    (root / "digits" / "notes.txt").write_text("stray file", encoding="utf-8")
    return root


def _ids(entries):
    return [e.run_id for e in entries]


# --------------------------------------------------------------------------- scan


def test_scan_finds_runs_in_created_order(store):
    entries = scan_store(store)
    assert _ids(entries) == ["aaa", "bbb", "ccc", "ddd", "eee", "fff"]
    assert [e.status for e in entries] == [
        "complete", "complete", "failed", "running", "unreadable", "unreadable",
    ]  # fmt: skip
    assert [e.name for e in entries] == ["digits"] * 3 + ["mnist"] * 3
    assert all(e.problem is None for e in entries[:4])


def test_scan_reports_why_a_run_is_unreadable(store):
    by_id = {e.run_id: e for e in scan_store(store)}
    assert by_id["eee"].record is None
    assert "not readable as JSON" in by_id["eee"].problem
    assert str(store / "mnist" / "eee") in by_id["eee"].problem
    assert "no record.json" in by_id["fff"].problem and "config.yaml" in by_id["fff"].problem
    assert by_id["fff"].metrics == {} and by_id["fff"].overrides == [] and by_id["fff"].config == {}


def test_scan_ties_on_created_break_by_path(tmp_path):
    for run_id in ("zz", "aa", "mm"):
        _run(tmp_path, "same", run_id, 1, _config(0), [])
    assert _ids(scan_store(tmp_path)) == ["aa", "mm", "zz"]


def test_scan_missing_or_empty_store_is_empty(tmp_path):
    assert scan_store(tmp_path / "nope") == []
    assert scan_store(tmp_path) == []
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert scan_store(tmp_path / "file") == []


def test_scan_turns_unlistable_directories_into_problems(store, monkeypatch):
    real_iterdir = Path.iterdir
    blocked = store / "mnist"

    def iterdir(self):
        if self == blocked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    entries = scan_store(store)
    assert _ids(entries)[:3] == ["aaa", "bbb", "ccc"]
    assert len(entries) == 4
    assert entries[3].status == "unreadable" and "cannot list" in entries[3].problem


def test_scan_turns_unreadable_record_into_problem(store, monkeypatch):
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == store / "digits" / "aaa" / "record.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    by_id = {e.run_id: e for e in scan_store(store)}
    assert by_id["aaa"].status == "unreadable"
    assert "Permission denied" in by_id["aaa"].problem


# --------------------------------------------------------------------------- filters


def test_config_value_walks_dotted_keys():
    config = {"a": {"b": {"c": 0}}, "n": None, "xs": [10, 20]}
    assert config_value(config, "a.b.c") == 0
    assert config_value(config, "a.b") == {"c": 0}
    assert config_value(config, "n") is None
    assert config_value(config, "xs.1") == 20
    assert config_value(config, "a.x") is MISSING
    assert config_value(config, "a.b.c.d") is MISSING
    assert config_value(config, "xs.5") is MISSING


def test_filter_by_status(store):
    entries = scan_store(store)
    assert _ids(filter_runs(entries, status="complete")) == ["aaa", "bbb"]
    assert _ids(filter_runs(entries, status="failed")) == ["ccc"]
    assert _ids(filter_runs(entries, status="running")) == ["ddd"]
    assert _ids(filter_runs(entries, status="unreadable")) == ["eee", "fff"]
    assert _ids(filter_runs(entries)) == _ids(entries)


def test_invalid_status_lists_valid_ones(store):
    with pytest.raises(ValueError, match="running, complete, failed, unreadable"):
        filter_runs(scan_store(store), status="done")


def test_malformed_filter_is_an_error(store):
    with pytest.raises(ValueError, match="key=value"):
        filter_runs(scan_store(store), where=["seed"])
    with pytest.raises(ValueError, match="key=value"):
        filter_runs([], where=["=3"])


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (["seed=0"], ["aaa", "ddd"]),  # seed 0 is a seed: config int 0, not "falsy"
        (["seed=1"], ["bbb"]),
        (["data=digits"], ["aaa", "bbb", "ccc"]),  # group chosen by default, matched by name
        (["data=mnist"], ["ddd"]),  # launched as "+data=mnist"
        (["backbone=mlp"], ["bbb"]),
        (["data.batch_size=32"], ["ccc"]),
        (["data.batch_size=64"], ["aaa", "bbb", "ddd"]),
        (["trainer.max_epochs=5"], ["aaa", "bbb", "ccc"]),
        (["optim.lr=1e-3"], ["aaa", "bbb", "ccc", "ddd"]),  # YAML 1.1 leaves 1e-3 a string
        (["compile=false"], ["aaa", "bbb", "ccc", "ddd"]),
        (["compile=0"], []),  # a bool is not a number
        (["tags=[a,b]"], ["aaa", "bbb", "ccc", "ddd"]),
        (["seed=0", "data=digits"], ["aaa"]),  # filters combine with AND
        (["name=mnist"], ["ddd"]),
        (["run_id=bbb"], ["bbb"]),
        (["nosuchkey=1"], []),
        (["data=cifar10"], []),
    ],
)
def test_filter_by_override_or_config(store, where, expected):
    assert _ids(filter_runs(scan_store(store), where=where)) == expected


def test_exact_override_string_matches_without_config():
    entry = RunEntry(Path("r/x/1"), {"status": "complete", "overrides": ["experiment=paper_t1"]})
    assert matches(entry, ["experiment=paper_t1"])
    assert not matches(entry, ["experiment=paper_t2"])
    assert not matches(RunEntry(Path("r/x/2"), None, "broken"), ["experiment=paper_t1"])
    assert matches(RunEntry(Path("r/x/2"), None, "broken"), [])


def test_status_and_filters_combine(store):
    assert _ids(filter_runs(scan_store(store), status="complete", where=["seed=0"])) == ["aaa"]


# --------------------------------------------------------------------------- CLI


def _main(capsys, *argv):
    code = runs_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_lists_every_run_with_metrics_and_counts(store, capsys):
    code, out, _ = _main(capsys, "--runs-dir", str(store))
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == [
        "run_id", "name", "status", "overrides", "test/cls/acc", "duration", "note",
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert {"aaa", "bbb", "ccc", "ddd", "eee", "fff"} <= rows.keys()
    assert "0.9712" in rows["aaa"] and "seed=0" in rows["aaa"] and "12.3s" in rows["aaa"]
    assert "seed=1 backbone=mlp" in rows["bbb"] and "1m01s" in rows["bbb"]
    assert "RuntimeError: CUDA out of memory" in rows["ccc"]
    assert "Traceback" not in out
    assert "hydra.job.chdir" not in rows["ddd"]
    assert "record.json: not readable as JSON" in rows["eee"]
    assert "no record.json (has config.yaml)" in rows["fff"]
    assert "perf/" not in out  # not a default column
    assert out.strip().splitlines()[-1] == (
        f"6 runs (in {store}): 1 running, 2 complete, 1 failed, 2 unreadable"
    )


def test_table_filters_and_drops_metric_columns_nobody_has(store, capsys):
    code, out, _ = _main(capsys, "--runs-dir", str(store), "--status", "running")
    assert code == 0
    assert "test/cls/acc" not in out and "note" not in out.splitlines()[0]
    assert out.strip().splitlines()[-1] == f"1 run (of 6 in {store}): 1 running"

    code, out, _ = _main(capsys, "--runs-dir", str(store), "seed=0", "data=digits")
    assert code == 0
    lines = [line for line in out.splitlines()[2:] if line.strip()]
    assert lines[0].split()[0] == "aaa"
    assert lines[-1] == f"1 run (of 6 in {store}): 1 complete"


def test_table_metric_selection(store, capsys):
    _, out, err = _main(
        capsys, "--runs-dir", str(store), "--metrics", "perf/*,test/cls/acc,test/nope"
    )
    assert out.splitlines()[0].split()[4:6] == ["perf/train_samples_per_s", "test/cls/acc"]
    assert "12346" in out  # large values are not printed in exponent form
    assert "test/nope" in err


def test_no_match_says_so(store, capsys):
    code, out, _ = _main(capsys, "--runs-dir", str(store), "data=cifar10")
    assert code == 0
    assert "No runs match data=cifar10 (6 in" in out


def test_csv_parses_back(store, capsys):
    code, out, err = _main(capsys, "--runs-dir", str(store), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_id"] for r in rows] == ["aaa", "bbb", "ccc", "ddd", "eee", "fff"]
    assert float(rows[0]["test/cls/acc"]) == pytest.approx(0.971234)
    assert rows[1]["overrides"] == "seed=1 backbone=mlp"
    assert rows[2]["error"] == "RuntimeError: CUDA out of memory"
    assert rows[3]["test/cls/acc"] == ""
    assert "not readable as JSON" in rows[4]["problem"]
    assert "2 unreadable" in err  # the summary stays off stdout


def test_json_parses_back(store, capsys):
    code, out, _ = _main(capsys, "--runs-dir", str(store), "--format", "json", "--metrics", "all")
    assert code == 0
    runs = json.loads(out)
    assert [r["run_id"] for r in runs] == ["aaa", "bbb", "ccc", "ddd", "eee", "fff"]
    assert runs[0]["metrics"]["perf/train_samples_per_s"] == 12345.6
    assert runs[0]["overrides"] == ["seed=0"]
    assert runs[3]["metrics"] == {} and runs[3]["status"] == "running"
    assert runs[5]["status"] == "unreadable" and runs[5]["path"].endswith("fff")


def test_missing_store_explains_how_to_start(tmp_path, capsys):
    code, out, _ = _main(capsys, "--runs-dir", str(tmp_path / "runs"))
    assert code == 0
    assert str((tmp_path / "runs").resolve()) in out and "does not exist" in out
    assert "sweeplab train" in out

    (tmp_path / "runs").mkdir()
    code, out, _ = _main(capsys, "--runs-dir", str(tmp_path / "runs"))
    assert code == 0 and "holds no runs" in out and "sweeplab train" in out

    code, out, err = _main(capsys, "--runs-dir", str(tmp_path / "runs"), "--format", "json")
    assert code == 0 and json.loads(out) == [] and "sweeplab train" in err

    (tmp_path / "a_file").write_text("not a store")
    code, out, _ = _main(capsys, "--runs-dir", str(tmp_path / "a_file"))
    assert code == 0 and "is a file, not a run store" in out


def test_runs_dir_defaults_to_env_then_home_then_cwd(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWEEPLAB_RUNS_DIR", str(store))
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path / "elsewhere"))
    _, out, _ = _main(capsys)
    assert "6 runs" in out
    monkeypatch.delenv("SWEEPLAB_RUNS_DIR")
    monkeypatch.setenv("SWEEPLAB_HOME", str(store.parent))
    _, out, _ = _main(capsys)
    assert f"6 runs (in {store})" in out
    monkeypatch.delenv("SWEEPLAB_HOME")
    monkeypatch.chdir(store.parent)
    _, out, _ = _main(capsys)
    assert "6 runs (in runs)" in out


@pytest.mark.parametrize(
    "argv",
    [["--status", "done"], ["--format", "xml"], ["seed"], ["--bogus"]],
)
def test_bad_arguments_exit_2(store, capsys, argv):
    code, _, err = _main(capsys, "--runs-dir", str(store), *argv)
    assert code == 2
    assert "usage: sweeplab runs" in err


def test_help_exits_0(capsys):
    code, out, _ = _main(capsys, "--help")
    assert code == 0 and "key=value" in out


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.971234, "0.9712"),
        (0.1, "0.1000"),
        (0.0, "0.0000"),
        (0.00012345, "0.0001234"),
        (1.23456, "1.235"),
        (12345.6, "12346"),
        (7, "7"),
        (None, ""),
        ("nan", "nan"),
    ],
)
def test_format_number(value, text):
    assert runs_cli.format_number(value) == text


def test_the_store_of_eval_and_publish_comes_from_their_path_overrides(tmp_path, monkeypatch):
    from sweeplab.tracking.layout import runs_dir_from_overrides

    monkeypatch.delenv("SWEEPLAB_RUNS_DIR", raising=False)
    monkeypatch.delenv("SWEEPLAB_HOME", raising=False)
    assert runs_dir_from_overrides([f"paths.root_dir={tmp_path}"]) == tmp_path / "runs"
    assert runs_dir_from_overrides(["eval.plots=false", f"paths.runs_dir={tmp_path}/s"]) == (
        tmp_path / "s"
    )
    last_wins = [f"paths.runs_dir={tmp_path}/s", f"paths.root_dir={tmp_path}/r"]
    assert runs_dir_from_overrides(last_wins) == tmp_path / "r" / "runs"
    monkeypatch.setenv("SWEEPLAB_RUNS_DIR", str(tmp_path / "env"))
    assert runs_dir_from_overrides(["eval.plots=false"]) == tmp_path / "env"
