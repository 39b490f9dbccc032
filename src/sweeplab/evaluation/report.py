"""Every evaluation metric of a run, from its eval cache alone (the model is not needed).

Classification and calibration on val and test (calibrators fitted on val), OOD
detection on every configured set, accuracy/NLL/ECE under every corruption, and
the plots of all three. Models with M ≥ 2 members also get ``ens/…`` (every
member's own metrics, their mean, the members' diversity), temperatures fitted
per member (``test/cal/*_ts_members``) and ``plots/ensemble_members.png``.
``sweeplab train`` calls this after its forward passes; ``sweeplab eval`` calls it
again with a changed ``eval`` config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sweeplab.evaluation.cache import load_outputs, load_tensors
from sweeplab.evaluation.ood import OODSetOutputs, evaluate_ood
from sweeplab.evaluation.passes import (
    HEAD_CACHE,
    SHIFT_CACHE,
    model_scores_cache,
    ood_cache_name,
    ood_set_configs,
)
from sweeplab.evaluation.progress import PERF_PREFIX, EvalProgress, advancing
from sweeplab.evaluation.source_ensemble import source_ensemble_metrics
from sweeplab.files import atomic_write_text
from sweeplab.metrics.classification import (
    accuracy,
    classification_metrics,
    ensemble_log_probs,
    nll,
)
from sweeplab.tracking.layout import PLOTS_DIR

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


# Prefixes of evaluation metrics: OOD detection, dataset shift, the ``ens/`` and
# ``nas/`` metrics that regimes with several members are evaluated on, and the times
# of the evaluation's phases.
EVAL_PREFIXES = ("ood/", "shift/", "ens/", "nas/", PERF_PREFIX)
# The family each per-member metric goes under, as the ensemble's own does.
MEMBER_FAMILIES = {"acc": "cls", "nll": "cls", "brier": "cls", "ece": "cal", "conf_gap": "cal"}


def is_eval_metric(key: str) -> bool:
    """Metric keys of evaluation: ``sweeplab eval --replace`` replaces them all at once."""
    return key.startswith(EVAL_PREFIXES) or "/cls/" in key or "/cal/" in key


def merge_eval_metrics(
    old: dict[str, float], new: dict[str, float], groups: dict[str, str]
) -> dict[str, float]:
    """``old`` updated with the recomputed ``new`` metrics, with the means recomputed.

    What ``new`` does not recompute (another detector, calibrator, OOD set or
    corruption) is kept from ``old``. The means over several of them are then taken
    again over the merged keys: ``ood/<group>/<detector>/<metric>`` over the sets of
    the group (``groups``: set name -> ``near``/``far``) that have that detector, and
    ``shift/<corruption>/mean/<metric>`` and ``shift/mean/<metric>`` over every
    corruption and severity, so that no mean covers only what was recomputed.
    """
    from sweeplab.data.ood_sets import GROUPS

    merged = {**old, **new}
    by_group: dict[str, dict[str, float]] = {}
    shift: dict[str, dict[str, list[float]]] = {}
    for key, value in merged.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "ood" and parts[1] not in GROUPS:
            group = groups.get(parts[1])
            if group in GROUPS:
                mean_key = f"ood/{group}/{parts[2]}/{parts[3]}"
                by_group.setdefault(mean_key, {})[parts[1]] = value
        elif len(parts) == 4 and parts[0] == "shift" and parts[2].isdigit():
            shift.setdefault(parts[3], {}).setdefault(parts[1], []).append(value)
    for mean_key, sets in by_group.items():
        merged[mean_key] = _mean(sets.values())
    for metric, by_name in shift.items():
        for name, values in by_name.items():
            merged[f"shift/{name}/mean/{metric}"] = _mean(values)
        merged[f"shift/mean/{metric}"] = _mean(v for values in by_name.values() for v in values)
    return merged


def load_heads(run_dir: Path) -> tuple[list, str]:
    """The members' classifiers from ``head.pt`` and, when there are none, why.

    A ``head.pt`` holding one ``weight``/``bias`` pair (written before member heads
    existed) is a single model's head.
    """
    from sweeplab.evaluation.cache import cache_file
    from sweeplab.evaluation.detectors import LinearHead

    if not cache_file(run_dir, HEAD_CACHE).exists():
        return [], "the eval cache holds no classifier head"
    data = load_tensors(run_dir, HEAD_CACHE)
    parts = data.get("heads", [data])
    heads = [LinearHead(part["weight"], part["bias"]) for part in parts]
    return heads, "" if heads else str(data.get("unavailable") or "head.pt holds no heads")


def evaluate_cached(
    run_dir: Path, eval_cfg: DictConfig, progress: EvalProgress | None = None
) -> EvalReport:
    """All metrics (and plots, if ``eval.plots``) from ``run_dir/eval_cache``.

    ``progress`` shows and times the phases (calibration, members, detectors, shift).
    """
    run_dir = Path(run_dir)
    progress = progress or EvalProgress(show=False)
    report = EvalReport()
    plots = bool(eval_cfg.get("plots", True))
    val, test = load_outputs(run_dir, "val"), load_outputs(run_dir, "test")
    for split, outputs in (("val", val), ("test", test)):
        report.metrics.update(classification_metrics(outputs.member_logits, outputs.labels, split))
    calibrators = list(eval_cfg.calibration.get("calibrators") or [])
    with progress.phase("calibration", len(calibrators), unit="calibrator") as bar:
        _calibration(report, val, test, eval_cfg, run_dir, plots, bar)
    if test.num_members > 1:
        with progress.phase("members", unit="step"):
            _members(report, val, test, eval_cfg)
            if plots:
                _members_plot(report, run_dir)
    detectors = eval_cfg.ood.get("detectors") or []
    if ood_set_configs(eval_cfg) and detectors:
        with progress.phase("detectors", len(detectors), unit="detector") as bar:
            _ood(report, val, test, eval_cfg, run_dir, plots, bar)
    if eval_cfg.get("shift") and eval_cfg.shift.get("corruptions"):
        with progress.phase("shift_metrics", unit="step"):
            _shift(report, eval_cfg, run_dir)
    n_bins = int(eval_cfg.calibration.get("n_bins", 15))
    report.metrics.update(source_ensemble_metrics(run_dir, test.labels, n_bins))
    return report


def _members(report, val, test, eval_cfg) -> None:
    """``ens/member_<m>/<split>/…``, ``ens/member_mean/<split>/…`` and ``ens/<split>/…``."""
    from sweeplab.metrics.ensemble import diversity_metrics, member_metrics

    n_bins = int(eval_cfg.calibration.get("n_bins", 15))
    for split, outputs in (("val", val), ("test", test)):
        members = member_metrics(outputs.member_logits, outputs.labels, n_bins=n_bins)
        for name in members[0]:
            family = MEMBER_FAMILIES[name]
            for m, values in enumerate(members):
                report.metrics[f"ens/member_{m}/{split}/{family}/{name}"] = values[name]
            report.metrics[f"ens/member_mean/{split}/{family}/{name}"] = _mean(
                values[name] for values in members
            )
        for name, value in diversity_metrics(outputs.member_logits).items():
            report.metrics[f"ens/{split}/{name}"] = value


def _members_plot(report, run_dir: Path) -> None:
    from sweeplab.evaluation.ensemble_summary import comparison_rows, diversity
    from sweeplab.evaluation.plots import ensemble_members_plot

    relative = Path(PLOTS_DIR) / "ensemble_members.png"
    ensemble_members_plot(
        comparison_rows(report.metrics, "test"),
        run_dir / relative,
        title="test: members vs ensemble",
        diversity=diversity(report.metrics, "test"),
    )
    report.artifacts[f"{PLOTS_DIR}/ensemble_members"] = str(relative)


def _calibration(report, val, test, eval_cfg, run_dir: Path, plots: bool, bar=None) -> None:
    from sweeplab.evaluation.calibrators import CALIBRATORS, MemberwiseTemperatureScaling
    from sweeplab.metrics.calibration import (
        calibration_metrics,
        confidence_gap,
        reliability_bins,
    )

    n_bins = int(eval_cfg.calibration.get("n_bins", 15))
    val_log_probs = ensemble_log_probs(val.member_logits).float()
    test_log_probs = ensemble_log_probs(test.member_logits).float()
    for split, log_probs, labels in (
        ("val", val_log_probs, val.labels),
        ("test", test_log_probs, test.labels),
    ):
        report.metrics.update(calibration_metrics(log_probs, labels, split, n_bins=n_bins))
        report.metrics[f"{split}/cal/conf_gap"] = confidence_gap(log_probs.exp(), labels)
    bins = {"before": reliability_bins(test_log_probs.exp(), test.labels, n_bins)}
    calibration: dict[str, Any] = {"fit_split": "val", "n_bins": n_bins}
    for name in advancing(eval_cfg.calibration.get("calibrators") or [], bar):
        name = str(name)
        if name not in CALIBRATORS:
            raise ValueError(
                f"eval.calibration.calibrators: unknown {name!r}; known: {sorted(CALIBRATORS)}"
            )
        calibrator = CALIBRATORS[name]().fit(val_log_probs, val.labels, split="val")
        calibrated = torch.log_softmax(calibrator.transform(test_log_probs), dim=1)
        _calibrated(report, bins, calibrated, test.labels, f"_{name}", n_bins)
        if name == "ts":
            report.metrics["val/cal/temperature"] = float(calibrator.temperature)
            calibration["temperature"] = float(calibrator.temperature)
        if name == "ts" and test.num_members > 1:
            # The alternative for ensembles: scale each member, then average.
            members = MemberwiseTemperatureScaling().fit(val.member_logits, val.labels, "val")
            calibrated = members.transform(test.member_logits)
            _calibrated(report, bins, calibrated, test.labels, "_ts_members", n_bins)
            for m, temperature in enumerate(members.temperatures):
                report.metrics[f"ens/member_{m}/val/cal/temperature"] = temperature
            calibration["member_temperatures"] = members.temperatures
    report.details["calibration"] = calibration
    relative = Path(PLOTS_DIR) / "reliability_test.json"
    atomic_write_text(run_dir / relative, json.dumps(bins, indent=1))
    report.artifacts["reliability_bins"] = str(relative)
    if plots:
        from sweeplab.evaluation.plots import reliability_diagram

        path = reliability_diagram(
            bins["before"],
            run_dir / PLOTS_DIR / "reliability_test.png",
            title="test reliability",
            ece=report.metrics["test/cal/ece"],
            after=bins.get("after_ts"),
            ece_after=report.metrics.get("test/cal/ece_ts"),
        )
        report.artifacts[f"{PLOTS_DIR}/reliability_test"] = str(Path(path).relative_to(run_dir))


def _calibrated(report, bins, log_probs, labels, suffix: str, n_bins: int) -> None:
    """``test/cal/<metric><suffix>`` and the reliability bins of calibrated predictions."""
    from sweeplab.metrics.calibration import (
        calibration_metrics,
        confidence_gap,
        reliability_bins,
    )

    report.metrics.update(calibration_metrics(log_probs, labels, "test", suffix, n_bins=n_bins))
    report.metrics[f"test/cal/conf_gap{suffix}"] = confidence_gap(log_probs.exp(), labels)
    bins[f"after{suffix}"] = reliability_bins(log_probs.exp(), labels, n_bins)


def _ood(report, val, test, eval_cfg, run_dir: Path, plots: bool, bar=None) -> None:
    from sweeplab.evaluation.cache import cache_file
    from sweeplab.evaluation.detectors import DETECTORS
    from sweeplab.metrics.ood import OOD_CONVENTION

    sets = []
    for name, set_cfg in ood_set_configs(eval_cfg).items():
        test_part = load_outputs(run_dir, ood_cache_name(name, "test"))
        val_file = cache_file(run_dir, ood_cache_name(name, "val"))
        val_part = load_outputs(run_dir, ood_cache_name(name, "val")) if val_file.exists() else None
        sets.append(OODSetOutputs(name, str(set_cfg.get("group")), test_part, val_part))
    fit_split = str(eval_cfg.ood.get("fit_split", "train"))
    fit = load_outputs(run_dir, fit_split)
    heads, head_unavailable = load_heads(run_dir)
    model_scores = {}
    for name in eval_cfg.ood.detectors:
        name = str(name)
        cls = DETECTORS.get(name)
        cache = model_scores_cache(name)
        if cls is not None and cls.needs_model and cache_file(run_dir, cache).exists():
            model_scores[name] = load_tensors(run_dir, cache)
    result = evaluate_ood(
        eval_cfg,
        fit,
        val,
        test,
        sets,
        heads=heads,
        model_scores=model_scores,
        head_unavailable=head_unavailable,
        bar=bar,
    )
    report.metrics.update(result.metrics)
    report.details["ood"] = {
        "convention": OOD_CONVENTION,
        "groups": {s.name: s.group for s in sets},
        "fit_split": fit_split,
        "members": test.num_members,
        "hyperparameters": result.hyperparameters,
        "skipped": result.skipped,
        "subsampled": result.subsampled,
        "selected_on": "val OOD sets"
        if any(s.val is not None for s in sets) and eval_cfg.ood.get("select_on_val", True)
        else "defaults (no val OOD set)",
    }
    if plots and result.scores.get("id"):
        _ood_plots(report, result, sets, eval_cfg, run_dir)


def _ood_plots(report, result, sets, eval_cfg, run_dir: Path) -> None:
    from sweeplab.evaluation.plots import roc_curve_plot, score_histogram
    from sweeplab.evaluation.roc_points import roc_json_path, write_roc_points
    from sweeplab.metrics.ood import roc_curve

    detectors = list(result.scores["id"])
    histogram = str(eval_cfg.ood.get("histogram_detector", "energy"))
    if histogram not in detectors:
        histogram = detectors[0]
    for ood_set in sets:
        scores = result.scores[ood_set.name]
        path = score_histogram(
            result.scores["id"][histogram],
            scores[histogram],
            run_dir / PLOTS_DIR / f"ood_{ood_set.name}_scores.png",
            title=f"{histogram} scores: test vs {ood_set.name} ({ood_set.group})",
        )
        report.artifacts[f"{PLOTS_DIR}/ood_{ood_set.name}_scores"] = str(
            Path(path).relative_to(run_dir)
        )
        curves = {d: roc_curve(result.scores["id"][d], scores[d]) for d in detectors}
        path = roc_curve_plot(
            curves,
            run_dir / PLOTS_DIR / f"ood_{ood_set.name}_roc.png",
            title=f"ROC: test vs {ood_set.name} ({ood_set.group})",
        )
        report.artifacts[f"plots/ood_{ood_set.name}_roc"] = str(Path(path).relative_to(run_dir))
        aurocs = {d: report.metrics.get(f"ood/{ood_set.name}/{d}/auroc") for d in detectors}
        points = write_roc_points(
            roc_json_path(run_dir / PLOTS_DIR, ood_set.name),
            curves,
            {d: a for d, a in aurocs.items() if isinstance(a, float)},
        )
        report.artifacts[f"plots/ood_{ood_set.name}_roc_points"] = str(points.relative_to(run_dir))


def _shift(report, eval_cfg, run_dir: Path) -> None:
    from sweeplab.metrics.calibration import expected_calibration_error

    n_bins = int(eval_cfg.calibration.get("n_bins", 15))
    data = load_tensors(run_dir, SHIFT_CACHE)
    labels = data["labels"]
    report.details["shift"] = {
        "samples": len(labels),
        "test_samples": int(data.get("test_samples") or len(labels)),
        "seed": int(eval_cfg.shift.get("seed", 0)),
    }
    by_name: dict[str, list[dict[str, float]]] = {}
    for key, member_logits in data["logits"].items():
        name, severity = key.split("/")
        log_probs = ensemble_log_probs(member_logits)
        values = {
            "acc": accuracy(log_probs, labels),
            "nll": nll(log_probs, labels),
            "ece": expected_calibration_error(log_probs.exp(), labels, n_bins),
        }
        by_name.setdefault(name, []).append(values)
        for metric, value in values.items():
            report.metrics[f"shift/{name}/{severity}/{metric}"] = value
    everything = [values for runs in by_name.values() for values in runs]
    for metric in ("acc", "nll", "ece"):
        for name, runs in by_name.items():
            report.metrics[f"shift/{name}/mean/{metric}"] = _mean(v[metric] for v in runs)
        report.metrics[f"shift/mean/{metric}"] = _mean(v[metric] for v in everything)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
