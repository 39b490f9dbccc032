"""Runs of the debug presets stay out of the results: listings, selectors and tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeplab.api import load_runs
from sweeplab.tables.cells import resolve
from sweeplab.tables.spec import parse_spec
from sweeplab.tracking import runs_cli
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.runs import RunError, select_runs
from sweeplab.tracking.store import scan_store
from tests.conftest import compose_config, run_in_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One real run of debug=fdr and a hand-written complete run beside it."""
    root = tmp_path_factory.mktemp("store")
    outcome = run_in_store(root, ["backbone=mlp", "debug=fdr"])
    assert outcome.status == "complete", outcome.error
    real = root / "runs" / "digits_mlp" / "aaaaaaaaaaaa"
    real.mkdir(parents=True)
    record = {
        "schema": 1,
        "run_id": real.name,
        "name": "digits_mlp",
        "status": "complete",
        "config": {"seed": 0, "backbone": {"name": "mlp"}},
        "overrides": ["backbone=mlp"],
        "metrics": {"test/cls/acc": 0.9},
    }
    (real / "record.json").write_text(json.dumps(record))
    return root / "runs"


def test_a_debug_run_skips_the_heavy_evaluation_and_the_loggers(store) -> None:
    (debug,) = [e for e in scan_store(store, include_debug=True) if e.debug_run]
    assert debug.status == "complete" and "test/cls/acc" in debug.metrics
    assert not [key for key in debug.metrics if key.startswith(("ood/", "shift/"))]
    assert list(debug.config["logger"]) == ["csv"]
    assert not list((debug.path).glob("wandb*")) and not (debug.path / "tensorboard").exists()


def test_a_debug_run_is_listed_only_when_asked(store, capsys) -> None:
    assert [e.run_id for e in scan_store(store)] == ["aaaaaaaaaaaa"]
    assert len(scan_store(store, include_debug=True)) == 2

    assert runs_cli.main(["--runs-dir", str(store)]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[2:] if line.strip()][:1]
    assert rows == ["aaaaaaaaaaaa"]
    assert "1 debug run matches too, not listed (--include-debug lists them)." in out
    assert runs_cli.main(["--runs-dir", str(store), "trainer.fast_dev_run=true"]) == 0
    assert capsys.readouterr().out.strip() == (
        "1 debug run matches, not listed (--include-debug lists them)."
    )
    assert runs_cli.main(["--runs-dir", str(store), "--include-debug"]) == 0
    out = capsys.readouterr().out
    assert "debug run" in out and "not listed" not in out
    assert out.count("digits_mlp") == 2

    assert list(load_runs(store).run_id) == ["aaaaaaaaaaaa"]
    assert len(load_runs(store, include_debug=True)) == 2


def test_run_selectors_never_pick_a_debug_run(store) -> None:
    assert [run.run_id for run in select_runs("name=digits_mlp", store)] == ["aaaaaaaaaaaa"]
    with pytest.raises(RunError, match="no complete run matches"):
        select_runs("trainer.fast_dev_run=true", store)


def test_a_debug_run_never_takes_the_run_id_a_table_cell_reads(tmp_path) -> None:
    spec = parse_spec("rows: [augment=none]\nmetric: test/cls/acc\nbase: [backbone=mlp]\n")
    table = resolve(spec, tmp_path / "runs")
    (slot,) = table.cell("augment=none", "test/cls/acc").group.slots
    marked_only = compose_config(["backbone=mlp", "augment=none", "seed=0", "debug=default"])
    assert compute_run_id(marked_only) != slot.run_id
    assert slot.status == "missing"
