"""The dashboard app: Runs, Run and Compare pages over one run store.

Streamlit because the whole app stays plain Python beside the rest of the
project (no JavaScript build), gives pages, sortable tables and charts for
free, and serves from 127.0.0.1 with no network access; its rendered pages are
checked in a real headless browser (Playwright + Chromium) by the test suite.
Launch it with ``sweeplab dashboard``; this file is the script Streamlit runs.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from sweeplab.dashboard import nas_view, tables
from sweeplab.dashboard.index import StoreIndex
from sweeplab.evaluation import ensemble_summary
from sweeplab.tracking import layout
from sweeplab.tracking.store import RUN_STATUSES, RunEntry, filter_runs

PAGES = ("Runs", "Run", "Compare", "Tables")
DEFAULT_CURVES = ("val/cls/acc", "val/cls/nll", "train/cls/loss")
PICK_RUNS = "pick runs"
RELIABILITY_DEFAULT = ("before", "after_ts")
LEGEND = alt.Legend(orient="bottom", direction="vertical", labelLimit=600)
SEEDS = "recipe (average over seeds)"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--experiments-dir", default="experiments")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args


def _runs_dir() -> Path:
    return layout.runs_dir(_arguments().runs_dir).resolve()


@st.cache_resource
def _index(runs_dir: str) -> StoreIndex:
    return StoreIndex(runs_dir)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(max_entries=4096, show_spinner=False)
def _cached_curves(run_dir: str, mtime_ns: int) -> pd.DataFrame:
    return tables.learning_curves(Path(run_dir))


@st.cache_data(max_entries=4096, show_spinner=False)
def _cached_reliability(run_dir: str, mtime_ns: int) -> dict[str, pd.DataFrame]:
    return tables.reliability(Path(run_dir))


def curves_of(run_dir: Path) -> pd.DataFrame:
    """A run's learning curves, reread only when its metrics.csv changed."""
    return _cached_curves(str(run_dir), _mtime_ns(run_dir / layout.METRICS_FILE))


def reliability_of(run_dir: Path) -> dict[str, pd.DataFrame]:
    """A run's reliability bins, reread only when their file changed."""
    return _cached_reliability(str(run_dir), _mtime_ns(run_dir / tables.RELIABILITY_FILE))


def _label(entry: RunEntry, keys: list[str]) -> str:
    settings = ((k, tables.setting(entry, k)) for k in keys)
    described = " ".join(f"{k}={v}" for k, v in settings if v)
    return f"{entry.run_id} · {entry.name}" + (f" · {described}" if described else "")


def _open_run(run_id: str) -> None:
    """Button callback: runs before the next script run, so it may set widget state."""
    st.session_state["page"] = "Run"
    st.session_state["run"] = run_id


# --------------------------------------------------------------------------- Runs


