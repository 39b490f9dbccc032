"""The NAS pictures of a supernet run: the searched subnets' Pareto front, and the ranking
scatter of inherited against standalone accuracy. Written like the evaluation's plots
(a matplotlib ``Figure``, rendered in memory, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from sweeplab.evaluation.plots import SIZE, save_png
from sweeplab.models.subnet_scoring import BN_POLICIES


def pareto_plot(
    candidates: Sequence[Mapping],
    front: Sequence[Mapping],
    budgets: Sequence[Mapping],
    path: str | os.PathLike,
    title: str,
) -> Path:
    """Val accuracy against MFLOPs of every searched subnet, the front as a line, the best
    per budget as a star and each FLOPs budget as a dotted line (``search.json``'s entries)."""
    figure = Figure(figsize=(SIZE * 1.6, SIZE * 1.1), layout="constrained")
    ax = figure.subplots()
    mflops = [c["flops"] / 1e6 for c in candidates]
    ax.scatter(mflops, [c["val_acc"] for c in candidates], s=14, alpha=0.5, label="searched")
    ax.plot(
        [c["flops"] / 1e6 for c in front],
        [c["val_acc"] for c in front],
        "o-",
        color="tab:red",
        label="Pareto front",
    )
    for budget in budgets:
        best = budget["best"]
        ax.scatter(
            [best["flops"] / 1e6], [best["val_acc"]], marker="*", s=160, color="tab:green", zorder=5
        )
        if budget.get("max_mflops") is not None:
            ax.axvline(budget["max_mflops"], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="MFLOPs per image", ylabel="val accuracy (inherited weights)", title=title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return save_png(figure, path)


def ranking_plot(ranking: Mapping, path: str | os.PathLike, title: str) -> Path:
    """Standalone against inherited val accuracy, one panel per BatchNorm policy, with τ
    (``ranking.json``'s entries)."""
    figure = Figure(figsize=(SIZE * 2.4, SIZE * 1.05), layout="constrained")
    axes = figure.subplots(1, len(BN_POLICIES), sharey=True)
    for ax, policy in zip(axes, BN_POLICIES, strict=True):
        name = f"supernet_{policy}"
        report = ranking["report"][name]
        ax.scatter(ranking["scores"][name], ranking["standalone_val_acc"], color="tab:blue")
        ax.set(
            xlabel=f"inherited val accuracy (BatchNorm: {policy})",
            title=(
                f"Kendall τ = {report['kendall_tau']:.2f} "
                f"[{report['kendall_tau_low']:.2f}, {report['kendall_tau_high']:.2f}]"
            ),
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("standalone val accuracy")
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path)
