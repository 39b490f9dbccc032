"""The dashboard app: Runs, Run and Compare pages over one run store.

Streamlit because the whole app stays plain Python beside the rest of the
project (no JavaScript build), gives pages, sortable tables and charts for
free, and serves from 127.0.0.1 with no network access; its rendered pages are
checked in a real headless browser (Playwright + Chromium) by the test suite.
Launch it with ``sweeplab dashboard``; this file is the script Streamlit runs.
The chart builders (:mod:`.charts`, and with them altair) are imported inside the
pages that draw, so the Runs page, the first a visitor sees, does not wait for them.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from sweeplab.dashboard import merge_view, nas_view, sweeps_view, tables
from sweeplab.dashboard.config_diff import config_diff
from sweeplab.dashboard.index import StoreIndex
from sweeplab.evaluation import ensemble_summary
from sweeplab.evaluation.roc_points import SUFFIX as ROC_SUFFIX
from sweeplab.evaluation.roc_points import read_roc_points
from sweeplab.tracking import layout
from sweeplab.tracking.store import RUN_STATUSES, RunEntry, filter_runs, metric_number

PAGES = ("Runs", "Run", "Compare", "Sweeps", "Diff", "Tables")
DEFAULT_CURVES = ("val/cls/acc", "val/cls/nll", "train/cls/loss")
PICK_RUNS = "pick runs"
RELIABILITY_DEFAULT = ("before", "after_ts")
SEEDS = "recipe (average over seeds)"
ANY = "(any)"
GRID_HEIGHT = 640  # px: about 18 rows on screen, the rest scrolls inside the grid
NARROW_PICTURE = 460  # px: plots this wide or less go two to a row
WIDE_PICTURE = 960  # px: wider plots are shrunk to the page
ROC_SHOWN = 4  # detectors drawn at first: the best by AUROC


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
    """Debug runs are indexed too; the sidebar's switch decides whether pages show them."""
    return StoreIndex(runs_dir, include_debug=True)


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


def _open_diff(a: str, b: str) -> None:
    st.session_state["page"] = "Diff"
    st.session_state["diff_a"], st.session_state["diff_b"] = a, b


# --------------------------------------------------------------------------- Runs


@st.cache_data(max_entries=64, show_spinner=False)
def _runs_frame(runs_dir: str, version: int, shown: tuple[str, ...], _listed: list[RunEntry]):
    """The runs table, built once per store version and listing (``shown``: the run
    paths), so a new visitor or a rerun reuses it instead of reading every record again."""
    return tables.runs_frame(_listed)


@st.cache_data(max_entries=64, show_spinner=False)
def _cached_keys(runs_dir: str, version: int, shown: tuple[str, ...], _entries: list[RunEntry]):
    return tables.varying_keys(_entries)


def varying_keys(index: StoreIndex, entries: list[RunEntry]) -> list[str]:
    """:func:`tables.varying_keys`, computed once per store version and set of runs (the
    run pickers' labels need it on every rerun)."""
    shown = tuple(str(e.path) for e in entries)
    return _cached_keys(str(index.runs_dir), index.version, shown, entries)


def runs_page(entries: list[RunEntry], runs_dir: Path, version: int) -> None:
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
    frame = _runs_frame(str(runs_dir), version, tuple(str(e.path) for e in listed), listed)
    metrics = [c for c in frame.columns if c in tables.KEY_METRICS]
    event = st.dataframe(
        frame,
        hide_index=True,
        height=min(GRID_HEIGHT, 38 + 35 * len(frame)),  # as tall as the runs, then it scrolls
        on_select="rerun",
        selection_mode="multi-row",
        key="runs_table",
        column_config={
            "path": None,
            "duration_s": st.column_config.NumberColumn(format="%.1f"),
            **{m: st.column_config.NumberColumn(format="%.4f") for m in metrics},
        },
    )
    rows = event.selection.rows if event is not None else []
    picked = [str(frame.iloc[row]["run_id"]) for row in rows]
    if len(picked) == 1:
        st.button(f"Open run {picked[0]}", type="primary", on_click=_open_run, args=(picked[0],))
    elif len(picked) == 2:
        st.button(
            f"Diff {picked[0]} and {picked[1]}", type="primary", on_click=_open_diff, args=picked
        )
    else:
        st.caption("Select a row to open the run, or two to diff their configs.")
    broken = [e for e in listed if e.problem]
    if broken:
        with st.expander(f"{len(broken)} unreadable run(s)"):
            for entry in broken:
                st.markdown(f"- `{entry.name}/{entry.run_id}`: {entry.problem}")


