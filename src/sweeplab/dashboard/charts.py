"""Altair charts of the Sweeps page and the Run page's curves, ROC and merge views.

Each function turns one of the view modules' frames into a chart, so the page code
only lays charts out. Sizes are fixed in pixels where a stretched chart would be
unreadable (a square ROC plot) and the legends sit below the plot, where long
detector or run names fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from sweeplab.dashboard.merge_view import Interpolation
from sweeplab.dashboard.sweeps_view import Axes

LEGEND = alt.Legend(orient="bottom", direction="vertical", labelLimit=600)
HEIGHT = 300
# What a learning-curve column measures, by its last path part: each kind gets its own
# y axis, so a loss near 2 does not flatten an accuracy near 0.9.
CURVE_KINDS = {"acc": "accuracy", "loss": "loss", "nll": "loss"}


def curve_kind(column: str) -> str:
    last = column.rsplit("/", 1)[-1]
    return CURVE_KINDS.get(last, "accuracy" if last.endswith("acc") else last)


def curve_panels(columns: Sequence[str]) -> dict[str, list[str]]:
    """The picked curve columns by kind (accuracy, loss, then any other), one panel each."""
    panels: dict[str, list[str]] = {}
    for column in columns:
        panels.setdefault(curve_kind(column), []).append(column)
    order = [k for k in ("accuracy", "loss") if k in panels] + [
        k for k in panels if k not in ("accuracy", "loss")
    ]
    return {k: panels[k] for k in order}


def curves(data: pd.DataFrame, columns: list[str], title: str, color: str | None = None):
    """Per-epoch lines of ``columns`` on one y axis named ``title``."""
    long = data.melt(id_vars=[c for c in ("epoch", color) if c], value_vars=columns)
    long = long.dropna(subset=["value"])
    encoding = {
        "x": alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        "y": alt.Y("value:Q", title=title, scale=alt.Scale(zero=False)),
        "tooltip": [c for c in ("epoch", color, "variable", "value") if c],
    }
    if color:
        encoding["color"] = alt.Color(f"{color}:N", title=None, legend=LEGEND)
        if len(columns) > 1:
            encoding["strokeDash"] = alt.StrokeDash("variable:N", title=None)
    else:
        encoding["color"] = alt.Color("variable:N", title=None, legend=LEGEND)
    return alt.Chart(long).mark_line(point=True).encode(**encoding).properties(height=HEIGHT)


def roc(points: pd.DataFrame, title: str) -> alt.LayerChart:
    """ROC curves (``detector, fpr, tpr``), square, with the chance diagonal."""
    diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray")
    lines = (
        alt.Chart(points)
        .mark_line()
        .encode(
            x=alt.X("fpr:Q", scale=alt.Scale(domain=[0, 1]), title="FPR (ID flagged OOD)"),
            y=alt.Y("tpr:Q", scale=alt.Scale(domain=[0, 1]), title="TPR (OOD flagged)"),
            color=alt.Color(
                "detector:N",
                title=None,
                legend=LEGEND,
                sort=None,
                scale=alt.Scale(scheme="category10"),
            ),
            order="order:Q",
            tooltip=[
                "detector",
                alt.Tooltip("fpr:Q", format=".3f"),
                alt.Tooltip("tpr:Q", format=".3f"),
            ],
        )
    )
    chart = diagonal.encode(x="x:Q", y="x:Q") + lines
    return chart.properties(width=420, height=420, title=title)


def parallel(axes: Axes, metric: str) -> alt.LayerChart:
    """One line per run across the axes, coloured by ``metric``; tick labels on each axis."""
    x = alt.X(
        "axis:N",
        sort=axes.order,
        title=None,
        axis=alt.Axis(labelAngle=0, orient="top", labelLimit=220),
    )
    y = alt.Y("position:Q", axis=None, scale=alt.Scale(domain=[-0.05, 1.05]))
    rules = alt.Chart(pd.DataFrame({"axis": axes.order})).mark_rule(color="#bbb").encode(x=x)
    lines = (
        alt.Chart(axes.lines)
        .mark_line(opacity=0.8, strokeWidth=2)
        .encode(
            x=x,
            y=y,
            detail="line:N",
            color=alt.Color(
                "color:Q",
                title=metric,
                scale=alt.Scale(scheme="viridis"),
                legend=alt.Legend(orient="right"),
            ),
            tooltip=[alt.Tooltip("line:N", title="run"), "axis", "value"],
        )
    )
    labels = (
        alt.Chart(axes.ticks)
        .mark_text(align="left", dx=5, fontSize=12)
        .encode(x=x, y=y, text="label:N")
    )
    return alt.layer(rules, lines, labels).properties(height=380)


def importances(frame: pd.DataFrame) -> alt.Chart:
    """Horizontal bars of each parameter's importance, largest on top."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("importance:Q", title="importance (fANOVA, sums to 1)"),
            y=alt.Y("parameter:N", sort="-x", title=None, axis=alt.Axis(labelLimit=400)),
            tooltip=["parameter", alt.Tooltip("importance:Q", format=".3f")],
        )
        .properties(height=max(60, 32 * len(frame)))
    )


def interpolation(view: Interpolation, metric: str) -> alt.LayerChart:
    """``metric`` (accuracy or NLL) against α, a line per split, its dashed chord, and a rule
    at the α whose weights are the run's checkpoint."""
    data = view.curve[view.curve["metric"] == metric]
    x = alt.X("alpha:Q", title="α (0 = run A, 1 = run B)", scale=alt.Scale(domain=[0, 1]))
    color = alt.Color(
        "split:N",
        title=None,
        legend=alt.Legend(orient="bottom"),
        scale=alt.Scale(domain=["val", "test"], range=["#1f77b4", "#ff7f0e"]),
    )
    base = alt.Chart(data)
    line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=color,
        tooltip=["split", "alpha", alt.Tooltip("value:Q", format=".4f")],
    )
    chord = base.mark_line(strokeDash=[4, 4], opacity=0.6).encode(x=x, y="chord:Q", color=color)
    layers = [chord, line]
    if view.alpha is not None:
        rule = alt.Chart(pd.DataFrame({"alpha": [view.alpha]})).mark_rule(color="gray")
        layers.append(
            rule.encode(x="alpha:Q", tooltip=[alt.Tooltip("alpha:Q", title="checkpoint α")])
        )
    return alt.layer(*layers).properties(height=HEIGHT, title=metric)