def runs_page(entries: list[RunEntry], runs_dir: Path) -> None:
    st.header("Runs")
    if not entries:
        st.info(
            f"No runs in `{runs_dir}` yet. Launch a first run with `sweeplab train` "
            "(or a sweep: `sweeplab train -m seed=0,1,2`), then reload this page; "
            "or start the dashboard with `--runs-dir` pointing at an existing run store."
        )
        return
    left, right = st.columns([3, 1])
    text = left.text_input(
        "Filter (key=value …, as in `sweeplab runs`)",
        key="filters",
        placeholder="backbone=mlp seed=0",
    )
    statuses = right.multiselect("Status", RUN_STATUSES, key="statuses")
    try:
        listed = filter_runs(entries, where=text.split())
    except ValueError as exc:
        st.error(str(exc))
        return
    if statuses:
        listed = [e for e in listed if e.status in statuses]
    counts = {s: sum(e.status == s for e in listed) for s in RUN_STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    st.caption(f"{len(listed)} of {len(entries)} runs in {runs_dir}: {summary or 'none match'}")
    frame = tables.runs_frame(listed)
    event = st.dataframe(
        frame,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="runs_table",
        column_config={"path": None, "duration_s": st.column_config.NumberColumn(format="%.1f")},
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        run_id = str(frame.iloc[rows[0]]["run_id"])
        st.button(f"Open run {run_id}", type="primary", on_click=_open_run, args=(run_id,))
    else:
        st.caption("Select a row to open the run.")
    broken = [e for e in listed if e.problem]
    if broken:
        with st.expander(f"{len(broken)} unreadable run(s)"):
            for entry in broken:
                st.markdown(f"- `{entry.name}/{entry.run_id}`: {entry.problem}")


# --------------------------------------------------------------------------- Run


def _reliability_chart(series: dict[str, pd.DataFrame]) -> alt.LayerChart | None:
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


def _curves_chart(data: pd.DataFrame, columns: list[str], color: str | None = None):
    long = data.melt(id_vars=[c for c in ("epoch", color) if c], value_vars=columns)
    long = long.dropna(subset=["value"])
    encoding = {
        "x": alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        "y": alt.Y("value:Q", title=None),
        "tooltip": [c for c in ("epoch", color, "variable", "value") if c],
    }
    if color:
        encoding["color"] = alt.Color(f"{color}:N", title=None, legend=LEGEND)
        if len(columns) > 1:
            encoding["strokeDash"] = alt.StrokeDash("variable:N", title=None)
    else:
        encoding["color"] = alt.Color("variable:N", title=None)
    return alt.Chart(long).mark_line(point=True).encode(**encoding).properties(height=300)


def _members_chart(rows: pd.DataFrame) -> alt.FacetChart:
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


def _members_section(metrics: dict) -> None:
    """Members against their ensemble, for runs with ``ens/member_*`` metrics."""
    if not ensemble_summary.has_members(metrics):
        return
    st.subheader("Members vs ensemble")
    rows = ensemble_summary.comparison_frame(metrics, "test")
    if not rows.empty:
        st.altair_chart(_members_chart(rows))
    detector = ensemble_summary.near_ood_detector(metrics)
    note = (
        f"Near-OOD AUROC ({detector}) is the ensemble's only: members are not scored for OOD."
        if detector
        else "No near-OOD AUROC in this run's metrics."
    )
    st.caption(f"Test split. {note}")
    spread = ensemble_summary.diversity_frame(metrics)
    if not spread.empty:
        st.dataframe(spread, hide_index=True)


def _lineage_section(entry: RunEntry, known: set[str]) -> None:
    """The runs this run was made from (``record["sources"]``), each opening on this page."""
    sources = [str(s) for s in (entry.record or {}).get("sources") or []]
    if not sources:
        return
    st.subheader("Made from")
    columns = st.columns(min(len(sources), 4))
    for i, source in enumerate(sources):
        columns[i % len(columns)].button(
            source,
            key=f"source_{source}",
            on_click=_open_run,
            args=(source,),
            disabled=source not in known,
            help=None if source in known else "not in this run store",
        )


TAU_LABELS = {
    "kendall_tau": "Kendall τ",
    "kendall_tau_low": "τ low",
    "kendall_tau_high": "τ high",
    "sparse_kendall_tau": "sparse τ",
    "spearman": "Spearman ρ",
    "spearman_low": "ρ low",
    "spearman_high": "ρ high",
}


def _subnet_curves_chart(long: pd.DataFrame) -> alt.Chart:
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


def _pareto_chart(search: nas_view.SearchView) -> alt.LayerChart:
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


def _ranking_chart(scatter: pd.DataFrame) -> alt.FacetChart:
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


def _nas_file(read, run_dir: Path):
    try:
        return read(run_dir)
    except nas_view.NasFileError as exc:
        st.error(str(exc))
        return None


def _nas_section(entry: RunEntry, curves: pd.DataFrame) -> None:
    """A supernet run's subnets: largest and smallest over training, search, ranking."""
    if not nas_view.is_supernet(entry.config, (entry.record or {}).get("choices")):
        return
    st.subheader("NAS: largest and smallest subnet")
    subnets = nas_view.subnet_curves(curves)
    if subnets.empty:
        st.caption(
            "No val/cls/acc or val/nas/smallest/acc in metrics.csv yet: supernet training "
            "(`sweeplab train backbone=supernet regime=supernet`) logs them at each validation."
        )
    else:
        st.altair_chart(_subnet_curves_chart(subnets), width="stretch")

    st.subheader("NAS: Pareto front")
    search = _nas_file(nas_view.search_view, entry.path)
    if search is None:
        st.caption(
            f"No {nas_view.SEARCH_FILE} yet: `{nas_view.search_command(entry.run_id)}` "
            "searches this supernet for the best subnet under each budget."
        )
    else:
        st.altair_chart(_pareto_chart(search), width="stretch")
        st.caption(
            f"{len(search.candidates)} subnets searched by {search.method}, scored on "
            f"{search.split} (BatchNorm: {search.bn_policy}); {len(search.front)} on the front "
            "(red); the best per budget as green diamonds."
        )
        st.dataframe(
            search.best.drop(columns=["max_mflops"]),
            hide_index=True,
            column_config={
                "val_acc": st.column_config.NumberColumn(format="%.4f"),
                "mflops": st.column_config.NumberColumn("MFLOPs", format="%.3g"),
            },
        )

    st.subheader("NAS: supernet vs standalone ranking")
    ranking = _nas_file(nas_view.ranking_view, entry.path)
    if ranking is None:
        st.caption(
            f"No {nas_view.RANKING_FILE} yet: `{nas_view.rank_command(entry.run_id)}` trains "
            "sampled subnets standalone and scores how well the supernet ranks them."
        )
        return
    scorers = list(dict.fromkeys(ranking.scatter["scorer"]))
    default = [s for s in nas_view.SUPERNET_SCORERS if s in scorers] or scorers[:1]
    shown = st.multiselect("Scorers", scorers, default=default, key="nas_scorers")
    if shown:
        picked = ranking.scatter[ranking.scatter["scorer"].isin(shown)]
        st.altair_chart(_ranking_chart(picked))
    note = (
        f" Some intervals are missing: the bootstrap of {ranking.k} subnets is degenerate."
        if ranking.taus[list(nas_view.TAU_COLUMNS)].isna().to_numpy().any()
        else ""
    )
    st.caption(
        f"{ranking.k} subnets; standalone accuracy on {ranking.split}. Kendall τ and Spearman ρ "
        f"with their 95 % bootstrap intervals; sparse τ ties accuracies within 0.1 %.{note}"
    )
    st.dataframe(
        ranking.taus,
        hide_index=True,
        column_config={
            column: st.column_config.NumberColumn(label, format="%+.2f")
            for column, label in TAU_LABELS.items()
        },
    )


TEACHER_METRICS = ("test/cls/acc", "test/cls/nll", "test/cal/ece", "ood/near/energy/auroc")


def _teacher_section(entry: RunEntry, index: StoreIndex) -> None:
    """A distilled run's test metrics beside those of its teacher run(s)."""
    regime = (entry.config or {}).get("regime")
    name = regime.get("name") if isinstance(regime, dict) else regime
    choice = ((entry.record or {}).get("choices") or {}).get("regime", name)
    sources = [str(s) for s in (entry.record or {}).get("sources") or []]
    if "distill" not in (name, choice) or not sources:
        return
    st.subheader("Teacher vs student")
    rows = [{"model": f"student {entry.run_id}", **entry.metrics}]
    for source in sources:
        teacher = index.get(source)
        rows.append({"model": f"teacher {source}", **(teacher.metrics if teacher else {})})
    frame = pd.DataFrame(rows)
    shown = [m for m in TEACHER_METRICS if m in frame] or [
        c for c in frame if c.startswith("test/")
    ]
    st.dataframe(frame[["model", *shown]], hide_index=True)
    if len(sources) > 1:
        st.caption("An ensemble teacher: the student's target is the members' mean probability.")


def run_page(entries: list[RunEntry], index: StoreIndex) -> None:
    st.header("Run")
    if not entries:
        st.info("No runs yet: launch one with `sweeplab train`.")
        return
    ids = [e.run_id for e in entries]
    if st.session_state.get("run") not in ids:
        wanted = st.query_params.get("run")
        st.session_state["run"] = wanted if wanted in ids else ids[-1]
    keys = tables.varying_keys(entries)
    chosen = st.selectbox("Run", ids, key="run", format_func=lambda i: _label(index.get(i), keys))
    st.query_params["run"] = chosen
    entry = index.get(chosen)
    st.markdown(f"**{entry.name}/{entry.run_id}** — status **{entry.status}** — `{entry.path}`")
    if entry.problem:
        st.error(f"This run's record cannot be read: {entry.problem}")
        return
    if entry.error:
        st.error(entry.error)
    if entry.overrides:
        st.code(" ".join(entry.overrides), language="bash")
    _lineage_section(entry, set(ids))
    _teacher_section(entry, index)

    st.subheader("Learning curves")
    curves = curves_of(entry.path)
    numeric = [c for c in curves.columns if c not in ("epoch", "step")]
    if curves.empty or "epoch" not in curves:
        st.caption("No metrics.csv yet.")
    else:
        defaults = [c for c in DEFAULT_CURVES if c in numeric] or numeric[:1]
        picked = st.multiselect("Curves", numeric, default=defaults, key="run_curves")
        if picked:
            st.altair_chart(_curves_chart(curves, picked), width="stretch")

    st.subheader("Reliability")
    variants = reliability_of(entry.path)
    if not variants:
        st.caption("No plots/reliability_test.json.")
    else:
        default = [v for v in RELIABILITY_DEFAULT if v in variants] or list(variants)[:1]
        shown = st.multiselect("Variants", list(variants), default=default, key="run_variants")
        chart = _reliability_chart({v: variants[v] for v in shown})
        if chart is not None:
            st.altair_chart(chart, width="stretch")

    _members_section(entry.metrics)
    _nas_section(entry, curves)

    pictures = tables.pictures(entry.path)
    st.subheader("Pictures")
    if not pictures:
        st.caption("No plots/*.png.")
    columns = st.columns(2)
    for i, path in enumerate(pictures):
        columns[i % 2].image(str(path), caption=path.stem, width="stretch")

    st.subheader("Metrics")
    families = tables.metric_families(entry.metrics)
    titles = {
        "classification": "Classification (split/cls/*)",
        "calibration": "Calibration (split/cal/*)",
        "ood": "OOD (ood/set/detector/metric)",
        "shift": "Shift (shift/corruption/severity/metric)",
        "other": "Other",
    }
    shown = [k for k, frame in families.items() if not frame.empty]
    if not shown:
        st.caption("No metrics in the record (yet).")
    for key, tab in zip(shown, st.tabs([titles[k] for k in shown]), strict=True):
        tab.dataframe(families[key], hide_index=True)

    st.subheader("Config")
    st.json(entry.config, expanded=1)


# --------------------------------------------------------------------------- Compare


def compare_page(entries: list[RunEntry]) -> None:
    st.header("Compare")
    readable = [e for e in entries if e.record is not None]
    if not readable:
        st.info("No readable runs yet: launch some with `sweeplab train -m seed=0,1,2`.")
        return
    keys = tables.varying_keys(readable)
    mode = st.radio("Compare", [PICK_RUNS, SEEDS, *keys], horizontal=True, key="compare_mode")
    if mode == PICK_RUNS:
        by_id = {e.run_id: e for e in readable}
        complete = [e.run_id for e in readable if e.status == "complete"]
        default = complete[-3:] or [e.run_id for e in readable[-3:]]
        picked = st.multiselect(
            "Runs", list(by_id), default=default, format_func=lambda i: _label(by_id[i], keys)
        )
        among = tables.varying_keys([by_id[i] for i in picked])  # short labels: what differs
        groups = {_label(by_id[i], among): [by_id[i]] for i in picked}
    else:
        groups = tables.group_runs(readable, None if mode == SEEDS else mode)
        st.caption(
            ", ".join(f"{label}: {len(members)} run(s)" for label, members in groups.items())
        )
    if not groups:
        st.caption("Pick at least one run.")
        return

    st.subheader("Learning curves")
    curves = {label: [curves_of(e.path) for e in members] for label, members in groups.items()}
    columns = sorted(
        {c for frames in curves.values() for frame in frames for c in frame} - {"epoch", "step"}
    )
    if columns:
        default = next((c for c in DEFAULT_CURVES if c in columns), columns[0])
        column = st.selectbox("Curve", columns, index=columns.index(default))
        frames = [
            tables.mean_curve(run_curves, column).assign(run=label)
            for label, run_curves in curves.items()
        ]
        data = pd.concat(frames, ignore_index=True)
        st.altair_chart(_curves_chart(data, [column], color="run"), width="stretch")

    st.subheader("Reliability")
    variants: dict[str, pd.DataFrame] = {}
    for label, members in groups.items():
        for name, frame in reliability_of(members[0].path).items():
            variants[f"{label} · {name}"] = frame
    names = sorted({key.rsplit(" · ", 1)[1] for key in variants})
    if names:
        first = next((names.index(v) for v in RELIABILITY_DEFAULT if v in names), 0)
        variant = st.selectbox("Variant", names, index=first, key="compare_variant")
        chosen = {
            k.rsplit(" · ", 1)[0]: f for k, f in variants.items() if k.endswith(f" · {variant}")
        }
        st.altair_chart(_reliability_chart(chosen), width="stretch")
        if any(len(m) > 1 for m in groups.values()):
            st.caption("Reliability of each group's first run.")

    st.subheader("Metrics")
    available = sorted({m for members in groups.values() for e in members for m in e.metrics})
    default = tables.present_metrics(readable)[:3]
    metrics = st.multiselect("Metrics", available, default=default, key="compare_metrics")
    if metrics:
        summary = tables.aggregate(groups, metrics)
        long = pd.DataFrame(
            [
                {
                    "group": row["group"],
                    "metric": m,
                    "mean": row[f"{m} mean"],
                    "std": row[f"{m} std"] if pd.notna(row[f"{m} std"]) else 0.0,
                }
                for _, row in summary.iterrows()
                for m in metrics
            ]
        )
        long["low"], long["high"] = long["mean"] - long["std"], long["mean"] + long["std"]
        base = alt.Chart(long).encode(x=alt.X("group:N", title=None, axis=alt.Axis(labelAngle=0)))
        bars = base.mark_bar().encode(
            y=alt.Y("mean:Q", title="mean ± std"), color=alt.Color("group:N", legend=None)
        )
        errors = base.mark_rule().encode(y="low:Q", y2="high:Q")
        chart = (bars + errors).properties(width=220, height=240).facet(column="metric:N")
        st.altair_chart(chart.resolve_scale(y="independent"))
        st.dataframe(summary, hide_index=True)


# --------------------------------------------------------------------------- tables

# Hydra's compose state is process-global and Streamlit serves sessions in threads.
_COMPOSE_LOCK = threading.Lock()


@st.cache_resource
def _resolved_table(spec_path: str, spec_mtime_ns: int, runs_dir: str):
    """A spec's cells and run ids (composing is the slow part: once per spec version)."""
    from sweeplab.tables.cells import resolve
    from sweeplab.tables.spec import load_spec

    with _COMPOSE_LOCK:
        return resolve(load_spec(spec_path), runs_dir)


def tables_page(runs_dir: Path) -> None:
    """The paper-table specs of ``--experiments-dir``, rendered from this run store."""
    from sweeplab.tables.render import render
    from sweeplab.tables.spec import SpecError

    experiments_dir = Path(_arguments().experiments_dir).resolve()
    st.header("Tables")
    specs = sorted(experiments_dir.glob("*.yaml"))
    if not specs:
        st.info(
            f"No table specs in `{experiments_dir}`. Write one (see experiments/README.md) or "
            "start the dashboard with `--experiments-dir`."
        )
        return
    path = st.selectbox("Table spec", specs, format_func=lambda p: p.name)
    try:
        table = _resolved_table(str(path), _mtime_ns(path), str(runs_dir))
    except SpecError as exc:
        st.error(str(exc))
        return
    table.reload()  # records change while the table is on screen
    st.markdown(render(table, "md"))
    st.caption(f"`sweeplab table {path} --launch` runs the missing cells.")
    for fmt, mime in (("latex", "text/x-tex"), ("csv", "text/csv")):
        st.download_button(
            f"Download {fmt.upper()}", render(table, fmt), f"{path.stem}.{fmt}", mime=mime
        )


# --------------------------------------------------------------------------- main


def main() -> None:
    st.set_page_config(page_title="sweeplab", layout="wide")
    runs_dir = _runs_dir()
    index = _index(str(runs_dir))
    entries = index.refresh()
    st.sidebar.title("sweeplab")
    st.sidebar.caption(f"run store: `{runs_dir}`\n\n{len(entries)} runs")
    if "page" not in st.session_state:  # a shared link opens the page it names
        requested = st.query_params.get("page", "Runs")
        st.session_state["page"] = requested if requested in PAGES else "Runs"
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.query_params["page"] = page
    if st.sidebar.button("Reload"):
        st.rerun()
    if page == "Runs":
        runs_page(entries, runs_dir)
    elif page == "Run":
        run_page(entries, index)
    elif page == "Compare":
        compare_page(entries)
    else:
        tables_page(runs_dir)


main()
