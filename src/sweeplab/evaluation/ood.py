"""OOD evaluation from the cache: choose, fit and score every detector on every set.

Hyperparameters come from ``eval.ood.hyperparameters`` when fixed there; otherwise
each detector's grid is searched on the val OOD sets (in-distribution val against
the val part of every OOD set) and the AUROC-best value is kept. The test split is
never used for choosing. Metrics are named ``ood/<set>/<detector>/<metric>`` for
each OOD set (``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95``), and
``ood/<group>/<detector>/<metric>`` for their means over the sets of the ``near``
and the ``far`` group. A detector that is not defined for the model's number of
members, or lacks the classifier head it needs, is skipped with a note.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from sweeplab.data.ood_sets import GROUPS
from sweeplab.evaluation.cache import EvalOutputs
from sweeplab.metrics.ood import auroc, ood_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OODSetOutputs:
    """One OOD set's cached outputs: its group and its val (optional) and test parts."""

    name: str
    group: str
    test: EvalOutputs
    val: EvalOutputs | None = None


@dataclass
class OODResult:
    metrics: dict[str, float] = field(default_factory=dict)
    # scores[set or "id"][detector] on the test parts (for histograms and ROC curves)
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    # detectors left out, with the reason (the model's number of members, a missing head)
    skipped: dict[str, str] = field(default_factory=dict)
    # the test sets a detector that runs the model scored a subsample of:
    # {detector: {set: [samples, of]}}, {} when it scored every sample
    subsampled: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def fixed_hyperparameters(node) -> dict[str, Any]:
    """The detectors whose hyperparameters ``eval.ood.hyperparameters`` fixes (null: not fixed)."""
    if node is None:
        return {}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {name: dict(params) for name, params in plain.items() if params is not None}


def hyperparameter_candidates(eval_cfg: DictConfig, detector: str) -> list[dict[str, Any]]:
    """The settings to try for ``detector``: the fixed one, or the defaults then its grid."""
    from sweeplab.evaluation.detectors import DETECTORS

    fixed = fixed_hyperparameters(eval_cfg.ood.get("hyperparameters"))
    unknown = sorted(set(fixed) - set(DETECTORS))
    if unknown:
        raise ValueError(
            f"eval.ood.hyperparameters names unknown detectors {unknown}; "
            f"known: {sorted(DETECTORS)}"
        )
    if detector in fixed:
        return [dict(fixed[detector] or {})]
    candidates: list[dict[str, Any]] = [{}]
    if eval_cfg.ood.get("select_on_val", True):
        grid = DETECTORS[detector].default_grid
        keys = sorted(grid)
        candidates += [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[k] for k in keys))
        ]
    return candidates


def select_on_val(
    candidates: list[dict[str, Any]],
    score_val: Callable[[dict[str, Any]], tuple[Tensor, Tensor]],
) -> tuple[dict[str, Any], float]:
    """The candidate with the best val AUROC (ID val vs val OOD); ties keep the earlier one."""
    best, best_auroc = candidates[0], -1.0
    for params in candidates:
        scores_in, scores_out = score_val(params)
        value = auroc(scores_in, scores_out)
        if value > best_auroc + 1e-12:
            best, best_auroc = params, value
    return best, best_auroc


