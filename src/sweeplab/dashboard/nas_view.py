"""A supernet run's NAS files shaped into the frames of the dashboard's NAS view.

The view reads what ``sweeplab nas search`` and ``sweeplab nas rank`` wrote into
the run (``nas/search.json``, ``nas/ranking.json``) and the run's ``metrics.csv``;
it never imports the NAS code itself, which needs torch, so the dashboard still
opens on a machine that only holds copied runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SEARCH_FILE = "nas/search.json"
RANKING_FILE = "nas/ranking.json"
# metrics.csv columns of supernet training: the largest subnet is the run's own val/cls/acc.
SUBNET_CURVES = {"val/cls/acc": "largest subnet", "val/nas/smallest/acc": "smallest subnet"}
SUPERNET_SCORERS = ("supernet_recalibrate", "supernet_batch")
TAU_COLUMNS = (
    "kendall_tau",
    "kendall_tau_low",
    "kendall_tau_high",
    "sparse_kendall_tau",
    "spearman",
    "spearman_low",
    "spearman_high",
)


class NasFileError(ValueError):
    """A NAS file that exists but cannot be read as the view expects; the message names it."""


def is_supernet(config: dict[str, Any] | None, choices: dict[str, Any] | None = None) -> bool:
    """Whether a run's record says it trained a supernet (``regime=supernet``)."""
    regime = (config or {}).get("regime")
    name = regime.get("name") if isinstance(regime, dict) else regime
    return "supernet" in (name, (choices or {}).get("regime"))


def search_command(run_id: str) -> str:
    return f"sweeplab nas search run={run_id} --mflops <M> [<M> …]"


def rank_command(run_id: str) -> str:
    return f"sweeplab nas rank run={run_id} --k 8 --launch"


def _read(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = Path(run_dir) / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NasFileError(f"{name} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise NasFileError(f"{name} is not readable as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise NasFileError(f"{name} holds {type(data).__name__}, expected a JSON object")
    return data


# --------------------------------------------------------------------------- curves


def subnet_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Val accuracy of the largest and smallest subnet per epoch, long: epoch, subnet, acc.

    Empty when ``metrics.csv`` has neither column (training has not validated yet).
    """
    present = [c for c in SUBNET_CURVES if c in curves]
    if "epoch" not in curves or not present:
        return pd.DataFrame(columns=["epoch", "subnet", "acc"])
    long = curves.melt(id_vars=["epoch"], value_vars=present, var_name="subnet", value_name="acc")
    long = long.dropna(subset=["acc"])
    # one value per epoch and subnet: the epoch's last validation
    long = long.groupby(["subnet", "epoch"], sort=False, as_index=False).last()
    long["subnet"] = long["subnet"].map(SUBNET_CURVES)
    return long.sort_values(["subnet", "epoch"], ignore_index=True)


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchView:
    """``nas/search.json`` as frames: every candidate, the front, the best per budget."""

    candidates: pd.DataFrame  # arch, val_acc, mflops, params, on_front
    front: pd.DataFrame  # arch, val_acc, mflops, params, by MFLOPs
    best: pd.DataFrame  # budget, max_mflops, arch, val_acc, mflops, params, commands
    method: str
    bn_policy: str
    split: str


def _subnets(rows: Any, name: str) -> pd.DataFrame:
    try:
        frame = pd.DataFrame(
            [
                {
                    "arch": str(r["arch"]),
                    "val_acc": float(r["val_acc"]),
                    "mflops": float(r["flops"]) / 1e6,
                    "params": int(r["params"]),
                }
                for r in rows
            ],
            columns=["arch", "val_acc", "mflops", "params"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NasFileError(f"{SEARCH_FILE}: a subnet of {name!r} lacks {exc}") from exc
    return frame.sort_values("mflops", ignore_index=True)


def search_view(run_dir: Path) -> SearchView | None:
    """The run's search, or None when ``sweeplab nas search`` has not been run on it."""
    data = _read(run_dir, SEARCH_FILE)
    if data is None:
        return None
    candidates = _subnets(data.get("candidates") or [], "candidates")
    front = _subnets(data.get("pareto") or [], "pareto")
    candidates["on_front"] = candidates["arch"].isin(set(front["arch"]))
    rows = []
    for entry in data.get("budgets") or []:
        (best,) = _subnets([entry.get("best") or {}], "budgets").to_dict("records")
        rows.append(
            {
                "budget": entry.get("budget", ""),
                "max_mflops": entry.get("max_mflops"),
                **best,
                "eval_command": entry.get("eval_command", ""),
                "command": entry.get("command", ""),
                "command_from_supernet": entry.get("command_from_supernet", ""),
            }
        )
    columns = ["budget", "max_mflops", "arch", "val_acc", "mflops", "params", "eval_command"]
    best_frame = pd.DataFrame(rows, columns=[*columns, "command", "command_from_supernet"])
    return SearchView(
        candidates=candidates,
        front=front,
        best=best_frame,
        method=str(data.get("method", "")),
        bn_policy=str(data.get("bn_policy", "")),
        split=str(data.get("split", "")),
    )


# --------------------------------------------------------------------------- ranking


@dataclass(frozen=True)
class RankingView:
    """``nas/ranking.json`` as frames: each scorer's score beside standalone accuracy, and τ."""

    scatter: pd.DataFrame  # scorer, arch, score, standalone_val_acc, standalone_run
    taus: pd.DataFrame  # scorer and TAU_COLUMNS, the supernet's scorers first
    k: int
    split: str


def ranking_view(run_dir: Path) -> RankingView | None:
    """The run's ranking diagnostics, or None when ``sweeplab nas rank`` has not been run."""
    data = _read(run_dir, RANKING_FILE)
    if data is None:
        return None
    archs = [str(a) for a in data.get("archs") or []]
    standalone = data.get("standalone_val_acc") or []
    runs = data.get("standalone_runs") or [""] * len(archs)
    if len(standalone) != len(archs) or len(runs) != len(archs):
        raise NasFileError(
            f"{RANKING_FILE}: {len(archs)} archs but {len(standalone)} standalone accuracies "
            f"and {len(runs)} standalone runs"
        )
    scores = data.get("scores") or {}
    order = [s for s in SUPERNET_SCORERS if s in scores] + [
        s for s in scores if s not in SUPERNET_SCORERS
    ]
    points = []
    for scorer in order:
        values = scores[scorer]
        if len(values) != len(archs):
            raise NasFileError(
                f"{RANKING_FILE}: scorer {scorer!r} scores {len(values)} of {len(archs)} subnets"
            )
        points.extend(
            {
                "scorer": scorer,
                "arch": arch,
                "score": float(value),
                "standalone_val_acc": float(acc),
                "standalone_run": str(run),
            }
            for arch, value, acc, run in zip(archs, values, standalone, runs, strict=True)
        )
    report = data.get("report") or {}
    taus = pd.DataFrame(
        [{"scorer": s, **{c: report[s].get(c) for c in TAU_COLUMNS}} for s in order if s in report],
        columns=["scorer", *TAU_COLUMNS],
    )
    scatter = pd.DataFrame(
        points, columns=["scorer", "arch", "score", "standalone_val_acc", "standalone_run"]
    )
    return RankingView(
        scatter=scatter,
        taus=taus,
        k=int(data.get("k", len(archs))),
        split=str(data.get("split", "")),
    )
