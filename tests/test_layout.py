"""One rule locates the run store: every command and the train config find the same directory.

Three stores sit where the rule may look ($SWEEPLAB_RUNS_DIR, $SWEEPLAB_HOME/runs,
./runs), each holding one run named after its place; for every combination of the
two variables, each command must read the store the rule names, and the composed
train config must write to it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from sweeplab.dashboard import launch
from sweeplab.tables.cells import default_runs_dir
from sweeplab.tables.spec import load_spec
from sweeplab.tracking import layout, runs_cli
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import new_record, write_record
from sweeplab.tracking.sync import main as sync_main
from tests.conftest import compose_config

PLACES = ("env", "home", "cwd")
# (SWEEPLAB_RUNS_DIR set, SWEEPLAB_HOME set) -> the store the rule picks.
CASES = {
    "neither": (False, False, "cwd"),
    "home": (False, True, "home"),
    "runs_dir": (True, False, "env"),
    "both": (True, True, "env"),
}
SPEC = """\
title: Layout
seeds: [0]
base: [trainer.max_epochs=1]
rows:
  - {label: cnn, overrides: [backbone=small_cnn]}
columns:
  - {label: acc, metric: test/cls/acc}
"""


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The three candidate stores, each with one run (and an offline W&B run), cwd inside one."""
    stores = {
        "env": tmp_path / "env_store",
        "home": tmp_path / "home" / "runs",
        "cwd": tmp_path / "cwd" / "runs",
    }
    for place, store in stores.items():
        run_dir = store / "digits_small_cnn" / f"run-{place}"
        write_record(run_dir, new_record(f"run-{place}", "digits_small_cnn", {}, [], {}))
        (run_dir / "wandb" / f"offline-run-{place}").mkdir(parents=True)
    monkeypatch.chdir(stores["cwd"].parent)
    monkeypatch.delenv(layout.RUNS_DIR_ENV, raising=False)
    monkeypatch.delenv(layout.HOME_ENV, raising=False)
    return stores


def _set_env(monkeypatch: pytest.MonkeyPatch, stores: dict[str, Path], case: str) -> Path:
    runs_dir_set, home_set, place = CASES[case]
    if runs_dir_set:
        monkeypatch.setenv(layout.RUNS_DIR_ENV, str(stores["env"]))
    if home_set:
        monkeypatch.setenv(layout.HOME_ENV, str(stores["home"].parent))
    return stores[place].resolve()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("case", CASES)
def test_the_rule_picks_one_store(stores, monkeypatch, case):
    expected = _set_env(monkeypatch, stores, case)
    assert layout.runs_dir().resolve() == expected
    assert layout.runs_dir(stores["home"]).resolve() == stores["home"].resolve()  # explicit wins


@pytest.mark.parametrize("case", CASES)
def test_runs_command_and_train_config_agree(stores, monkeypatch, capsys, case):
    expected = _set_env(monkeypatch, stores, case)
    place = CASES[case][2]

    assert runs_cli.main(["--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(run["path"]).resolve().parent.parent for run in listed] == [expected]
    assert [run["run_id"] for run in listed] == [f"run-{place}"]

    cfg = compose_config(return_hydra_config=True)
    assert Path(str(cfg.paths.runs_dir)).resolve() == expected
    run_dir = Path(str(cfg.hydra.run.dir)).resolve()
    assert run_dir.parent.parent == expected  # training writes <store>/<name>/<run_id>


@pytest.mark.parametrize("case", CASES)
def test_sync_dashboard_and_table_agree(stores, monkeypatch, capsys, tmp_path, case):
    expected = _set_env(monkeypatch, stores, case)
    place = CASES[case][2]

    assert sync_main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    found = {p for p in PLACES if f"offline-run-{p}" in out}
    assert found == {place}

    commands = []

    def execv(path, argv):
        commands.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(launch.os, "execv", execv)
    with pytest.raises(SystemExit):
        launch.main(["--port", str(_free_port())])
    argv = commands[0]
    assert Path(argv[argv.index("--runs-dir") + 1]) == expected

    spec_path = tmp_path / "layout.yaml"
    spec_path.write_text(SPEC)
    assert default_runs_dir(load_spec(spec_path)).resolve() == expected


@pytest.mark.parametrize("case", CASES)
def test_dashboard_app_reads_the_same_store(stores, monkeypatch, case):
    import sys

    from streamlit.testing.v1 import AppTest

    from sweeplab.dashboard import app

    expected = _set_env(monkeypatch, stores, case)
    monkeypatch.setattr(sys, "argv", ["app.py"])
    at = AppTest.from_file(app.__file__, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"run store: `{expected}`" in at.sidebar.caption[0].value
    assert [row["run_id"] for _, row in at.dataframe[0].value.iterrows()] == [
        f"run-{CASES[case][2]}"
    ]


def test_a_spec_that_moves_the_store_moves_the_table(stores, monkeypatch, tmp_path):
    spec_path = tmp_path / "layout.yaml"
    spec_path.write_text(SPEC)
    moved = load_spec(spec_path).with_extra_overrides([f"paths.root_dir={tmp_path / 'moved'}"])
    assert default_runs_dir(moved) == tmp_path / "moved" / "runs"
    monkeypatch.setenv(layout.RUNS_DIR_ENV, str(stores["env"]))  # beats root_dir, as in train
    assert default_runs_dir(moved) == stores["env"]
    cfg = compose_config([f"paths.root_dir={tmp_path / 'moved'}"])
    assert Path(str(cfg.paths.runs_dir)) == stores["env"]
    explicit = moved.with_extra_overrides([f"paths.runs_dir={tmp_path / 'chosen'}"])
    assert default_runs_dir(explicit) == tmp_path / "chosen"


def test_where_the_store_is_does_not_change_the_run_id(stores, monkeypatch):
    ids = set()
    for case in CASES:
        with monkeypatch.context() as env:
            _set_env(env, stores, case)
            ids.add(compute_run_id(compose_config()))
    assert len(ids) == 1
