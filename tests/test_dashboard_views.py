"""The dashboard's sweep, diff, merge, ROC and debug views: their frames, and the pages
run headless by Streamlit's AppTest on hand-written stores (a sweep directory, a real
Optuna study in SQLite, a merge with its interpolation curve)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sweeplab.dashboard import merge_view, sweeps_view, tables
from sweeplab.dashboard.config_diff import config_diff
from sweeplab.evaluation.roc_points import read_roc_points, thin, write_roc_points
from sweeplab.tracking.record import write_record
from sweeplab.tracking.store import scan_store
from sweeplab.tracking.sweeps import write_outcome

from .test_dashboard_browser import _app
from .test_dashboard_data import make_run

LRS = (0.001, 0.01, 0.1, 0.3)
SWEEP = "fixture_table_2026-01-02_03-04-05"


def _set(run_dir: Path, **fields) -> None:
    record = json.loads((run_dir / "record.json").read_text())
    for key, value in fields.items():
        node, *path = key.split("__")
        target = record
        for part in [node, *path][:-1]:
            target = target.setdefault(part, {})
        target[[node, *path][-1]] = value
    write_record(run_dir, record)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A named sweep over augment × lr, a debug run, a study over lr and weight decay whose
    trials are runs of the store, and a merge of two of the sweep's runs."""
    optuna = pytest.importorskip("optuna")
    runs = tmp_path / "runs"
    sweep = runs / "_sweeps" / SWEEP
    for i, lr in enumerate(LRS):
        for augment in ("none", "mixup"):
            run_dir = make_run(
                runs,
                f"s{i}{augment}",
                [f"augment={augment}", f"regime.optimizer.lr={lr!r}"],
                {"test/cls/acc": 0.8 + lr / 2 + 0.05 * (augment == "mixup"), "val/cls/acc": 0.8},
            )
            write_outcome(sweep, run_dir, "complete", None)
    debug = make_run(runs, "dbg0", ["debug=fdr"], {"test/cls/acc": 0.13})
    _set(debug, config__debug_run=True)

    (runs / "_optuna").mkdir()
    study = optuna.create_study(
        study_name="lr_wd",
        storage=f"sqlite:///{runs}/_optuna/lr_wd.db",
        direction="minimize",
    )
    study.set_user_attr("sweeplab_space", {"metric": "val/cls/nll", "direction": "minimize"})
    study.set_user_attr("sweeplab_base", ["backbone=mlp"])
    dist = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    for i, (lr, wd) in enumerate(zip(LRS, (1e-2, 1e-4, 1e-1, 1e-3), strict=True)):
        params = {"regime.optimizer.lr": lr, "regime.optimizer.weight_decay": wd}
        overrides = ["backbone=mlp", *(f"{k}={v!r}" for k, v in params.items())]
        make_run(runs, f"t{i}", overrides, {"val/cls/nll": 1 - lr, "test/cls/acc": 0.5 + wd})
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dict.fromkeys(params, dist), value=1 - lr
            )
        )
    merge = make_run(runs, "merge0", ["regime=merge"], {"test/cls/acc": 0.9})
    _set(
        merge,
        config__regime={"name": "merge", "method": "interpolate", "runs": ["s0none", "gone00"]},
        sources=["gone00", "s0none"],
        metrics={"test/cls/acc": 0.9, "merge/ensemble/test/cls/acc": 0.92,
                 "merge/interp/test/acc_barrier": 0.1, "merge/interp/test/nll_barrier": 0.3},
    )  # fmt: skip
    curve = {
        "runs": ["s0none", "gone00"],
        "alpha": 0.5,
        "bn": "recompute",
        "alphas": [0.0, 0.5, 1.0],
        "val": {"acc": [0.9, 0.7, 0.8], "nll": [0.3, 0.9, 0.4]},
        "test": {"acc": [0.88, 0.7, 0.8], "nll": [0.35, 1.0, 0.4]},
    }
    (merge / "interpolation.json").write_text(json.dumps(curve))
    (merge / "plots").mkdir()
    scores = np.linspace(0, 1, 50)
    write_roc_points(
        merge / "plots" / "ood_noise_roc.json",
        {d: (scores, np.sqrt(scores) ** k) for k, d in enumerate(["msp", "energy", "knn"], 1)},
        {"msp": 0.7, "energy": 0.9, "knn": 0.8},
    )
    return runs


def _captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


# --------------------------------------------------------------------------- frames


