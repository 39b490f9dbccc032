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
from sweeplab.dashboard.nas_view import SearchView
from sweeplab.dashboard.sweeps_view import Axes
from sweeplab.evaluation import ensemble_summary

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


def reliability(series: dict[str, pd.DataFrame]) -> alt.LayerChart | None:
    frames = [frame.assign(curve=name) for name, frame in series.items() if not frame.empty]
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray")
    diagonal = diagonal.encode(x="x:Q", y="x:Q")
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="confidence"),
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
            color=alt.Color("curve:N", title=None, legend=LEGEND),
            tooltip=["curve", "confidence", "accuracy", "count"],
        )
    )
    return (diagonal + lines).properties(height=320)


def members(rows: pd.DataFrame) -> alt.FacetChart:
    """Grouped bars, one panel per metric: each member, the member mean, the ensemble."""
    kinds = [ensemble_summary.MEMBER_MEAN, ensemble_summary.ENSEMBLE]
    bars = (
        alt.Chart(rows)
        .mark_bar()
        .encode(
            x=alt.X("model:N", sort=None, title=None, axis=alt.Axis(labelAngle=-45)),
            y=alt.Y("value:Q", title=None),
            color=alt.Color(
                "kind:N",
                title=None,
                scale=alt.Scale(domain=["member", *kinds], range=["#9e9e9e", "#1f77b4", "#ff7f0e"]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=["model", "metric", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(width=180, height=220)
    )
    order = list(dict.fromkeys(rows["metric"]))
    chart = bars.facet(column=alt.Column("metric:N", sort=order, title=None))
    return chart.resolve_scale(x="independent", y="independent")


def subnet_curves(long: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("acc:Q", title="val accuracy", scale=alt.Scale(zero=False)),
            color=alt.Color("subnet:N", title=None, legend=LEGEND),
            tooltip=["subnet", "epoch", alt.Tooltip("acc:Q", format=".4f")],
        )
        .properties(height=260)
    )


def pareto(search: SearchView) -> alt.LayerChart:
    """Every searched subnet, the Pareto front as a line, the best per budget as diamonds."""
    x = alt.X("mflops:Q", title="MFLOPs per image", scale=alt.Scale(zero=False))
    y = alt.Y(
        "val_acc:Q",
        title=f"{search.split} accuracy (inherited weights)",
        scale=alt.Scale(zero=False),
    )
    tooltip = ["arch", alt.Tooltip("val_acc:Q", format=".4f"), "mflops", "params"]
    points = (
        alt.Chart(search.candidates)
        .mark_circle(size=40, opacity=0.5, color="#1f77b4")
        .encode(x=x, y=y, tooltip=tooltip)
    )
    front = (
        alt.Chart(search.front)
        .mark_line(point=alt.OverlayMarkDef(color="#d62728", size=50), color="#d62728")
        .encode(x=x, y=y, order="mflops:Q", tooltip=tooltip)
    )
    best = (
        alt.Chart(search.best)
        .mark_point(shape="diamond", size=220, filled=True, color="#2ca02c")
        .encode(x=x, y=y, tooltip=["budget", *tooltip])
    )
    layers = [points, front, best]
    limits = search.best.dropna(subset=["max_mflops"])
    if not limits.empty:
        rules = alt.Chart(limits).mark_rule(strokeDash=[3, 3], color="gray")
        layers.insert(0, rules.encode(x="max_mflops:Q", tooltip=["budget"]))
    return alt.layer(*layers).properties(height=340)


def ranking(scatter: pd.DataFrame) -> alt.FacetChart:
    """Each scorer's score of a subnet against the subnet's standalone accuracy."""
    dots = (
        alt.Chart(scatter)
        .mark_circle(size=70)
        .encode(
            x=alt.X("score:Q", title="score", scale=alt.Scale(zero=False)),
            y=alt.Y(
                "standalone_val_acc:Q", title="standalone val accuracy", scale=alt.Scale(zero=False)
            ),
            color=alt.Color("scorer:N", legend=None),
            tooltip=[
                "arch",
                "standalone_run",
                alt.Tooltip("score:Q", format=".4g"),
                alt.Tooltip("standalone_val_acc:Q", format=".4f"),
            ],
        )
        .properties(width=300, height=260)
    )
    order = list(dict.fromkeys(scatter["scorer"]))
    chart = dots.facet(column=alt.Column("scorer:N", sort=order, title=None))
    return chart.resolve_scale(x="independent")


def mean_bars(long: pd.DataFrame) -> alt.FacetChart:
    """Each group's mean ± std (``group, metric, mean, std``), one panel per metric."""
    long = long.assign(low=long["mean"] - long["std"], high=long["mean"] + long["std"])
    base = alt.Chart(long).encode(x=alt.X("group:N", title=None, axis=alt.Axis(labelAngle=0)))
    bars = base.mark_bar().encode(
        y=alt.Y("mean:Q", title="mean ± std"), color=alt.Color("group:N", legend=None)
    )
    errors = base.mark_rule().encode(y="low:Q", y2="high:Q")
    chart = (bars + errors).properties(width=220, height=240).facet(column="metric:N")
    return chart.resolve_scale(y="independent")