# --------------------------------------------------------------------------- Run


def _curve_panels(data: pd.DataFrame, columns: list[str], color: str | None = None) -> None:
    """Accuracy, loss and any other kind of curve side by side, each on its own y axis."""
    from sweeplab.dashboard import charts

    panels = charts.curve_panels(columns)
    for slot, (kind, picked) in zip(st.columns(len(panels)), panels.items(), strict=True):
        slot.altair_chart(charts.curves(data, picked, kind, color), width="stretch")


def _members_section(metrics: dict) -> None:
    """Members against their ensemble, for runs with ``ens/member_*`` metrics."""
    from sweeplab.dashboard import charts

    if not ensemble_summary.has_members(metrics):
        return
    st.subheader("Members vs ensemble")
    rows = ensemble_summary.comparison_frame(metrics, "test")
    if not rows.empty:
        st.altair_chart(charts.members(rows))
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


def _nas_file(read, run_dir: Path):
    try:
        return read(run_dir)
    except nas_view.NasFileError as exc:
        st.error(str(exc))
        return None


def _nas_section(entry: RunEntry, curves: pd.DataFrame) -> None:
    """A supernet run's subnets: largest and smallest over training, search, ranking."""
    from sweeplab.dashboard import charts

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
        st.altair_chart(charts.subnet_curves(subnets), width="stretch")

    st.subheader("NAS: Pareto front")
    search = _nas_file(nas_view.search_view, entry.path)
    if search is None:
        st.caption(
            f"No {nas_view.SEARCH_FILE} yet: `{nas_view.search_command(entry.run_id)}` "
            "searches this supernet for the best subnet under each budget."
        )
    else:
        st.altair_chart(charts.pareto(search), width="stretch")
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
        st.altair_chart(charts.ranking(picked))
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


def _pictures(paths: list[Path]) -> None:
    """Each plot at the pixel width it was drawn for: narrow ones two to a row, wide ones
    alone; only a plot wider than the page is shrunk to fit."""
    narrow: list[Path] = []

    def flush() -> None:
        for slot, path in zip(st.columns(2), narrow, strict=False):
            slot.image(str(path), caption=path.stem, width=tables.png_width(path) or "stretch")
        narrow.clear()

    for path in paths:
        width = tables.png_width(path)
        if width is not None and width <= NARROW_PICTURE:
            narrow.append(path)
            if len(narrow) == 2:
                flush()
            continue
        flush()
        fits = width is not None and width <= WIDE_PICTURE
        st.image(str(path), caption=path.stem, width=width if fits else "stretch")
    flush()


def _roc_section(entry: RunEntry) -> set[str]:
    """Each OOD set's ROC curves for the detectors picked (the best by AUROC at first);
    returns the stems of the ROC pictures drawn here instead."""
    from sweeplab.dashboard import charts

    files = sorted((entry.path / layout.PLOTS_DIR).glob(f"ood_*{ROC_SUFFIX}"))
    sets = {path.name[len("ood_") : -len(ROC_SUFFIX)]: read_roc_points(path) for path in files}
    sets = {name: curves for name, curves in sets.items() if curves}
    if not sets:
        return set()
    st.subheader("OOD: ROC curves")
    left, right = st.columns([1, 3])
    chosen = left.selectbox("OOD set", list(sets), key="roc_set")
    curves = sets[chosen]
    by_auroc = sorted(curves, key=lambda d: -float(curves[d].get("auroc", 0.0)))
    shown = right.multiselect(
        "Detectors (best AUROC first)", by_auroc, default=by_auroc[:ROC_SHOWN], key=f"roc_{chosen}"
    )
    if shown:
        points = pd.concat(
            [
                pd.DataFrame(
                    {
                        "detector": f"{d} (AUROC {curves[d]['auroc']:.3f})"
                        if "auroc" in curves[d]
                        else d,
                        "fpr": curves[d]["fpr"],
                        "tpr": curves[d]["tpr"],
                        "order": range(len(curves[d]["fpr"])),
                    }
                )
                for d in shown
            ],
            ignore_index=True,
        )
        st.altair_chart(charts.roc(points, f"test vs {chosen}"), width="content")
    return {f"ood_{name}_roc" for name in sets}


