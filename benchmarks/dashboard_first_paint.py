"""First paint of the dashboard's Runs page on a store of 1,000 runs.

Builds a synthetic run store the way the runner writes one: each record is the
default config as Hydra composes and resolves it, varied by the overrides of a
sweep (augment × learning rate × seed × max_epochs), with the metric keys of a full
default evaluation (about 360 per run) and a ``metrics.csv``, written by
:func:`~sweeplab.tracking.record.write_record`. Then it measures the Runs page:

- ``apptest cold``: the first script run of a fresh server (the index reads every
  record), with Streamlit's AppTest in this process;
- ``apptest warm``: the script run of a second visitor (the index is cached);
- ``browser``: from ``page.goto`` to the grid showing its first run id in headless
  Chromium against ``sweeplab dashboard``'s Streamlit server, the page a person sees
  (skipped without /usr/bin/chromium or Playwright); beside it, the same measure on a
  bare Streamlit page with the Runs page's widgets and the same 1,000-row table,
  prepared beforehand and served the same way: what Streamlit's page, scripts and
  grid cost on this machine, so the difference is what the dashboard's own work adds.

    python benchmarks/dashboard_first_paint.py            # 1,000 runs, 3 rounds
    python benchmarks/dashboard_first_paint.py --runs 200 --no-browser
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from omegaconf import OmegaConf

from sweeplab.dashboard.launch import streamlit_command
from sweeplab.search import compose_train
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import new_record, write_record

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AUGMENTS = ("none", "mixup", "cutmix", "mixup_cutmix", "regmixup")
LRS = (0.01, 0.03, 0.1, 0.3)
SEEDS = range(5)
EPOCHS = (5, 10)
DETECTORS = ("msp", "maxlogit", "energy", "entropy", "odin", "mahalanobis", "knn", "vim")
OOD_SETS = ("held_out", "noise", "near", "far")
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast")


def _metrics(rng: random.Random) -> dict[str, float]:
    """The metric keys of a default evaluation, with plausible values."""
    metrics: dict[str, float] = {}
    for split in ("val", "test"):
        metrics.update({f"{split}/cls/{m}": rng.random() for m in ("acc", "nll", "brier")})
        metrics.update({f"{split}/cal/{m}": rng.random() / 10 for m in ("ece", "aece", "mce")})
    for suffix in ("ts", "vs", "ms"):
        metrics.update({f"test/cal/{m}_{suffix}": rng.random() for m in ("ece", "nll", "acc")})
    for ood_set, detector in itertools.product(OOD_SETS, DETECTORS):
        for m in ("auroc", "aupr_in", "aupr_out", "fpr95"):
            metrics[f"ood/{ood_set}/{detector}/{m}"] = rng.random()
    for corruption, severity in itertools.product(CORRUPTIONS, (*range(1, 6), "mean")):
        for m in ("acc", "nll", "ece"):
            metrics[f"shift/{corruption}/{severity}/{m}"] = rng.random()
    metrics.update({f"shift/mean/{m}": rng.random() for m in ("acc", "nll", "ece")})
    metrics.update({"perf/train_samples_per_s": 5000 * rng.random(), "train/epochs": 5.0})
    return metrics


def build_store(root: Path, runs: int) -> Path:
    """``runs`` records under ``root/runs`` (plus their metrics.csv), as the runner writes."""
    cfg = compose_train([f"paths.root_dir={root}"])
    choices = {
        g: str(o)
        for g, o in cfg.hydra.runtime.choices.items()
        if not g.startswith("hydra") and o is not None
    }
    base = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )
    rng = random.Random(0)
    grid = itertools.cycle(itertools.product(AUGMENTS, LRS, SEEDS, EPOCHS))
    runs_dir = root / "runs"
    for i in range(runs):
        augment, lr, seed, epochs = next(grid)
        config = json.loads(json.dumps(base))
        config["augment"]["name"], config["seed"] = augment, seed + 10 * (i // 200)
        config["regime"]["optimizer"]["lr"], config["trainer"]["max_epochs"] = lr, epochs
        overrides = [
            f"augment={augment}",
            f"regime.optimizer.lr={lr}",
            f"seed={config['seed']}",
            f"trainer.max_epochs={epochs}",
        ]
        run_id = compute_run_id(config, pin_sources=False)
        run_dir = runs_dir / str(config["name"]) / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        record = new_record(run_id, str(config["name"]), config, overrides, {"host": "bench"})
        record.update(status="complete", metrics=_metrics(rng), duration_s=60 * rng.random())
        record["choices"] = {**choices, "augment": augment}
        record["created"] = f"2026-01-{1 + i // 1000:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00+00:00"
        write_record(run_dir, record)
        lines = ["epoch,step,train/cls/loss,val/cls/acc,val/cls/nll"]
        lines += [f"{e},{10 * e},{1 / (e + 1):.4f},{e / epochs:.4f},{1 / (e + 1):.4f}"
                  for e in range(epochs)]  # fmt: skip
        (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    return runs_dir


def apptest_paint(runs_dir: Path, script: Path | None = None) -> float:
    """Seconds for one Runs-page script run (or one of ``script``) in a new AppTest session."""
    from streamlit.testing.v1 import AppTest

    from sweeplab.dashboard import app

    sys.argv = ["app.py", "--runs-dir", str(runs_dir)]
    at = AppTest.from_file(str(script or app.__file__), default_timeout=120)
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError([e.value for e in at.exception])
    return elapsed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BARE_PAGE = """
