"""The dashboard in a real headless browser: Streamlit served on 127.0.0.1, driven by Playwright.

Streamlit renders in the browser after the first load, so each check waits for
the element it asserts on. Screenshots of every page land in the test's tmp
directory, and also in $SWEEPLAB_SCREENSHOTS when it is set, for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sweeplab.dashboard.launch import streamlit_command
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import new_record, now_iso, write_record

from .conftest import FAST, compose_config, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENS = os.environ.get("SWEEPLAB_SCREENSHOTS")
TIMEOUT_MS = 30_000
# Streamlit scrolls inside its own container: a tall window shows a whole page at once.
TALL = {"width": 1400, "height": 3400}

pytestmark = pytest.mark.slow
# The real run of the fixture store is seed 0 of this table's only cell; seed 1 is missing.
TABLE_SPEC = """\
title: Fixture table
seeds: [0, 1]
base: [trainer.max_epochs=2, data.val_fraction=0.2]
format: {percent: true, decimals: 2}
rows:
  - {label: small CNN, overrides: [backbone=small_cnn]}
columns:
  - {label: accuracy, metric: test/cls/acc}
references:
  - {row: small CNN, column: accuracy, value: 12.5, source: a made-up paper, tolerance: 0.5}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on {url}")


# A real two-by-two sweep; its last job is the run the Run page is checked on.
SWEEP = ["regime.optimizer.lr=0.05,0.3", "augment=none,mixup"]
LAST_JOB = ["regime.optimizer.lr=0.3", "augment=mixup"]


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real 2 × 2 sweep of short runs (``sweeplab train -m``), a copy of its last run posing
    as that run's seed=1 twin, a running run, a corrupt record."""
    root = tmp_path_factory.mktemp("store")
    overrides = [*FAST, "eval.shift.severities=[1]"]
    command = ["train", "-m", *SWEEP, *overrides, f"paths.root_dir={root}"]
    result = run_cli(command, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = compose_config([f"paths.root_dir={root}", *overrides, *LAST_JOB])
    run_dir = root / "runs" / str(cfg.name) / compute_run_id(cfg)
    assert json.loads((run_dir / "record.json").read_text())["status"] == "complete"
    twin = run_dir.with_name("5eed00000001")
    shutil.copytree(run_dir, twin, ignore=shutil.ignore_patterns("checkpoints", "eval_cache"))
    record = json.loads((twin / "record.json").read_text())
    record.update(run_id=twin.name, overrides=[*overrides, *LAST_JOB, "seed=1"], created=now_iso())
    record["config"]["seed"] = 1
    record["metrics"] = {k: v * 0.95 for k, v in record["metrics"].items()}
    write_record(twin, record)
    # A twin that trained and calibrated a little worse, so the overlays show two curves.
    curves = (twin / "metrics.csv").read_text().splitlines()
    header = curves[0].split(",")
    acc = header.index("val/cls/acc")
    rows = [line.split(",") for line in curves[1:]]
    for row in rows:
        row[acc] = str(float(row[acc]) * 0.9) if row[acc] else ""
    (twin / "metrics.csv").write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    bins_path = twin / "plots" / "reliability_test.json"
    bins = json.loads(bins_path.read_text())
    for variant in bins.values():
        variant["accuracy"] = [None if a is None else a * 0.85 for a in variant["accuracy"]]
    bins_path.write_text(json.dumps(bins))
    running = root / "runs" / "digits_mlp" / "feedbeef0001"
    running.mkdir(parents=True)
    write_record(running, new_record("feedbeef0001", "digits_mlp", {"seed": 3}, ["seed=3"], {}))
    broken = root / "runs" / "digits_mlp" / "0badc0ffee00"
    broken.mkdir(parents=True)
    (broken / "record.json").write_text('{"status": "complete", "trunc')
    experiments = root / "experiments"
    experiments.mkdir()
    (experiments / "fixture_table.yaml").write_text(TABLE_SPEC)
    return root / "runs", run_dir.name


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dashboard(browser, fixture_store):
    runs_dir, _ = fixture_store
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        streamlit_command(runs_dir, "127.0.0.1", port, runs_dir.parent / "experiments"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if SCREENS:
        Path(SCREENS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENS) / path.name)


MAIN = "section.main, [data-testid='stMain']"


def _main_text(page, *expected: str) -> str:
    """The page's main text once it shows every ``expected`` string (Streamlit renders in
    pieces: reading at once may miss what comes later), or as it is after the timeout,
    for the test's assertion to report."""
    if expected:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(
                "([sel, needles]) => { const m = document.querySelector(sel);"
                " return m && needles.every(n => m.innerText.includes(n)); }",
                arg=[MAIN, list(expected)],
                timeout=TIMEOUT_MS,
            )
    return page.inner_text(MAIN)


def test_runs_page_lists_every_run(dashboard, fixture_store, browser, tmp_path):
    _, run_id = fixture_store
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(dashboard, timeout=TIMEOUT_MS)
    page.wait_for_selector("text=7 of 7 runs", timeout=TIMEOUT_MS)
    page.wait_for_selector("[data-testid='stDataFrame']", timeout=TIMEOUT_MS)
    text = _main_text(page, "1 running", "5 complete", "1 unreadable")
    assert "1 running" in text and "5 complete" in text and "1 unreadable" in text
    page.get_by_text("1 unreadable run(s)").click()
    page.wait_for_selector("text=not readable as JSON", timeout=TIMEOUT_MS)
    # The grid draws on a canvas; its accessible copy of the cells carries the run ids.
    grid = page.locator("[data-testid='stDataFrame']")
    page.wait_for_function(
        "id => document.querySelector(\"[data-testid='stDataFrame']\").innerText.includes(id)"
        " || document.querySelector(\"[data-testid='stDataFrame'] table\")?.textContent.includes(id)",
        arg=run_id,
        timeout=TIMEOUT_MS,
    )
    assert grid.count() == 1
    _screenshot(page, tmp_path, "runs")
    # Two rows picked (their checkboxes, in the grid's first column) open their config diff.
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
    page.get_by_role("button", name="Open run").wait_for(timeout=TIMEOUT_MS)
    page.mouse.click(box["x"] + 16, box["y"] + 70 + 17)
    diff = page.get_by_role("button", name="Diff")
    diff.wait_for(timeout=TIMEOUT_MS)
    diff.click()
    page.wait_for_selector("h2:has-text('Config diff')", timeout=TIMEOUT_MS)
    assert "can change results" in _main_text(page, "can change results")
    page.close()


def test_run_page_shows_curves_reliability_and_pictures(
    dashboard, fixture_store, browser, tmp_path
):
    _, run_id = fixture_store
    page = browser.new_page(viewport=TALL)
    page.goto(f"{dashboard}/?page=Run&run={run_id}", timeout=TIMEOUT_MS)
    page.wait_for_selector("h3:has-text('Learning curves')", timeout=TIMEOUT_MS)
    charts = page.locator("[data-testid='stVegaLiteChart']")
    page.wait_for_function(
        "document.querySelectorAll(\"[data-testid='stVegaLiteChart'] canvas, "
        "[data-testid='stVegaLiteChart'] svg\").length >= 2",
        timeout=TIMEOUT_MS,
    )
    assert charts.count() >= 2  # learning curves and the reliability diagram
    page.wait_for_selector("img[src*='media']", timeout=TIMEOUT_MS)
    captions = _main_text(page, "reliability_test", "mixed_samples", "status complete")
    assert "reliability_test" in captions and "mixed_samples" in captions
    assert "status complete" in captions
    page.wait_for_function(
        "Array.from(document.images).filter(i => i.src.includes('media'))"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=TIMEOUT_MS,
    )
    _screenshot(page, tmp_path, "run")
    page.close()


def test_compare_page_overlays_runs(dashboard, fixture_store, browser, tmp_path):
    _, run_id = fixture_store
    page = browser.new_page(viewport=TALL)
    page.goto(f"{dashboard}/?page=Compare", timeout=TIMEOUT_MS)
    page.wait_for_selector("h3:has-text('Reliability')", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "document.querySelectorAll(\"[data-testid='stVegaLiteChart'] canvas, "
        "[data-testid='stVegaLiteChart'] svg\").length >= 3",
        timeout=TIMEOUT_MS,
    )
    text = _main_text(page, run_id, "5eed00000001")
    assert run_id in text and "5eed00000001" in text  # both complete runs are picked
    page.wait_for_function(
        "document.querySelectorAll(\"[data-testid='stDataFrame'] canvas\").length >= 1",
        timeout=TIMEOUT_MS,
    )
    _screenshot(page, tmp_path, "compare")
    page.close()


CHARTS_DRAWN = (
    "n => document.querySelectorAll(\"[data-testid='stVegaLiteChart'] canvas, "
    "[data-testid='stVegaLiteChart'] svg\").length >= n"
)


def _grid_text(page, *expected: str) -> None:
    """Wait until the (canvas-drawn) grid's accessible copy holds every ``expected`` string."""
    page.wait_for_function(
        "needles => { const g = document.querySelector(\"[data-testid='stDataFrame']\");"
        " const t = g && (g.innerText + (g.querySelector('table')?.textContent || ''));"
        " return t && needles.every(n => t.includes(n)); }",
        arg=list(expected),
        timeout=TIMEOUT_MS,
    )


def test_sweeps_page_draws_the_sweep_as_parallel_coordinates(
    dashboard, fixture_store, browser, tmp_path
):
    _, run_id = fixture_store
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"{dashboard}/?page=Sweeps", timeout=TIMEOUT_MS)
    page.wait_for_selector("h3:has-text('Parallel coordinates')", timeout=TIMEOUT_MS)
    page.wait_for_function(CHARTS_DRAWN, arg=1, timeout=TIMEOUT_MS)
    text = _main_text(page, "4 runs; axes", "colour: test/cls/acc")
    assert "4 runs; axes" in text and "(1 run" not in text
    # the axes are the two swept keys and the metric; the grid lists the sweep's runs
    _grid_text(page, run_id, "augment", "regime.optimizer.lr")
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    assert chart.bounding_box()["height"] > 300
    _screenshot(page, tmp_path, "sweeps")
    page.close()


