"""Evaluation plots written as PNG files: reliability diagrams, OOD score histograms, ROC curves.

Figures are built with :class:`matplotlib.figure.Figure` rather than pyplot, so
nothing is registered in pyplot's global figure list (no backend to select, no
figure to close, safe in worker threads), and each PNG is rendered to memory and
written atomically so the dashboard never reads half a picture.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sweeplab.files import atomic_write_bytes

SIZE = 4.0  # inches per panel
DPI = 100
IN_COLOR = "tab:blue"
OUT_COLOR = "tab:orange"


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    """Render ``figure`` to PNG in memory and write it atomically (parents made)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _as_array(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _reliability_panel(axes: Axes, bins: Mapping[str, Sequence], label: str) -> None:
    edges = np.asarray(bins["edges"], dtype=np.float64)
    lefts, widths = edges[:-1], np.diff(edges)
    filled = [i for i, count in enumerate(bins["count"]) if count]
    accuracy = np.array([bins["accuracy"][i] for i in filled], dtype=np.float64)
    confidence = np.array([bins["confidence"][i] for i in filled], dtype=np.float64)
    axes.bar(
        lefts[filled],
        accuracy,
        widths[filled],
        align="edge",
        color=IN_COLOR,
        edgecolor="white",
        linewidth=0.5,
        label="accuracy",
    )
    # The gap between what the model claims (confidence) and what it achieves.
    axes.bar(
        lefts[filled],
        confidence - accuracy,
        widths[filled],
        bottom=accuracy,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        linewidth=0.5,
        label="gap",
    )
    axes.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=label)
    axes.set_aspect("equal")
    axes.legend(loc="upper left", fontsize="small")


def _with_ece(label: str, ece: float | None) -> str:
    if ece is None:
        return label
    return f"{label} (ECE {ece:.3f})" if label else f"ECE {ece:.3f}"


def reliability_diagram(
    bins: Mapping[str, Sequence],
    path: str | os.PathLike,
    title: str,
    ece: float | None = None,
    after: Mapping[str, Sequence] | None = None,
    ece_after: float | None = None,
) -> Path:
    """Accuracy per confidence bin against the diagonal, from :func:`reliability_bins`.

    With ``after`` (the bins after temperature scaling) the two diagrams sit side
    by side in one picture, so the effect of scaling reads at a glance.
    """
    panels = [(bins, _with_ece("before scaling" if after else "", ece))]
    if after is not None:
        panels.append((after, _with_ece("after scaling", ece_after)))
    figure = Figure(figsize=(SIZE * len(panels), SIZE + 0.3), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_bins, label) in zip(axes, panels, strict=True):
        _reliability_panel(ax, panel_bins, label)
    axes[0].set_ylabel("accuracy")
    figure.suptitle(title)
    return save_png(figure, path)


def score_histogram(
    scores_in: object,
    scores_out: object,
    path: str | os.PathLike,
    title: str,
    bins: int = 50,
) -> Path:
    """Overlaid density histograms of ID and OOD detector scores on shared bins.

    Infinite scores are left out of the picture (they have no bin) but not of the metrics.
    """
    scores_in, scores_out = _as_array(scores_in), _as_array(scores_out)
    scores_in, scores_out = scores_in[np.isfinite(scores_in)], scores_out[np.isfinite(scores_out)]
    if scores_in.size == 0 and scores_out.size == 0:
        raise ValueError("no finite scores to plot")
    edges = np.histogram_bin_edges(np.concatenate([scores_in, scores_out]), bins=bins)
    figure = Figure(figsize=(SIZE, SIZE), layout="constrained")
    axes = figure.subplots()
    for scores, color, label in (
        (scores_in, IN_COLOR, "in-distribution"),
        (scores_out, OUT_COLOR, "OOD"),
    ):
        if scores.size:
            axes.hist(
                scores,
                bins=edges,
                density=True,
                histtype="stepfilled",
                alpha=0.5,
                color=color,
                label=label,
            )
    axes.set(xlabel="score (higher = more OOD)", ylabel="density", title=title)
    axes.legend(fontsize="small")
    return save_png(figure, path)


def roc_curve_plot(
    curves: Mapping[str, tuple[object, object]], path: str | os.PathLike, title: str
) -> Path:
    """ROC curves, one per name (e.g. per detector), from :func:`sweeplab.metrics.ood.roc_curve`."""
    if not curves:
        raise ValueError("no ROC curves to plot")
    figure = Figure(figsize=(SIZE, SIZE), layout="constrained")
    axes = figure.subplots()
    for name, (fpr, tpr) in curves.items():
        axes.plot(_as_array(fpr), _as_array(tpr), linewidth=1.2, label=name)
    axes.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="false positive rate (ID flagged)",
        ylabel="true positive rate (OOD flagged)",
        title=title,
    )
    axes.set_aspect("equal")
    axes.legend(loc="lower right", fontsize="small")
    return save_png(figure, path)