import pandas as pd
import streamlit as st

st.set_page_config(page_title="bare", layout="wide")
st.sidebar.title("sweeplab")
st.sidebar.toggle("Show debug runs", key="show_debug")
st.sidebar.caption("run store")
st.sidebar.radio("Page", ["Runs", "Run", "Compare", "Sweeps", "Diff", "Tables"], key="page")
st.sidebar.button("Reload")
st.header("Runs")
left, right = st.columns([3, 1])
left.text_input("Filter", key="filters")
right.multiselect("Status", ["running", "complete", "failed", "unreadable"], key="statuses")
st.caption("1000 of 1000 runs")
frame = pd.read_pickle(FRAME)
st.dataframe(frame, hide_index=True, height=640, on_select="rerun",
             selection_mode="single-row", key="runs_table")
st.caption("Select a row to open the run.")
"""


def bare_command(script: Path, port: int) -> list[str]:
    """The bare page, served with the dashboard's Streamlit options."""
    command = streamlit_command(Path("."), "127.0.0.1", port)
    command[command.index("run") + 1] = str(script)
    return command[: command.index("--")]


def browser_paints(command: list[str], port: int, first_id: str, rounds: int) -> list[float] | None:
    """Seconds from ``goto`` to the grid showing ``first_id``: a fresh server's first visitor,
    then ``rounds - 1`` new visitors of the same server."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.exists():
        return None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    times = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for _ in range(rounds):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                start = time.perf_counter()
                page.goto(url, timeout=120_000)
                page.wait_for_function(
                    "id => { const g = document.querySelector(\"[data-testid='stDataFrame']\");"
                    " return g && (g.innerText.includes(id)"
                    " || g.querySelector('table')?.textContent.includes(id)); }",
                    arg=first_id,
                    timeout=120_000,
                    polling=50,
                )
                times.append(time.perf_counter() - start)
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        runs_dir = build_store(Path(tmp), args.runs)
        size = sum(p.stat().st_size for p in runs_dir.rglob("record.json")) / 1e6
        print(f"store: {args.runs} runs, {size:.0f} MB of records, "
              f"built in {time.perf_counter() - start:.1f} s")  # fmt: skip
        from sweeplab.dashboard.tables import runs_frame
        from sweeplab.tracking.store import scan_store

        entries = scan_store(runs_dir)
        first_id = entries[0].run_id
        runs_frame(entries).to_pickle(Path(tmp) / "frame.pkl")
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE_PAGE.replace("FRAME", repr(str(Path(tmp) / "frame.pkl"))))

        cold = apptest_paint(runs_dir)
        warm = statistics.median(apptest_paint(runs_dir) for _ in range(args.rounds))
        floor = statistics.median(apptest_paint(runs_dir, bare) for _ in range(args.rounds))
        print(f"apptest, Runs page: cold (fresh server, index reads every record) {cold:.2f} s, "
              f"warm (new visitor, median of {args.rounds}) {warm:.2f} s; bare page {floor:.2f} s")  # fmt: skip
        if args.no_browser:
            return
        port = _free_port()
        runs_page = streamlit_command(runs_dir, "127.0.0.1", port)
        for label, command in (("Runs page", runs_page), ("bare page", bare_command(bare, port))):
            paints = browser_paints(command, port, first_id, args.rounds + 1)
            if paints is None:
                print("browser: skipped (no Chromium or Playwright)")
                return
            print(f"browser, {label}: cold (fresh server's first visitor) {paints[0]:.2f} s, "
                  f"warm (new visitor, median of {args.rounds}) {statistics.median(paints[1:]):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