def evaluate_ood(
    eval_cfg: DictConfig,
    fit: EvalOutputs,
    id_val: EvalOutputs,
    id_test: EvalOutputs,
    sets: list[OODSetOutputs],
    heads: list | None = None,
    model_scores: dict[str, dict[str, Any]] | None = None,
    head_unavailable: str = "the eval cache holds no classifier head",
    bar=None,
) -> OODResult:
    """Every configured detector on every OOD set, with the group means.

    ``heads`` are the members' classifiers (``LinearHead``), empty or ``None`` when
    the model's head cannot be read as one (``head_unavailable`` says why);
    ``model_scores`` are the cached scores of the ``needs_model`` detectors, by name.
    ``bar`` (a progress bar) advances by one per detector.
    """
    from sweeplab.evaluation.detectors import DETECTORS
    from sweeplab.evaluation.progress import advancing

    result = OODResult()
    if not sets:
        return result
    for ood_set in sets:
        if ood_set.group not in GROUPS:
            raise ValueError(
                f"eval.ood.sets.{ood_set.name}.group must be one of {GROUPS}, got {ood_set.group!r}"
            )
    detectors = [str(name) for name in eval_cfg.ood.get("detectors") or []]
    unknown = [name for name in detectors if name not in DETECTORS]
    if unknown:
        raise ValueError(f"eval.ood.detectors: unknown {unknown}; known: {sorted(DETECTORS)}")
    val_sets = [s.val for s in sets if s.val is not None]
    select = bool(eval_cfg.ood.get("select_on_val", True)) and bool(val_sets)
    model_scores = model_scores or {}

    result.scores["id"] = {}
    for name in advancing(detectors, bar):
        cls = DETECTORS[name]
        reason = cls.unsupported(id_test.num_members)
        if not reason and cls.needs_head and not heads:
            reason = f"{name} needs the classifier head as a linear map: {head_unavailable}"
        if reason:
            log.info("OOD detector %s skipped: %s", name, reason)
            result.skipped[name] = reason
            continue
        if cls.needs_model:
            if name not in model_scores:
                raise ValueError(
                    f"{name} needs the model (input gradients) and its scores are not in the "
                    "eval cache; run the evaluation with the model (sweeplab eval loads the "
                    "checkpoint when the cache lacks them)"
                )
            scores = model_scores[name]["scores"]
            result.hyperparameters[name] = dict(model_scores[name].get("hyperparameters") or {})
            sizes = model_scores[name].get("sizes") or {}
            subsampled = {
                cache: [len(scores[cache]), int(sizes[cache])]
                for cache in scores
                if cache in sizes and len(scores[cache]) < int(sizes[cache])
            }
            result.subsampled[name] = subsampled
            test_scores = {"id": scores["test"]}
            for ood_set in sets:
                test_scores[ood_set.name] = scores[f"ood/{ood_set.name}/test"]
        else:
            detector = _fitted_detector(
                name, eval_cfg, fit, heads, id_val, val_sets if select else []
            )
            result.hyperparameters[name] = dict(detector.hyperparameters)
            test_scores = {"id": detector.score(id_test)}
            for ood_set in sets:
                test_scores[ood_set.name] = detector.score(ood_set.test)
        result.scores["id"][name] = test_scores["id"]
        for ood_set in sets:
            result.scores.setdefault(ood_set.name, {})[name] = test_scores[ood_set.name]
            for metric, value in ood_metrics(test_scores["id"], test_scores[ood_set.name]).items():
                result.metrics[f"ood/{ood_set.name}/{name}/{metric}"] = value
    evaluated = [name for name in detectors if name in result.scores["id"]]
    result.metrics.update(_group_means(result.metrics, sets, evaluated))
    return result


def _fitted_detector(name, eval_cfg, fit, heads, id_val, val_sets):
    from sweeplab.evaluation.detectors import DETECTORS, build_detector

    def fitted(params: dict[str, Any]):
        detector = build_detector(name, **params)
        return detector.fit(fit, heads if detector.needs_head else None)

    candidates = hyperparameter_candidates(eval_cfg, name)
    params = candidates[0]
    if len(candidates) > 1 and val_sets and DETECTORS[name].default_grid:
        val_out = _concat(val_sets)
        if hasattr(DETECTORS[name], "score_grid"):  # one pass serves the whole grid
            detector = fitted(params)
            grid_in = detector.score_grid(id_val, candidates)
            grid_out = detector.score_grid(val_out, candidates)
            scores = {id(c): (grid_in[i], grid_out[i]) for i, c in enumerate(candidates)}

            def score_val(candidate):
                return scores[id(candidate)]
        else:

            def score_val(candidate):
                detector = fitted(candidate)
                return detector.score(id_val), detector.score(val_out)

        params, _ = select_on_val(candidates, score_val)
    return fitted(params)


def _concat(parts: list[EvalOutputs]) -> EvalOutputs:
    return EvalOutputs(
        torch.cat([p.member_logits for p in parts]),
        torch.cat([p.features for p in parts]),
        torch.cat([p.labels for p in parts]),
    )


def _group_means(
    metrics: dict[str, float], sets: list[OODSetOutputs], detectors: list[str]
) -> dict[str, float]:
    means: dict[str, float] = {}
    for group in GROUPS:
        members = [s.name for s in sets if s.group == group]
        if not members:
            continue
        for detector in detectors:
            for metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
                values = [metrics[f"ood/{m}/{detector}/{metric}"] for m in members]
                means[f"ood/{group}/{detector}/{metric}"] = sum(values) / len(values)
    return means