def test_diff_page_shows_the_keys_two_runs_differ_in(dashboard, fixture_store, browser, tmp_path):
    _, run_id = fixture_store
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{dashboard}/?page=Diff&a={run_id}&b=5eed00000001", timeout=TIMEOUT_MS)
    page.wait_for_selector("h2:has-text('Config diff')", timeout=TIMEOUT_MS)
    text = _main_text(page, "1 key differs; 1 of them can change results")
    assert "1 key differs; 1 of them can change results" in text
    _grid_text(page, "seed", f"A: {run_id}", "B: 5eed00000001")
    _screenshot(page, tmp_path, "diff")
    page.close()


def test_occupied_port_is_reported(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sweeplab",
                "dashboard",
                "--runs-dir",
                str(tmp_path),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr


# --------------------------------------------------------------------------- headless app runs
# Streamlit's AppTest runs the script without a browser: the pages' logic on bad input.


def _app(runs_dir: Path, monkeypatch: pytest.MonkeyPatch, **state):
    from streamlit.testing.v1 import AppTest

    from sweeplab.dashboard import app

    monkeypatch.setenv("SWEEPLAB_RUNS_DIR", str(runs_dir))
    monkeypatch.setattr(sys, "argv", ["app.py"])
    at = AppTest.from_file(app.__file__, default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    from .test_dashboard_data import make_run

    runs = tmp_path / "runs"
    for i, (mixer, seed) in enumerate([("none", 0), ("none", 1), ("mixup", 0), ("mixup", 1)]):
        make_run(
            runs, f"r{i}", [f"augment={mixer}", f"seed={seed}"], {"test/cls/acc": 0.9 + i / 100}
        )
    (runs / "digits_small_cnn" / "bad").mkdir()
    (runs / "digits_small_cnn" / "bad" / "record.json").write_text("[]")
    return runs


def test_app_on_an_empty_store_says_how_to_start(tmp_path, monkeypatch):
    at = _app(tmp_path / "runs", monkeypatch)
    assert "sweeplab train" in at.info[0].value


def test_app_filters_and_reports_a_bad_filter(small_store, monkeypatch):
    at = _app(small_store, monkeypatch)
    at.text_input(key="filters").input("augment=mixup").run()
    assert any("2 of 5 runs" in c.value for c in at.caption)
    at.text_input(key="filters").input("augment").run()
    assert "key=value" in at.error[0].value


def test_app_shows_an_unreadable_run_with_its_reason(small_store, monkeypatch):
    at = _app(small_store, monkeypatch, page="Run", run="bad")
    assert "expected a JSON object" in at.error[0].value


def test_app_compares_recipes_averaged_over_seeds(small_store, monkeypatch):
    at = _app(small_store, monkeypatch, page="Compare", compare_mode="recipe (average over seeds)")
    assert any("augment=none: 2 run(s)" in c.value for c in at.caption)
    summary = at.dataframe[-1].value.set_index("group")
    assert summary.loc["augment=mixup", "test/cls/acc mean"] == pytest.approx(0.925)


def test_app_shows_an_ensembles_members_and_opens_its_sources(small_store, monkeypatch):
    from .test_dashboard_data import make_ensemble_run

    make_ensemble_run(small_store, "ens9", ["r0", "r1", "gone0000"])
    at = _app(small_store, monkeypatch, page="Run", run="ens9")
    assert {"Members vs ensemble", "Made from"} <= {h.value for h in at.subheader}
    buttons = {b.label: b for b in at.button}
    assert buttons["gone0000"].disabled and not buttons["r1"].disabled
    buttons["r1"].click().run()
    assert at.session_state["run"] == "r1" and not at.exception
    assert "Members vs ensemble" not in {h.value for h in at.subheader}


def test_tables_page_renders_a_spec_from_the_store(dashboard, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(f"{dashboard}/?page=Tables", timeout=TIMEOUT_MS)
    page.wait_for_selector("h3:has-text('Fixture table')", timeout=TIMEOUT_MS)
    text = _main_text(page, "small CNN", "n=1, 1 missing", "12.50", "a made-up paper")
    assert "small CNN" in text and "n=1, 1 missing" in text
    assert "12.50" in text and "a made-up paper" in text
    _screenshot(page, tmp_path, "tables")
    page.close()