def _merge_section(entry: RunEntry, index: StoreIndex, known: set[str]) -> set[str]:
    """A merge's ingredients beside the merge and their output ensemble; an interpolation's
    curve between its two runs. Returns the stems of the pictures drawn here instead."""
    from sweeplab.dashboard import charts

    if not merge_view.is_merge(entry):
        return set()
    st.subheader(f"Merge: ingredients ({merge_view.method(entry) or 'merge'})")
    frame = merge_view.ingredients_frame(entry, index.get)
    numbers = {
        m: st.column_config.NumberColumn(format="%.4f") for m in merge_view.INGREDIENT_METRICS
    }
    st.dataframe(frame.drop(columns=["role"]), hide_index=True, column_config=numbers)
    notes = []
    if "kept" in frame:
        kept = int(frame["kept"].fillna(False).astype(bool).sum())
        notes.append(f"the greedy soup kept {kept} of {int((frame['role'] == 'ingredient').sum())}")
    elif merge_view.method(entry) == "greedy":
        notes.append("the record does not say which ingredients the greedy soup kept")
    missing = [r for r in frame["run"] if r and r != entry.run_id and r not in known]
    if missing:
        notes.append(f"not in this store: {', '.join(missing)}")
    if notes:
        text = "; ".join(notes)
        st.caption(text[0].upper() + text[1:] + ".")
    try:
        curve = merge_view.interpolation(entry.path)
    except merge_view.InterpolationFileError as exc:
        st.error(str(exc))
        return set()
    if curve is None:
        return set()
    st.subheader("Merge: interpolation")
    a, b = [*curve.runs, "A", "B"][:2]
    for slot, metric in zip(st.columns(2), merge_view.CURVE_METRICS.values(), strict=True):
        slot.altair_chart(charts.interpolation(curve, metric), width="stretch")
    at = f"; the checkpoint is α = {curve.alpha:g} (grey rule)" if curve.alpha is not None else ""
    st.caption(
        f"(1 − α) · {a} + α · {b}, BatchNorm {curve.bn or 'as merged'}; dashed: the chord "
        f"between the end points, which the barrier is measured from{at}."
    )
    heights = merge_view.barriers(entry.metrics)
    if not heights.empty:
        st.dataframe(heights, hide_index=True)
    return {"interpolation"}


def run_page(entries: list[RunEntry], index: StoreIndex) -> None:
    from sweeplab.dashboard import charts

    st.header("Run")
    if not entries:
        st.info("No runs yet: launch one with `sweeplab train`.")
        return
    ids = [e.run_id for e in entries]
    if st.session_state.get("run") not in ids:
        wanted = st.query_params.get("run")
        st.session_state["run"] = wanted if wanted in ids else ids[-1]
    keys = varying_keys(index, entries)
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
            _curve_panels(curves, picked)

    st.subheader("Reliability")
    variants = reliability_of(entry.path)
    if not variants:
        st.caption("No plots/reliability_test.json.")
    else:
        default = [v for v in RELIABILITY_DEFAULT if v in variants] or list(variants)[:1]
        shown = st.multiselect("Variants", list(variants), default=default, key="run_variants")
        chart = charts.reliability({v: variants[v] for v in shown})
        if chart is not None:
            st.altair_chart(chart, width="stretch")

    drawn = _roc_section(entry)
    _members_section(entry.metrics)
    drawn |= _merge_section(entry, index, set(ids))
    _nas_section(entry, curves)

    pictures = [p for p in tables.pictures(entry.path) if p.stem not in drawn]
    st.subheader("Pictures")
    if not pictures:
        st.caption("No plots/*.png.")
    _pictures(pictures)

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