def test_settings_are_written_one_way_and_only_result_changing_ones_vary(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a", ["backbone.widths=[8,16]", "paths.root_dir=/x", "logger=wandb"])
    make_run(runs, "b", ["paths.root_dir=/y", "trainer.enable_progress_bar=false"])
    a, b = scan_store(runs)
    _set(b.path, config__backbone__widths=[16, 32])
    a, b = scan_store(runs)
    assert tables.varying_keys([a, b]) == ["backbone.widths"]
    assert [tables.setting(e, "backbone.widths") for e in (a, b)] == ["[8, 16]", "[16, 32]"]
    assert tables.display({"k": [True, None, "x"]}) == "{k: [true, null, x]}"


def test_config_diff_lists_result_changing_keys_first(tmp_path):
    a = {"seed": 0, "paths": {"root": "/a"}, "regime": {"optimizer": {"lr": 0.1}}, "tags": []}
    b = {"seed": 0, "paths": {"root": "/b"}, "regime": {"optimizer": {"lr": 0.3, "nesterov": True}}}
    diff = config_diff(a, b)
    assert diff.to_dict("records") == [
        {"key": "regime.optimizer.lr", "a": "0.1", "b": "0.3", "changes results": True},
        {"key": "regime.optimizer.nesterov", "a": "(absent)", "b": "true", "changes results": True},
    ]
    every = config_diff(a, b, all_keys=True)
    assert list(every["key"]) == [*diff["key"], "paths.root", "tags"]
    assert not every["changes results"].iloc[-1]


def test_parallel_axes_scale_numbers_and_categories(store):
    runs = [e for e in scan_store(store) if e.run_id.startswith("s")]
    table, keys = sweeps_view.runs_table(runs, ["test/cls/acc"])
    assert keys == ["augment", "regime.optimizer.lr"]
    axes = sweeps_view.parallel_axes(table, keys, "test/cls/acc")
    assert axes.order == ["augment", "regime.optimizer.lr (log)", "test/cls/acc"]
    lr = axes.lines[axes.lines["axis"] == "regime.optimizer.lr (log)"]
    assert sorted(set(lr["position"].round(6))) == pytest.approx(
        [0, 1 / np.log10(300), 2 / np.log10(300), 1], abs=1e-6
    )
    augment = axes.lines[axes.lines["axis"] == "augment"].set_index("line")["position"]
    assert augment["s0mixup"] == 0 and augment["s0none"] == 1  # alphabetical
    assert set(axes.ticks[axes.ticks["axis"] == "augment"]["label"]) == {"mixup", "none"}
    assert len(axes.lines) == 3 * len(runs)


def test_sweeps_are_named_after_their_spec_or_by_time(store):
    assert sweeps_view.sweep_label(SWEEP, "2026-01-02 03:04:05", 8) == (
        "fixture_table (2026-01-02 03:04:05, 8 runs)"
    )
    assert sweeps_view.sweep_label("2026-01-02_03-04-05", "2026-01-02 03:04:05", 1) == (
        "2026-01-02 03:04:05 (1 run)"
    )
    kinds = [(o.kind, o.label) for o in sweeps_view.options(store)]
    assert kinds == [
        ("sweep", "sweep fixture_table (2026-01-02 03:04:05, 8 runs)"),
        ("study", "study lr_wd (lr_wd.db)"),
    ]


def test_a_study_finds_its_trials_runs_and_their_importances(store):
    option = sweeps_view.options(store)[1]
    study = sweeps_view.load_study(option)
    view = sweeps_view.study_view(study, scan_store(store))
    assert list(view.trials["run_id"]) == ["t0", "t1", "t2", "t3"]
    assert view.metric == "val/cls/nll" and view.direction == "minimize"
    scores = sweeps_view.importances(study, view).set_index("parameter")["importance"]
    assert set(scores.index) == set(view.params) and scores.sum() == pytest.approx(1.0)
    # against a run metric that only weight decay moves, weight decay matters most
    by_acc = sweeps_view.importances(study, view, "test/cls/acc").set_index("parameter")
    assert by_acc["importance"].idxmax() == "regime.optimizer.weight_decay"
    with pytest.raises(ValueError, match="not every trial"):
        sweeps_view.importances(study, view, "ood/near/energy/auroc")


def test_roc_points_are_thinned_but_keep_their_ends(tmp_path):
    fpr = np.concatenate([[0.0], np.sort(np.random.default_rng(0).random(5000)), [1.0]])
    tpr = np.sqrt(fpr)
    xs, ys = thin(fpr, tpr)
    assert len(xs) < 450 and (xs[0], ys[0]) == (0.0, 0.0) and (xs[-1], ys[-1]) == (1.0, 1.0)
    assert np.all(np.diff(xs) >= 0)
    assert np.interp(0.5, xs, ys) == pytest.approx(np.sqrt(0.5), abs=0.01)
    path = write_roc_points(tmp_path / "r.json", {"msp": (fpr, tpr)}, {"msp": 0.66})
    assert read_roc_points(path)["msp"]["auroc"] == 0.66
    path.write_text("[1, 2]")
    assert read_roc_points(path) == {}


def test_merge_view_lists_ingredients_and_reads_the_curve(store):
    entries = {e.run_id: e for e in scan_store(store)}
    frame = merge_view.ingredients_frame(entries["merge0"], entries.get)
    assert list(frame["model"]) == [
        "merge (interpolate)", "output ensemble", "ingredient s0none", "ingredient gone00",
    ]  # fmt: skip
    assert list(frame["in store"].iloc[2:]) == [True, False]
    assert frame.loc[2, "val/cls/acc"] == 0.8 and np.isnan(frame.loc[3, "test/cls/acc"])
    assert "kept" not in frame  # the record does not say
    _set(
        entries["merge0"].path,
        metrics={"merge/greedy/kept_runs": "s0none"},
        sources=["gone00", "init00", "s0none", "x0"],  # x0: a source of no stated role
    )
    (merge,) = [e for e in scan_store(store) if e.run_id == "merge0"]
    frame = merge_view.ingredients_frame(merge, entries.get)
    models = ["ingredient s0none", "ingredient gone00", "source init00", "source x0"]
    assert list(frame["model"].iloc[1:]) == models
    assert list(frame["kept"].iloc[1:]) == [True, False, None, None]
    # the base a merge inferred (the ingredients' shared init_from) is named as the base
    _set(merge.path, metrics={"merge/base_run": "init00"})
    (merge,) = [e for e in scan_store(store) if e.run_id == "merge0"]
    models = list(merge_view.ingredients_frame(merge, entries.get)["model"].iloc[1:])
    assert models == ["ingredient s0none", "ingredient gone00", "base init00", "source x0"]
    curve = merge_view.interpolation(merge.path)
    assert curve.runs == ["s0none", "gone00"] and curve.alpha == 0.5
    nll = curve.curve[(curve.curve["split"] == "val") & (curve.curve["metric"] == "NLL")]
    assert list(nll["chord"]) == pytest.approx([0.3, 0.35, 0.4])
    (merge.path / "interpolation.json").write_text('{"alphas": [0, 1], "val": {"acc": [1]}}')
    with pytest.raises(merge_view.InterpolationFileError, match="1 values for 2"):
        merge_view.interpolation(merge.path)


# --------------------------------------------------------------------------- pages


def test_sweeps_page_draws_a_sweep_and_a_study(store, monkeypatch):
    at = _app(store, monkeypatch, page="Sweeps")
    assert at.selectbox(key="sweep").value.startswith("sweep fixture_table")
    assert "Parallel coordinates" in [h.value for h in at.subheader]
    assert "8 runs; axes" in _captions(at)
    at.selectbox(key="sweep").select("study lr_wd (lr_wd.db)").run()
    assert not at.exception
    assert "Parameter importances" in [h.value for h in at.subheader]
    assert "4 complete trials of study lr_wd; 4 found as runs" in _captions(at)
    assert list(at.dataframe[-1].value["run_id"]) == ["t0", "t1", "t2", "t3"]


def test_diff_page_shows_what_differs_between_two_runs(store, monkeypatch):
    at = _app(store, monkeypatch, page="Diff", diff_a="s0none", diff_b="s3mixup")
    diff = at.dataframe[0].value.set_index("key")
    assert diff.loc["regime.optimizer.lr", "A: s0none"] == "0.001"
    assert diff.loc["regime.optimizer.lr", "B: s3mixup"] == "0.3"
    assert "2 keys differ; 2 of them can change results" in _captions(at)


def test_run_page_of_a_merge_shows_ingredients_interpolation_and_picked_roc(store, monkeypatch):
    at = _app(store, monkeypatch, page="Run", run="merge0")
    headers = [h.value for h in at.subheader]
    assert {"OOD: ROC curves", "Merge: ingredients (interpolate)", "Merge: interpolation"} <= set(
        headers
    )
    detectors = at.multiselect(key="roc_noise")
    assert detectors.options[0] == "energy" and detectors.value == ["energy", "knn", "msp"]
    assert "Not in this store: gone00." in _captions(at)
    detectors.set_value(["knn"]).run()
    assert not at.exception


def test_debug_runs_are_hidden_until_switched_on(store, monkeypatch):
    at = _app(store, monkeypatch)
    assert "dbg0" not in set(at.dataframe[0].value["run_id"])
    assert "1 debug run hidden" in _captions(at)
    at.toggle(key="show_debug").set_value(True).run()
    frame = at.dataframe[0].value.set_index("run_id")
    assert frame.loc["dbg0", "note"] == "debug run"


def test_compare_starts_on_one_recipe_and_names_what_a_group_pools(store, monkeypatch):
    at = _app(store, monkeypatch, page="Compare", compare_mode="augment")
    assert at.selectbox(key="compare_recipe").value == "digits_small_cnn"
    assert "augment=mixup over regime.optimizer.lr" in at.warning[0].value
