"""``sweeplab runs --group-by``: mean ± std over seeds, checked against hand-computed values."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from sweeplab.tracking import runs_cli
from sweeplab.tracking.record import new_record, write_record

# (augment, seed, extra overrides, status, metrics); ECE is missing for one run.
RUNS = [
    ("none", 0, [], "complete", {"test/cls/acc": 0.90, "test/cal/ece": 0.05}),
    ("none", 1, [], "complete", {"test/cls/acc": 0.92, "test/cal/ece": 0.03}),
    ("none", 2, [], "complete", {"test/cls/acc": 0.97}),
    ("none", 3, [], "failed", {}),
    ("mixup", 0, [], "complete", {"test/cls/acc": 0.94, "test/cal/ece": 0.02}),
    ("mixup", 1, [], "complete", {"test/cls/acc": 0.96, "test/cal/ece": 0.04}),
    ("cutmix", 0, [], "complete", {"test/cls/acc": 0.91, "test/cal/ece": 0.06}),
]


def _write_store(root: Path, runs) -> Path:
    for day, (augment, seed, extra, status, metrics) in enumerate(runs):
        run_id = f"{augment}{seed}{day}"
        overrides = [f"augment={augment}", f"seed={seed}", "paths.root_dir=/tmp/x", *extra]
        config = {"seed": seed, "augment": {"name": augment}, "backbone": {"name": "small_cnn"}}
        record = new_record(run_id, "digits_small_cnn", config, overrides, {})
        record.update(
            status=status,
            created=f"2024-01-{day + 1:02d}T12:00:00+00:00",
            metrics=metrics,
            choices={"augment": augment, "logger": "csv"},
        )
        write_record(root / "digits_small_cnn" / run_id, record)
    return root


def _grouped(capsys, store: Path, *args: str) -> tuple[int, str, str]:
    code = runs_cli.main(["--runs-dir", str(store), "--group-by", "augment", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_group_by_averages_each_groups_seeds(tmp_path, capsys) -> None:
    store = _write_store(tmp_path / "runs", RUNS)
    code, out, _ = _grouped(capsys, store)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["augment", "n", "seeds", "test/cls/acc", "test/cal/ece"]
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    # none: acc 0.90, 0.92, 0.97 → mean 0.93, std sqrt((0.03² + 0.01² + 0.04²) / 2) = 0.03606;
    # ECE 0.05, 0.03 (seed 2 has none) → 0.04 ± 0.01414 over n = 2; the failed seed 3 is left out.
    assert rows["none"].split() == [
        "none", "3", "0,1,2", "0.9300", "±", "0.0361", "0.0400", "±", "0.0141", "(n=2)",
    ]  # fmt: skip
    # mixup: 0.94, 0.96 → 0.95 ± 0.01414; ECE 0.02, 0.04 → 0.03 ± 0.01414.
    assert rows["mixup"].split() == [
        "mixup", "2", "0,1", "0.9500", "±", "0.0141", "0.0300", "±", "0.0141",
    ]  # fmt: skip
    assert rows["cutmix"].split() == ["cutmix", "1", "0", "0.9100", "0.0600"]  # one run: no std
    assert [line.split()[0] for line in lines[2:5]] == ["none", "mixup", "cutmix"]
    assert "pooled over" not in out  # paths.root_dir and logger change no result
    assert lines[-1].startswith("3 groups of 6 complete runs (1 listed run not complete")


def test_group_by_names_the_settings_it_pools_over(tmp_path, capsys) -> None:
    store = _write_store(tmp_path / "runs", [*RUNS, ("mixup", 2, ["backbone=mlp"], "complete", {})])
    _, out, _ = _grouped(capsys, store)
    header = out.splitlines()[0]
    assert header.split()[-2:] == ["pooled", "over"]
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert rows["mixup"].rstrip().endswith("backbone") and "(n=2)" in rows["mixup"]
    assert not rows["none"].rstrip().endswith("backbone")
    assert "pooled over: settings other than the seed" in out


def test_group_by_in_csv_and_json_carries_the_numbers(tmp_path, capsys) -> None:
    store = _write_store(tmp_path / "runs", RUNS)
    _, out, err = _grouped(capsys, store, "--format", "json")
    groups = {row["group"]["augment"]: row for row in json.loads(out)}
    assert groups["none"]["n"] == 3 and groups["none"]["seeds"] == ["0", "1", "2"]
    acc = groups["none"]["metrics"]["test/cls/acc"]
    assert acc["mean"] == pytest.approx(0.93) and acc["std"] == pytest.approx(0.0013**0.5)
    assert groups["cutmix"]["metrics"]["test/cls/acc"]["std"] is None
    assert "3 groups" in err
    _, out, _ = _grouped(capsys, store, "--format", "csv", "seed=0,1")
    rows = {row["augment"]: row for row in csv.DictReader(io.StringIO(out))}
    assert float(rows["none"]["test/cls/acc:mean"]) == pytest.approx(0.91)
    assert rows["none"]["test/cls/acc:n"] == "2" and rows["cutmix"]["test/cls/acc:std"] == ""


def test_the_default_columns_are_accuracy_ece_and_near_far_auroc(tmp_path, capsys) -> None:
    metrics = {
        "test/cls/acc": 0.9,
        "test/cls/nll": 0.3,
        "test/cal/ece": 0.05,
        "ood/near/energy/auroc": 0.7,
        "ood/far/energy/auroc": 0.95,
    }
    store = _write_store(tmp_path / "runs", [("none", 0, [], "complete", metrics)])
    assert runs_cli.main(["--runs-dir", str(store)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[4:8] == [
        "test/cls/acc", "test/cal/ece", "ood/near/energy/auroc", "ood/far/energy/auroc",
    ]  # fmt: skip
