"""The dashboard starts without torch or Lightning.

It must open on a machine that only holds copied runs, and importing torch
would add seconds to every start. Each check runs in a fresh interpreter, so
nothing this test session imported earlier can hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeplab.tracking import csv_logger, metrics_csv
from sweeplab.tracking.record import new_record, write_record

HEAVY = ("torch", "pytorch_lightning", "lightning")
RUN_ID = "abc123def456"
CURVES = "epoch,step,train/cls/loss,val/cls/acc\n0,10,1.0,0.5\n1,20,0.5,0.7\n"

LAUNCHER = """
import json, os, sys
def execv(path, argv):  # stop where the launcher would become Streamlit
    print(json.dumps({"heavy": [m for m in HEAVY if m in sys.modules], "argv": argv}))
    sys.exit(0)
os.execv = execv
from sweeplab.cli import main
main(["dashboard", "--runs-dir", STORE, "--port", "0"])
"""

APP = """
import json, sys
from pathlib import Path
from sweeplab.dashboard import tables
from sweeplab.dashboard.index import StoreIndex
entries = StoreIndex(STORE).refresh()
curves = tables.learning_curves(entries[0].path)
data_layer = [m for m in HEAVY if m in sys.modules]

from streamlit.testing.v1 import AppTest
import sweeplab.dashboard
sys.argv = ["app.py", "--runs-dir", STORE]
at = AppTest.from_file(str(Path(sweeplab.dashboard.__file__).with_name("app.py")))
at.session_state["page"] = "Run"
at.session_state["run"] = RUN
at.run(timeout=120)
print(json.dumps({
    "data_layer": data_layer,
    "heavy": [m for m in HEAVY if m in sys.modules],
    "runs": [e.run_id for e in entries],
    "epochs": [int(e) for e in curves["epoch"]],
    "exceptions": [str(e.value) for e in at.exception],
    "curve_options": list(at.multiselect(key="run_curves").options),
}))
"""


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """One complete run with its learning curves."""
    run_dir = tmp_path / "runs" / "digits_small_cnn" / RUN_ID
    record = new_record(RUN_ID, "digits_small_cnn", {"seed": 0}, ["seed=0"], {})
    record.update(status="complete", metrics={"test/cls/acc": 0.9})
    write_record(run_dir, record)
    (run_dir / metrics_csv.METRICS_FILE).write_text(CURVES)
    return tmp_path / "runs"


def _fresh(script: str, store: Path) -> dict:
    """Run ``script`` in a new interpreter and return the JSON it prints last."""
    prelude = f"HEAVY = {HEAVY!r}\nSTORE = {str(store)!r}\nRUN = {RUN_ID!r}\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=store.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_dashboard_command_starts_without_torch(store):
    report = _fresh(LAUNCHER, store)
    assert report["heavy"] == []
    assert report["argv"][1:4] == ["-m", "streamlit", "run"]
    assert report["argv"][report["argv"].index("--runs-dir") + 1] == str(store.resolve())


def test_the_app_indexes_and_reads_curves_without_torch(store):
    report = _fresh(APP, store)
    assert report["runs"] == [RUN_ID] and report["epochs"] == [0, 1]
    assert report["data_layer"] == []
    assert report["exceptions"] == []
    assert report["curve_options"] == ["train/cls/loss", "val/cls/acc"]  # metrics.csv was read
    assert report["heavy"] == []


def test_one_reader_of_metrics_csv(store):
    assert csv_logger.read_metrics_csv is metrics_csv.read_metrics_csv
    path = store / "digits_small_cnn" / RUN_ID / metrics_csv.METRICS_FILE
    assert metrics_csv.read_metrics_csv(path) == [
        {"epoch": 0, "step": 10, "train/cls/loss": 1.0, "val/cls/acc": 0.5},
        {"epoch": 1, "step": 20, "train/cls/loss": 0.5, "val/cls/acc": 0.7},
    ]