KIND_COLORS = {"member": "tab:gray", "member mean": "tab:blue", "ensemble": "tab:orange"}


def ensemble_members_plot(
    rows: Sequence[Mapping[str, object]],
    path: str | os.PathLike,
    title: str,
    diversity: Mapping[str, float] | None = None,
) -> Path:
    """Bars per member, member mean and ensemble, one panel per metric.

    ``rows`` are :func:`sweeplab.evaluation.ensemble_summary.comparison_rows`;
    ``diversity`` numbers, if given, are written under the title.
    """
    metrics = list(dict.fromkeys(str(row["metric"]) for row in rows))
    if not metrics:
        raise ValueError("no member or ensemble metrics to plot")
    panels = {metric: [row for row in rows if row["metric"] == metric] for metric in metrics}
    widest = max(len(shown) for shown in panels.values())
    figure = Figure(figsize=(SIZE * 0.9 * len(metrics), SIZE), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (metric, shown) in zip(axes, panels.items(), strict=True):
        # bars keep one width across panels; a panel with fewer bars centres them
        positions = np.arange(len(shown)) + (widest - len(shown)) / 2
        values = [float(row["value"]) for row in shown]
        colors = [KIND_COLORS.get(str(row["kind"]), "tab:gray") for row in shown]
        bars = ax.bar(positions, values, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize="x-small")
        ax.set_xlim(-0.6, widest - 0.4)
        names = [str(row["model"]) for row in shown]
        ax.set_xticks(positions, names, rotation=45, ha="right", fontsize="small")
        ax.set_title(metric)
        ax.set_ylim(0, max(max(values), 1e-6) * 1.15)  # room for the labels
    if diversity:
        title += "\n" + ", ".join(f"{name} {value:.3g}" for name, value in diversity.items())
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path)


TEACHER_COLORS = {"teacher": "tab:gray", "teacher mean": "tab:blue", "student": "tab:orange"}


def teacher_student_plot(
    rows: Sequence[Mapping[str, object]], path: str | os.PathLike, title: str
) -> Path:
    """Bars of a distilled student beside its teacher run(s), one panel per metric.

    ``rows`` are :func:`sweeplab.regimes.distill.teacher_rows`: ``{"model", "kind"
    (teacher | teacher mean | student), "metric", "value"}``.
    """
    metrics = list(dict.fromkeys(str(row["metric"]) for row in rows))
    if not metrics:
        raise ValueError("no teacher or student metrics to plot")
    figure = Figure(figsize=(SIZE * 0.8 * len(metrics), SIZE), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        shown = [row for row in rows if row["metric"] == metric]
        values = [float(row["value"]) for row in shown]
        colors = [TEACHER_COLORS.get(str(row["kind"]), "tab:gray") for row in shown]
        bars = ax.bar(np.arange(len(shown)), values, color=colors)
        ax.bar_label(bars, fmt="%.4g", fontsize="x-small")
        names = [str(row["model"]) for row in shown]
        ax.set_xticks(np.arange(len(shown)), names, rotation=45, ha="right", fontsize="small")
        ax.set_title(metric)
        ax.set_ylim(0, max(max(values), 1e-6) * 1.15)  # room for the labels
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path)


SPLIT_COLORS = {"val": "tab:blue", "test": "tab:orange"}


def interpolation_plot(curve: Mapping[str, object], path: str | os.PathLike, title: str) -> Path:
    """Accuracy and NLL against α along θ = (1 − α) θ_A + α θ_B, one panel each, a line
    per split; the dashed chord between the end points is what the barrier is measured from.

    ``curve`` is :func:`sweeplab.regimes.interpolation.compute_curve`'s
    ``{"alphas": [...], split: {"acc": [...], "nll": [...]}}``.
    """
    alphas = _as_array(curve["alphas"])
    splits = [split for split in SPLIT_COLORS if split in curve]
    if not splits or alphas.size < 2:
        raise ValueError("no interpolation curve to plot")
    figure = Figure(figsize=(SIZE * 2, SIZE * 0.8), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, (metric, label) in zip(axes, (("acc", "accuracy"), ("nll", "NLL")), strict=True):
        for split in splits:
            values = _as_array(curve[split][metric])
            color = SPLIT_COLORS[split]
            ax.plot(alphas, values, marker="o", markersize=3, color=color, label=split)
            ax.plot(alphas[[0, -1]], values[[0, -1]], linestyle="--", linewidth=1, color=color)
        ax.set(xlabel="α (0 = run A, 1 = run B)", ylabel=label, xlim=(0, 1))
        ax.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path)
