"""What a supernet run shows: its NAS files as the dashboard's frames (hand-written files),
and, for a real small supernet run with its search and ranking done, the Run page's NAS
view and the same pictures and nas/* metrics published to W&B."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from sweeplab.dashboard import nas_view

SEARCH = {
    "run": "super0000001",
    "method": "evolution",
    "samples": 8,
    "seed": 0,
    "bn_policy": "recalibrate",
    "split": "val",
    "budgets": [
        {
            "budget": "≤ 2 MFLOPs",
            "max_mflops": 2.0,
            "max_params": None,
            "best": {"arch": "b", "val_acc": 0.6, "flops": 1_500_000, "params": 900},
            "command": "sweeplab train backbone=subnet backbone.arch=b",
            "command_from_supernet": "sweeplab train backbone=subnet backbone.arch=b "
            "init_from=super0000001",
        },
        {
            "budget": "≤ 5 MFLOPs",
            "max_mflops": 5.0,
            "max_params": None,
            "best": {"arch": "d", "val_acc": 0.7, "flops": 4_000_000, "params": 3000},
            "command": "sweeplab train backbone=subnet backbone.arch=d",
            "command_from_supernet": "sweeplab train backbone=subnet backbone.arch=d "
            "init_from=super0000001",
        },
    ],
    "candidates": [
        {"arch": "d", "val_acc": 0.7, "flops": 4_000_000, "params": 3000},
        {"arch": "a", "val_acc": 0.5, "flops": 1_000_000, "params": 500},
        {"arch": "c", "val_acc": 0.55, "flops": 3_000_000, "params": 2000},
        {"arch": "b", "val_acc": 0.6, "flops": 1_500_000, "params": 900},
    ],
    "pareto": [
        {"arch": "a", "val_acc": 0.5, "flops": 1_000_000, "params": 500},
        {"arch": "b", "val_acc": 0.6, "flops": 1_500_000, "params": 900},
        {"arch": "d", "val_acc": 0.7, "flops": 4_000_000, "params": 3000},
    ],
}


def _report(tau: float) -> dict[str, float]:
    return {
        "kendall_tau": tau,
        "kendall_tau_low": tau - 0.3,
        "kendall_tau_high": min(tau + 0.3, 1.0),
        "sparse_kendall_tau": tau,
        "sparse_kendall_tau_low": tau - 0.3,
        "sparse_kendall_tau_high": min(tau + 0.3, 1.0),
        "spearman": tau,
        "spearman_low": tau - 0.2,
        "spearman_high": min(tau + 0.2, 1.0),
    }


RANKING = {
    "run": "super0000001",
    "k": 3,
    "seed": 0,
    "split": "val",
    "archs": ["a", "b", "c"],
    "standalone_runs": ["sa0000000001", "sb0000000002", "sc0000000003"],
    "standalone_val_acc": [0.8, 0.9, 0.85],
    # the proxies come first in the file; the view puts the supernet's scorers first
    "scores": {
        "synflow": [10.0, 30.0, 20.0],
        "supernet_batch": [0.3, 0.2, 0.25],
        "supernet_recalibrate": [0.5, 0.7, 0.6],
    },
    "report": {
        "synflow": _report(1.0),
        "supernet_batch": _report(-1.0),
        "supernet_recalibrate": _report(1.0),
    },
}


@pytest.fixture
def nas_run(tmp_path: Path) -> Path:
    (tmp_path / "nas").mkdir()
    (tmp_path / nas_view.SEARCH_FILE).write_text(json.dumps(SEARCH))
    (tmp_path / nas_view.RANKING_FILE).write_text(json.dumps(RANKING))
    return tmp_path


def test_search_file_as_candidates_front_and_best_per_budget(nas_run):
    search = nas_view.search_view(nas_run)
    assert list(search.candidates["arch"]) == ["a", "b", "c", "d"]  # by MFLOPs
    assert list(search.candidates["mflops"]) == [1.0, 1.5, 3.0, 4.0]
    assert list(search.candidates["on_front"]) == [True, True, False, True]
    assert list(search.front["arch"]) == ["a", "b", "d"]
    assert list(search.best["arch"]) == ["b", "d"]
    assert list(search.best["budget"]) == ["≤ 2 MFLOPs", "≤ 5 MFLOPs"]
    assert search.best.loc[1, "command"] == "sweeplab train backbone=subnet backbone.arch=d"
    assert search.best.loc[0, "mflops"] == 1.5 and search.best.loc[0, "params"] == 900
    assert (search.method, search.split, search.bn_policy) == ("evolution", "val", "recalibrate")


def test_ranking_file_as_scatter_and_tau_table(nas_run):
    ranking = nas_view.ranking_view(nas_run)
    assert list(ranking.taus["scorer"]) == ["supernet_recalibrate", "supernet_batch", "synflow"]
    batch = ranking.taus.set_index("scorer").loc["supernet_batch"]
    assert (batch["kendall_tau"], batch["kendall_tau_low"]) == (-1.0, -1.3)
    assert len(ranking.scatter) == 3 * 3 and ranking.k == 3
    recalibrated = ranking.scatter[ranking.scatter["scorer"] == "supernet_recalibrate"]
    assert list(recalibrated["score"]) == [0.5, 0.7, 0.6]
    assert list(recalibrated["standalone_val_acc"]) == [0.8, 0.9, 0.85]
    assert list(recalibrated["standalone_run"])[1] == "sb0000000002"


def test_missing_files_are_none_and_broken_ones_are_named(tmp_path, nas_run):
    assert nas_view.search_view(tmp_path / "elsewhere") is None
    assert nas_view.ranking_view(tmp_path / "elsewhere") is None
    (nas_run / nas_view.SEARCH_FILE).write_text('{"candidates": [{"arch": "a"}], "trunc')
    with pytest.raises(nas_view.NasFileError, match=r"nas/search\.json is not readable as JSON"):
        nas_view.search_view(nas_run)
    (nas_run / nas_view.SEARCH_FILE).write_text(json.dumps({"candidates": [{"arch": "a"}]}))
    with pytest.raises(nas_view.NasFileError, match="lacks 'val_acc'"):
        nas_view.search_view(nas_run)
    short = {**RANKING, "standalone_val_acc": [0.8, 0.9]}
    (nas_run / nas_view.RANKING_FILE).write_text(json.dumps(short))
    with pytest.raises(nas_view.NasFileError, match="3 archs but 2 standalone accuracies"):
        nas_view.ranking_view(nas_run)


def test_subnet_curves_keep_each_epochs_last_validation():
    curves = pd.DataFrame(
        {
            "epoch": [0, 0, 1, 1],
            "step": [5, 10, 15, 20],
            "train/cls/loss": [2.0, None, 1.0, None],
            "val/cls/acc": [None, 0.5, None, 0.7],
            "val/nas/smallest/acc": [None, 0.3, None, 0.4],
        }
    )
    long = nas_view.subnet_curves(curves)
    largest = long[long["subnet"] == "largest subnet"]
    assert list(largest["epoch"]) == [0, 1] and list(largest["acc"]) == [0.5, 0.7]
    smallest = long[long["subnet"] == "smallest subnet"]
    assert list(smallest["acc"]) == [0.3, 0.4]
    assert nas_view.subnet_curves(curves[["epoch", "train/cls/loss"]]).empty
    assert nas_view.is_supernet({"regime": {"name": "supernet"}})
    assert not nas_view.is_supernet({"regime": {"name": "erm"}}, {"regime": "erm"})


# --------------------------------------------------------------------------- a real supernet run
NAS_HEADERS = {
    "NAS: largest and smallest subnet",
    "NAS: Pareto front",
    "NAS: supernet vs standalone ranking",
}


@pytest.fixture(scope="module")
def searched_supernet(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """A tiny supernet run searched under one budget and ranked against K=3 standalone runs."""
    from sweeplab.models.search_space import encode
    from sweeplab.nas import cli as nas_cli
    from sweeplab.nas.supernet_run import SupernetRun
    from tests.conftest import run_in_store
    from tests.test_supernet import TINY

    store = tmp_path_factory.mktemp("nas_view")
    outcome = run_in_store(store, TINY)
    assert outcome.status == "complete", outcome.error
    run_dir = Path(outcome.run_dir)
    nas = SupernetRun.open(run_dir.name, store / "runs")
    budget = round(nas.costs()(nas.supernet.space.smallest()).mflops * 2, 3)
    where = [f"run={run_dir.name}", f"paths.root_dir={store}"]
    assert nas_cli.main(["search", *where, "--mflops", str(budget), "--samples", "8"]) == 0
    standalone = []
    for arch in nas_cli.sample_distinct(nas.supernet.space, 3, 0):
        trained = run_in_store(store, nas.subnet_overrides(encode(arch)))
        assert trained.status == "complete", trained.error
        standalone.append(Path(trained.run_dir))
    assert nas_cli.main(["rank", *where, "--k", "3"]) == 0
    return store / "runs", run_dir, standalone


def _chart_specs(at) -> list[str]:
    """The Vega-Lite spec of every chart on the page, as JSON text."""
    return [chart.proto.spec for chart in at.get("vega_lite_chart")]


def test_app_shows_the_nas_view_of_a_searched_and_ranked_supernet(
    searched_supernet, monkeypatch, tmp_path
):
    from tests.test_dashboard_browser import _app

    runs_dir, run_dir, standalone = searched_supernet
    search = json.loads((run_dir / nas_view.SEARCH_FILE).read_text())
    ranking = json.loads((run_dir / nas_view.RANKING_FILE).read_text())
    at = _app(runs_dir, monkeypatch, page="Run", run=run_dir.name)
    assert {h.value for h in at.subheader} >= NAS_HEADERS
    assert not at.error
    frames = [d.value for d in at.dataframe]
    best = next(f for f in frames if "command_from_supernet" in f)
    assert list(best["arch"]) == [b["best"]["arch"] for b in search["budgets"]]
    assert list(best["command"]) == [b["command"] for b in search["budgets"]]
    assert list(best["eval_command"]) == [
        f"sweeplab eval run={run_dir.name} subnet={b['best']['arch']} paths.root_dir={runs_dir.parent}"
        for b in search["budgets"]
    ]
    taus = next(f for f in frames if "kendall_tau_low" in f).set_index("scorer")
    assert set(taus.index) == set(ranking["report"])
    for scorer, report in ranking["report"].items():
        assert taus.loc[scorer, "kendall_tau"] == pytest.approx(report["kendall_tau"], nan_ok=True)
        assert taus.loc[scorer, "kendall_tau_high"] == pytest.approx(
            report["kendall_tau_high"], nan_ok=True
        )
    assert at.multiselect(key="nas_scorers").value == list(nas_view.SUPERNET_SCORERS)
    specs = "\n".join(_chart_specs(at))
    for title in ('"field": "subnet"', "MFLOPs per image", "standalone val accuracy"):
        assert title in specs

    # a standalone subnet is no supernet: no NAS view on its page
    at = _app(runs_dir, monkeypatch, page="Run", run=standalone[0].name)
    assert not NAS_HEADERS & {h.value for h in at.subheader}

    # before search and rank, the view says which command makes each part
    fresh = tmp_path / "runs" / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, fresh, ignore=shutil.ignore_patterns("nas", "checkpoints"))
    at = _app(tmp_path / "runs", monkeypatch, page="Run", run=run_dir.name)
    captions = " ".join(c.value for c in at.caption)
    assert f"sweeplab nas search run={run_dir.name}" in captions
    assert f"sweeplab nas rank run={run_dir.name} --k 8 --launch" in captions
    assert "NAS: largest and smallest subnet" in {h.value for h in at.subheader}


def test_publish_sends_the_nas_pictures_and_metrics_to_wandb(searched_supernet, tmp_path):
    from sweeplab import cli
    from sweeplab.tracking.record import read_record
    from tests.test_wandb import _items, _records

    _, run_dir, _ = searched_supernet
    copy = tmp_path / "runs" / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    assert cli.main(["publish", f"run={copy}", "logger=wandb"]) == 0
    (offline,) = copy.glob("wandb/offline-run-*")
    summary, history = {}, []
    for item in _records(offline):
        kind = item.WhichOneof("record_type")
        if kind == "summary":
            summary.update(_items(item.summary.update))
        elif kind == "history":
            history.append(_items(item.history.item))
    metrics = read_record(copy)["metrics"]
    nas_metrics = [k for k in metrics if k.startswith("nas/")]
    assert any(k.startswith("nas/search/") for k in nas_metrics)
    assert "nas/rank/supernet_recalibrate/kendall_tau" in nas_metrics
    for key in nas_metrics:
        assert summary[key] == pytest.approx(metrics[key], nan_ok=True), key
    for picture in ("plots/nas_pareto", "plots/nas_ranking"):
        assert summary[f"{picture}.path"].startswith("media/images/plots/")
        assert summary[f"{picture}._type"] == "image-file"
    # the smallest subnet's accuracy per epoch goes to W&B's history beside the largest's
    smallest = [row["val/nas/smallest/acc"] for row in history if "val/nas/smallest/acc" in row]
    assert len(smallest) == 2


@pytest.mark.slow
def test_run_page_of_a_supernet_shows_its_nas_view_in_a_browser(searched_supernet, tmp_path):
    """The NAS view served by Streamlit and drawn by Chromium, screenshotted for a person."""
    from tests import test_dashboard_browser as web

    if not web.CHROMIUM.exists():
        pytest.skip(f"no browser: {web.CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    runs_dir, run_dir, _ = searched_supernet
    port = web._free_port()
    server = subprocess.Popen(
        web.streamlit_command(runs_dir, "127.0.0.1", port, runs_dir.parent / "experiments"),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        web._wait_until_serving(url, server)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(web.CHROMIUM), args=web.CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 5200})
            page.goto(f"{url}/?page=Run&run={run_dir.name}", timeout=web.TIMEOUT_MS)
            page.wait_for_selector(
                "h3:has-text('NAS: supernet vs standalone ranking')", timeout=web.TIMEOUT_MS
            )
            text = web._main_text(page, *NAS_HEADERS, "Kendall τ", "command_from_supernet")
            for expected in (*NAS_HEADERS, "green diamonds", "bootstrap intervals"):
                assert expected in text
            # learning curves, the two subnets, the Pareto front and the ranking scatter
            page.wait_for_function(
                "document.querySelectorAll(\"[data-testid='stVegaLiteChart'] canvas, "
                "[data-testid='stVegaLiteChart'] svg\").length >= 4",
                timeout=web.TIMEOUT_MS,
            )
            page.wait_for_selector("img[src*='media']", timeout=web.TIMEOUT_MS)
            web._screenshot(page, tmp_path, "run_supernet")
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
