"""``sweeplab table``: dry runs, launching the missing runs, relaunching, formats, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from hydra_plugins.sweeplab_jobs_sweeper.jobs_sweeper import JOBS_FILE, read_jobs
from sweeplab.tables.cells import resolve
from sweeplab.tables.cli import main
from sweeplab.tables.spec import load_spec
from sweeplab.tracking.sweeps import read_outcomes
from tests.conftest import run_cli

TINY = """\
title: Tiny
base:
  - backbone=mlp
  - trainer.max_epochs=1
  - data.val_fraction=0.2
  - eval.shift.corruptions=[]
  - eval.ood.detectors=[msp]
  - eval.calibration.calibrators=[ts]
  - eval.plots=false
seeds: [0, 1]
rows:
  - {label: plain, overrides: [augment=none]}
columns:
  - {label: acc, metric: test/cls/acc, format: {percent: true, decimals: 1}}
"""

TWO_ROWS = TINY.replace(
    "  - {label: plain, overrides: [augment=none]}\n",
    "  - {label: plain, overrides: [augment=none]}\n  - {label: mixup, overrides: [augment=mixup]}\n",
) + (
    "  - {label: ECE, metric: test/cal/ece, format: {decimals: 3, lower_is_better: true}}\n"
    "references:\n  - {row: plain, column: acc, value: 90.0, source: Somebody 2020, tolerance: 1}\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _record(run_dir: Path, metrics: dict, status: str = "complete") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"schema": 1, "run_id": run_dir.name, "status": status, "metrics": metrics}
    (run_dir / "record.json").write_text(json.dumps(record))


@pytest.fixture
def two_rows(tmp_path: Path) -> tuple[Path, Path]:
    """A two-row spec and a store holding all of its runs but one (mixup, seed 1)."""
    spec = _write(tmp_path / "two.yaml", TWO_ROWS)
    runs = tmp_path / "runs"
    table = resolve(load_spec(spec), runs)
    values = {("plain", 0): (0.90, 0.05), ("plain", 1): (0.92, 0.07), ("mixup", 0): (0.93, 0.02)}
    for (row, seed), (acc, ece) in values.items():
        slot = table.cell(row, "acc").group.slots[seed]
        _record(slot.run_dir, {"test/cls/acc": acc, "test/cal/ece": ece})
    return spec, runs


def test_dry_run_lists_exactly_the_missing_runs(two_rows, capsys) -> None:
    spec, runs = two_rows
    table = resolve(load_spec(spec), runs)
    missing = table.cell("mixup", "acc").group.slots[1]
    assert main([str(spec), "--dry-run", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 missing run in one sweep:"
    assert out[1] == "  mixup × (all columns): augment=mixup"
    assert out[2] == f"    seed 1: {missing.run_dir} (missing)"
    assert out[3] == (
        "  $ sweeplab train -m hydra/sweeper=jobs hydra.sweeper.jobs_file=JOBS.yaml "
        "backbone=mlp trainer.max_epochs=1 data.val_fraction=0.2 "
        "'eval.shift.corruptions=[]' 'eval.ood.detectors=[msp]' "
        f"'eval.calibration.calibrators=[ts]' eval.plots=false paths.runs_dir={runs} "
        "'hydra.sweep.dir=${paths.runs_dir}/_sweeps/two_${now:%Y-%m-%d_%H-%M-%S}'"
    )
    assert out[4:] == ["  JOBS.yaml (one run each):", "    - [augment=mixup, seed=1]"]


def test_dry_run_with_launcher_and_failed_run(two_rows, capsys) -> None:
    spec, runs = two_rows
    table = resolve(load_spec(spec), runs)
    _record(table.cell("plain", "acc").group.slots[0].run_dir, {}, status="failed")
    assert main([str(spec), "--dry-run", "--runs-dir", str(runs), "--launcher", "joblib"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 missing runs in one sweep:")
    assert "(failed)" in out and out.count("hydra/launcher=joblib") == 1
    assert out.endswith("    - [augment=none, seed=0]\n    - [augment=mixup, seed=1]\n")


def test_formats_and_comparison(two_rows, capsys) -> None:
    spec, runs = two_rows
    assert main([str(spec), "--runs-dir", str(runs), "--compare", "mixup", "plain"]) == 0
    out = capsys.readouterr().out
    assert "91.0 ± 1.4 (n=2)" in out and "90.0" in out and "+1.0" in out
    assert "**93.0** (n=1, 1 missing)" in out
    assert "**0.020** (n=1, 1 missing)" in out  # lower ECE is better
    assert "paired difference mixup − plain over seeds" in out
    assert "  acc (higher is better): +3.0 (one pair: no interval), n=1" in out

    assert main([str(spec), "--runs-dir", str(runs), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["row"], r["column"], r["n"], r["missing"], r["best"]) for r in rows] == [
        ("plain", "acc", "2", "0", "0"),
        ("plain", "ECE", "2", "0", "0"),
        ("mixup", "acc", "1", "1", "1"),
        ("mixup", "ECE", "1", "1", "1"),
    ]
    assert main([str(spec), "--runs-dir", str(runs), "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert r"plain & $91.0 \pm 1.4$ & 90.0 & $+1.0$ & $0.060 \pm 0.014$ \\" in out


def test_overrides_on_top_of_the_spec_are_said_beside_its_title(two_rows, capsys) -> None:
    spec, runs = two_rows
    args = [str(spec), "--runs-dir", str(runs), "trainer.max_epochs=2", "paths.root_dir=/x"]
    assert main([*args, "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Tiny [overridden: trainer.max_epochs=2]\n")
    assert f"overridden: trainer.max_epochs=2 on top of {spec}; the title describes" in out
    assert main([*args, "--format", "latex"]) == 0
    assert capsys.readouterr().out.startswith("% Tiny [overridden: trainer.max_epochs=2]\n")
    assert main([str(spec), "--runs-dir", str(runs), "paths.root_dir=/x"]) == 0
    assert "overridden" not in capsys.readouterr().out  # where runs are stored changes no number


def test_bad_spec_exits_2_naming_the_line(tmp_path: Path, capsys) -> None:
    spec = _write(tmp_path / "bad.yaml", TINY.replace("augment=none", "augment=nonesuch"))
    assert main([str(spec), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"error: {spec}:12: override 'augment=nonesuch' does not compose" in err
    assert main([str(spec), "--compare", "a", "b"]) == 2
    assert "--compare: no row 'a'" in capsys.readouterr().err


def test_metric_absent_from_every_complete_run_exits_1(two_rows, capsys) -> None:
    spec, runs = two_rows
    text = spec.read_text().replace("test/cal/ece", "test/cal/ece_ms")
    spec = _write(spec, text)
    assert main([str(spec), "--runs-dir", str(runs)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:16: metric 'test/cal/ece_ms' (column 'ECE') is in none of the complete" in err


def _attempts(runs: Path) -> dict[str, int]:
    return {
        str(p.parent): json.loads(p.read_text())["attempts"] for p in runs.glob("*/*/record.json")
    }


# Two cells that set different keys, one seed each.
TWO_CELLS = TINY.replace("seeds: [0, 1]\n", "seeds: [0]\n").replace(
    "  - {label: plain, overrides: [augment=none]}\n",
    "  - {label: plain, overrides: [augment=none]}\n"
    "  - {label: fast, overrides: [regime.optimizer.lr=0.1]}\n",
)


@pytest.mark.slow
def test_one_launch_is_one_sweep_of_every_missing_cell_and_a_relaunch_runs_nothing(
    tmp_path: Path,
) -> None:
    spec = _write(tmp_path / "tiny.yaml", TWO_CELLS)
    args = ["table", str(spec), "--launch", "--launcher", "joblib", f"paths.root_dir={tmp_path}"]
    first = run_cli(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 missing runs in one sweep" in first.stderr
    launches = [line for line in first.stderr.splitlines() if line.startswith("launching sw")]
    assert len(launches) == 1 and "hydra/sweeper=jobs" in launches[0]
    assert "ConfigStore schema" not in first.stderr  # once per joblib worker, before
    assert first.stdout.count("(n=1)") == 2 and "missing" not in first.stdout
    assert "overridden" not in first.stdout  # paths.root_dir changes no number
    runs = tmp_path / "runs"
    (sweep,) = (runs / "_sweeps").iterdir()
    assert sweep.name.startswith("tiny_")
    outcomes = read_outcomes(sweep)
    assert sorted(o["status"] for o in outcomes) == ["complete", "complete"]
    assert len(read_jobs(sweep / JOBS_FILE)) == 2
    attempts = _attempts(runs)
    assert len(attempts) == 2 and set(attempts.values()) == {1}
    run_dirs = sorted(p for p in runs.glob("*/*") if not p.parent.name.startswith("_"))

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == first.stdout
    assert "launching" not in again.stderr
    assert _attempts(runs) == attempts
    assert list((runs / "_sweeps").iterdir()) == [sweep]
    assert sorted(p for p in runs.glob("*/*") if not p.parent.name.startswith("_")) == run_dirs


ENSEMBLE_OF_RUNS = TINY.replace(
    "seeds: [0, 1]\n",
    "seeds: [0, 1]\nrequires:\n  - {label: members, overrides: [regime=erm], seeds: [0, 1, 2, 3]}\n",
).replace(
    "  - {label: plain, overrides: [augment=none]}\n",
    "  - {label: single, overrides: [regime=erm]}\n"
    "  - label: ensemble of 2 runs\n"
    "    overrides:\n"
    "      - regime=ensemble_from_runs\n"
    "      - 'regime.runs=\"name=digits_mlp regime=erm seed=${seed_block:2,${seed}}\"'\n",
)


def test_cells_made_from_required_runs_wait_for_them(tmp_path: Path, capsys) -> None:
    spec = _write(tmp_path / "ensembles.yaml", ENSEMBLE_OF_RUNS)
    runs = tmp_path / "runs"
    assert main([str(spec), "--dry-run", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:2] == [
        "4 missing runs in one sweep, 2 more once their source runs exist (a second sweep):",
        "  requires: members: regime=erm",
    ]
    assert not any(line.startswith("  single × acc") for line in lines)  # members 0 and 1
    assert lines[6].startswith("  ensemble of 2 runs × acc: regime=ensemble_from_runs")
    assert out.count("waiting for its source runs (launched first)") == 2
    jobs = [line.strip() for line in lines[lines.index("  JOBS.yaml (one run each):") + 1 :]]
    assert jobs == [f"- [regime=erm, seed={seed}]" for seed in range(4)]
    table = resolve(load_spec(spec), runs)
    for slot in table.required[0].slots:  # the members finish
        record = {
            "schema": 1,
            "run_id": slot.run_id,
            "name": "digits_mlp",
            "status": "complete",
            "config": {"seed": slot.seed},
            "choices": {"regime": "erm"},
            "overrides": ["backbone=mlp", "regime=erm", f"seed={slot.seed}"],
            "metrics": {"test/cls/acc": 0.5},
        }
        slot.run_dir.mkdir(parents=True)
        (slot.run_dir / "record.json").write_text(json.dumps(record))
    members = {slot.seed: slot.run_id for slot in table.required[0].slots}
    table = resolve(load_spec(spec), runs)
    ensembles = table.cell("ensemble of 2 runs", "acc").group.slots
    assert [slot.status for slot in ensembles] == ["missing", "missing"]
    assert len({slot.run_id for slot in ensembles}) == 2
    single = table.cell("single", "acc").group.slots
    assert [slot.run_id for slot in single] == [members[0], members[1]]  # the same runs
    assert [s.status for s in single] == ["complete", "complete"]


CHAIN = TINY.replace(
    "seeds: [0, 1]\n",
    "seeds: [0, 1]\nrequires:\n"
    "  - {label: base, overrides: [backbone.name=mlp_base], seeds: [0]}\n"
    "  - label: fine-tunes\n"
    "    overrides: [backbone.name=mlp_tune, 'init_from=\"name=digits_mlp_base\"']\n"
    "    seeds: [0, 1]\n",
).replace(
    "  - {label: plain, overrides: [augment=none]}\n",
    "  - label: soup\n    overrides: [regime=merge, 'regime.runs=\"name=digits_mlp_tune\"']\n",
)


def test_launch_sweeps_once_per_level_of_a_chain_of_runs(tmp_path: Path, monkeypatch, capsys):
    """base → fine-tunes (init_from the base) → a merge of the fine-tunes: three levels,
    each run's id known only once its sources exist, all trained by one --launch."""
    import sweeplab.tables.cli as table_cli

    sweeps: list[list[str]] = []

    def fake_launch(plan):  # each job "trains" by writing a complete record
        sweeps.append(
            [slot.run_dir.parent.name for launch in plan.launches for slot in launch.slots]
        )
        for launch in plan.launches:
            regime = "merge" if "regime=merge" in launch.overrides else "erm"
            for slot in launch.slots:
                slot.run_dir.mkdir(parents=True)
                record = {
                    "schema": 1,
                    "run_id": slot.run_id,
                    "name": slot.run_dir.parent.name,
                    "status": "complete",
                    "config": {"seed": slot.seed},
                    "choices": {"regime": regime},
                    "overrides": [*launch.overrides, f"seed={slot.seed}"],
                    "metrics": {"test/cls/acc": 0.5},
                }
                (slot.run_dir / "record.json").write_text(json.dumps(record))
        return []

    monkeypatch.setattr(table_cli, "_launch", fake_launch)
    spec = _write(tmp_path / "chain.yaml", CHAIN)
    assert main([str(spec), "--launch", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert sweeps == [
        ["digits_mlp_base"],
        ["digits_mlp_tune", "digits_mlp_tune"],
        ["digits_mlp", "digits_mlp"],
    ]
    out = capsys.readouterr().out
    assert "50.0" in out and "n=2" in out
