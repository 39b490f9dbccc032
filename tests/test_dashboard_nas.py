"""The dashboard's NAS view: hand-written NAS files as frames, and the Run page of a real
supernet run with its search and ranking done."""

from __future__ import annotations

import json
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