def _pick(where, label: str, options: list[str], key: str) -> str:
    """A selectbox that falls back to its first option when its remembered one is gone."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]
    return where.selectbox(label, options, key=key)


def _compare_scope(entries: list[RunEntry]) -> list[RunEntry]:
    """The runs of the data set and recipe picked (at first the newest complete run's)."""
    data_sets, recipes = tables.scope_options(entries)
    left, right = st.columns(2)
    data = _pick(left, "Data set", [*data_sets, ANY], "compare_data")
    names = recipes.get(data) if data != ANY else sorted({n for v in recipes.values() for n in v})
    recipe = _pick(right, "Recipe (run name)", [*(names or []), ANY], "compare_recipe")
    return tables.in_scope(
        entries, None if data == ANY else data, None if recipe == ANY else recipe
    )


def compare_page(entries: list[RunEntry]) -> None:
    from sweeplab.dashboard import charts

    st.header("Compare")
    if not any(e.record is not None for e in entries):
        st.info("No readable runs yet: launch some with `sweeplab train -m seed=0,1,2`.")
        return
    readable = _compare_scope(entries)
    if not readable:
        st.caption("No runs of this data set and recipe.")
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
        by = None if mode == SEEDS else mode
        groups = tables.group_runs(readable, by)
        st.caption(
            ", ".join(f"{label}: {len(members)} run(s)" for label, members in groups.items())
        )
        pooled = {label: tables.pooled_over(m, by) for label, m in groups.items()}
        pooled = {label: keys for label, keys in pooled.items() if keys}
        if pooled:
            st.warning(
                "Some groups pool runs that differ in more than the seed: "
                + "; ".join(f"{label} over {', '.join(k)}" for label, k in pooled.items())
                + ". Their means mix those settings; group by one of them, or narrow the "
                "data set and recipe above."
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
        st.altair_chart(charts.curves(data, [column], column, color="run"), width="stretch")

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
        st.altair_chart(charts.reliability(chosen), width="stretch")
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
        st.altair_chart(charts.mean_bars(long))
        st.dataframe(summary, hide_index=True)


# --------------------------------------------------------------------------- sweeps

OBJECTIVE = "objective"


@st.cache_data(ttl=5, show_spinner=False)
def _sweep_options(runs_dir: str) -> list[sweeps_view.SweepOption]:
    return sweeps_view.options(Path(runs_dir))


def _metric_choice(runs: list[RunEntry], first: list[str]) -> str:
    available = sorted({m for e in runs for m in e.metrics})
    preferred = [m for m in (*tables.KEY_METRICS, "val/cls/acc") if m in available]
    options = [*first, *preferred, *(m for m in available if m not in preferred)]
    return _pick(st, "Colour by metric", options, "sweep_metric")


def _sweep_table(option: sweeps_view.SweepOption, entries: list[RunEntry]):
    """A sweep's runs as (table, axes keys, metric); None when it has no readable run."""
    runs = sweeps_view.sweep_runs(option, entries)
    if not runs:
        st.caption("None of this sweep's runs is readable in the store (yet).")
        return None
    metric = _metric_choice(runs, [])
    table, keys = sweeps_view.runs_table(runs, [metric])
    st.caption(f"{len(runs)} runs; axes: the result-changing settings that differ between them.")
    return table, keys, metric


def _study_table(option: sweeps_view.SweepOption, entries: list[RunEntry]):
    """A study's complete trials as (table, axes keys, metric), with the importances."""
    from sweeplab.dashboard import charts

    study = sweeps_view.load_study(option)
    view = sweeps_view.study_view(study, entries)
    if view.trials.empty:
        st.caption(f"Study {option.study} has no complete trial yet.")
        return None
    objective = f"{OBJECTIVE} ({view.metric}, {view.direction})"
    metric = _metric_choice(list(view.runs.values()), [objective])
    table = view.trials.copy()
    table[sweeps_view.RUN] = [
        r or f"trial {t}" for t, r in zip(table["trial"], table[sweeps_view.RUN], strict=True)
    ]
    if metric == objective:
        table = table.rename(columns={OBJECTIVE: metric})
    else:
        table[metric] = [
            None if (run := view.runs.get(t)) is None else metric_number(run.metrics.get(metric))
            for t in table["trial"]
        ]
    found = sum(bool(r) for r in view.trials[sweeps_view.RUN])
    st.caption(
        f"{len(table)} complete trials of study {option.study}; {found} found as runs in this "
        "store (by the study's base overrides and the trial's parameters)."
    )
    st.subheader("Parameter importances")
    try:
        scores = sweeps_view.importances(study, view, None if metric == objective else metric)
    except ValueError as exc:
        st.caption(f"Optuna cannot compute importances here: {exc}")
    else:
        st.altair_chart(charts.importances(scores), width="stretch")
        st.caption(f"Optuna's fANOVA importances (seed 0) of each parameter for {metric}.")
    return table, view.params, metric


def sweeps_page(entries: list[RunEntry], runs_dir: Path) -> None:
    """One sweep or study: its runs as parallel coordinates of their settings and a metric."""
    from sweeplab.dashboard import charts

    st.header("Sweeps")
    found = _sweep_options(str(runs_dir))
    if not found:
        st.info(
            f"No sweeps or Optuna studies in `{runs_dir}` yet: launch a sweep with "
            "`sweeplab train -m seed=0,1,2 augment=none,mixup` (or `sweeplab table <spec> "
            "--launch`, named after the spec), or a study with "
            "`sweeplab search hparams_search=digits_optuna`."
        )
        return
    labels = [o.label for o in found]
    option = found[labels.index(_pick(st, "Sweep or study", labels, "sweep"))]
    made = (_sweep_table if option.kind == "sweep" else _study_table)(option, entries)
    if made is None:
        return
    table, keys, metric = made
    st.subheader("Parallel coordinates")
    if not keys:
        st.caption("Its runs do not differ in any result-changing setting: nothing to spread out.")
    elif table[metric].notna().sum() == 0:
        st.caption(f"No run of it has {metric}.")
    else:
        axes = sweeps_view.parallel_axes(table, keys, metric)
        st.altair_chart(charts.parallel(axes, metric), width="stretch")
        st.caption(
            "One line per run; each axis scaled on its own (numbers low to high, bottom to top; "
            "words in alphabetical order); colour: " + metric + "."
        )
    st.dataframe(
        table, hide_index=True, column_config={metric: st.column_config.NumberColumn(format="%.4f")}
    )


# --------------------------------------------------------------------------- diff


def diff_page(entries: list[RunEntry], index: StoreIndex) -> None:
    """Two runs' resolved configs, key by key, where they differ."""
    st.header("Config diff")
    readable = [e for e in entries if e.record is not None]
    if len(readable) < 2:
        st.info("A diff needs two readable runs; this store has " + str(len(readable)) + ".")
        return
    ids = [e.run_id for e in readable]
    for key, default in (("diff_a", ids[-2]), ("diff_b", ids[-1])):
        wanted = st.query_params.get(key.removeprefix("diff_"))
        if st.session_state.get(key) not in ids:
            st.session_state[key] = wanted if wanted in ids else default
    keys = varying_keys(index, readable)
    left, right = st.columns(2)
    label = lambda i: _label(index.get(i), keys)  # noqa: E731
    a = left.selectbox("Run A", ids, key="diff_a", format_func=label)
    b = right.selectbox("Run B", ids, key="diff_b", format_func=label)
    st.query_params["a"], st.query_params["b"] = a, b
    every = st.toggle(
        "Also keys that change no result (paths, loggers, progress bars …)", key="diff_all"
    )
    frame = config_diff(index.get(a).config, index.get(b).config, all_keys=every)
    matters = int(frame["changes results"].sum())
    if frame.empty:
        st.success(f"{a} and {b} agree on every config key that can change results.")
        return
    st.caption(
        f"{len(frame)} key{'s differ' if len(frame) != 1 else ' differs'}; {matters} of them can change results."
    )
    st.dataframe(
        frame.rename(columns={"a": f"A: {a}", "b": f"B: {b}"}),
        hide_index=True,
        height=min(GRID_HEIGHT, 38 + 35 * len(frame)),
    )


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
    everything = index.refresh()
    st.sidebar.title("sweeplab")
    show_debug = st.sidebar.toggle(
        "Show debug runs",
        key="show_debug",
        help="Runs of the debug presets (debug=fdr, limit, overfit) check that a config runs; "
        "their numbers are no result, so every page leaves them out unless this is on.",
    )
    entries = everything if show_debug else [e for e in everything if not e.debug_run]
    hidden = len(everything) - len(entries)
    note = f" ({hidden} debug run{'s' * (hidden != 1)} hidden)" if hidden else ""
    st.sidebar.caption(f"run store: `{runs_dir}`\n\n{len(entries)} runs{note}")
    if "page" not in st.session_state:  # a shared link opens the page it names
        requested = st.query_params.get("page", "Runs")
        st.session_state["page"] = requested if requested in PAGES else "Runs"
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.query_params["page"] = page
    if st.sidebar.button("Reload"):
        st.rerun()
    if page == "Runs":
        runs_page(entries, runs_dir, index.version)
    elif page == "Run":
        run_page(entries, index)
    elif page == "Compare":
        compare_page(entries)
    elif page == "Sweeps":
        sweeps_page(entries, runs_dir)
    elif page == "Diff":
        diff_page(entries, index)
    else:
        tables_page(runs_dir)


main()
