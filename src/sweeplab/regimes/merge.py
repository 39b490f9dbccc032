"""A merge of finished runs: one model whose weights are a soup or task-vector merge.

``regime.runs`` names the ingredients (a selector or run ids) and ``regime.base`` the
common start that task-vector methods subtract (usually the runs' ``init_from``);
both are pinned to run ids (:mod:`sweeplab.tracking.lineage`), so the record lists
them under ``sources`` and the run id hashes them. Nothing trains: the merged
weights become the run's checkpoint and the ordinary evaluation runs on them, so a
merge is a row of a table like any other run. The methods themselves are pure
functions in :mod:`sweeplab.regimes.merge_methods`; this file picks the ingredients,
estimates Fisher information, scores greedy soups on val (and picks the best single
ingredient on val, ``method=best``) and recomputes BatchNorm.

Parameters are merged by the method; float buffers (BatchNorm running statistics)
are averaged over the ingredients whatever the method, since a task vector of a
running variance can make it negative. With ``bn=recompute`` (the default) they are
then recomputed on ``bn_samples`` training images, because averaged statistics do not
match the merged weights' activations and are known to break merged CNNs.

``method=interpolate`` takes exactly two runs A and B: the checkpoint is
(1 − α) θ_A + α θ_B at ``regime.alpha``, and the curve at every α of ``regime.alphas``
(val and test accuracy and NLL, BatchNorm as ``bn`` says) is written with its barrier
heights (:mod:`sweeplab.regimes.interpolation`). It reads test as a diagnostic only:
``regime.alpha`` is the user's, never chosen from the curve.

Beside the merge's own metrics, the evaluation reports the output ensemble of the
same ingredients (mean probability) under ``merge/ensemble/test/…``
(:mod:`sweeplab.evaluation.source_ensemble`), the baseline a merge is judged against.

``regime.tasks=true`` declares the ingredients fine-tunes on different tasks (other
data sets or class subsets): their heads are kept apart and every task is scored
with its own head on its own test set (:mod:`sweeplab.regimes.merge_tasks`). Without
it, ingredients of different data are an error, so a multi-task merge is never
made by accident.

When a task-vector method is given no ``regime.base``, the base is the ingredients'
shared ``init_from`` (logged, and recorded as ``merge/base_run``); the run id still
follows from the ingredients' ids, whose records fix that base.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab.augment.base import Mixer
from sweeplab.models.batchnorm import batchnorm_layers, recompute_batchnorm
from sweeplab.regimes import interpolation as interp
from sweeplab.regimes import merge_methods as mm
from sweeplab.regimes import merge_tasks as tasks_of
from sweeplab.regimes.base import BackboneFactory, Regime
from sweeplab.regimes.registry import register_regime
from sweeplab.tracking.lineage import source_ids
from sweeplab.tracking.runs import Run, open_run

log = logging.getLogger(__name__)

METHODS = ("uniform", "greedy", "best", "task_arithmetic", "ties", "dare", "fisher", "interpolate")
BASE_METHODS = ("task_arithmetic", "ties", "dare")
DARE_WITH = ("task_arithmetic", "ties")
BN_POLICIES = ("recompute", "keep")
FISHER_TARGETS = ("sampled", "labels")
# λ when regime.scaling is null: TIES's default (Yadav et al. 2023) and the value
# they use for task arithmetic without a validation set.
DEFAULT_SCALING = {"task_arithmetic": 0.4, "ties": 1.0}
VAL_ACC = "val/cls/acc"


def check_choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def diagonal_fisher(
    model: nn.Module, images: Tensor, labels: Tensor | None, generator: torch.Generator
) -> dict[str, Tensor]:
    """Mean squared gradient of log p(y | x) per parameter, one sample at a time.

    ``y`` is drawn from the model's own predictive distribution (Matena & Raffel's
    Fisher) when ``labels`` is None, else the given labels (the empirical Fisher).
    """
    model = copy.deepcopy(model).eval().requires_grad_(True)
    params = dict(model.named_parameters())
    fisher = {key: torch.zeros_like(p) for key, p in params.items()}
    with torch.enable_grad():
        for i in range(images.shape[0]):
            log_probs = F.log_softmax(model(images[i : i + 1]), dim=-1)[0]
            if labels is None:
                y = int(torch.multinomial(log_probs.detach().exp(), 1, generator=generator))
            else:
                y = int(labels[i])
            grads = torch.autograd.grad(log_probs[y], list(params.values()), allow_unused=True)
            for key, grad in zip(params, grads, strict=True):
                if grad is not None:
                    fisher[key] += grad.detach() ** 2
    return {key: value / max(images.shape[0], 1) for key, value in fisher.items()}


@register_regime("merge")
class Merge(Regime):
    """A weight merge of finished runs (soup, task arithmetic, TIES, DARE, Fisher): no training.

    Args:
        runs: the ingredients: a run selector or a list of run ids.
        method: uniform, greedy, best, task_arithmetic, ties, dare, fisher or interpolate.
        base: the run task vectors are taken from (task_arithmetic, ties, dare only);
            None: the ingredients' shared ``init_from``.
        checkpoint: which checkpoint of each run, ``last`` or ``best``.
        scaling: λ of task_arithmetic / ties / dare; null is 0.4 (task arithmetic)
            or 1.0 (TIES), following Yadav et al. (2023).
        ties_keep: fraction of each task vector's largest magnitudes TIES keeps.
        dare_p: DARE's drop probability.
        dare_with: what DARE merges its sparse task vectors with: task_arithmetic or ties.
        fisher_samples: training images the diagonal Fisher is estimated on.
        fisher_target: ``sampled`` (y from the model's prediction) or ``labels``.
        fisher_eps: added to every Fisher entry before the weighted average.
        bn: ``recompute`` BatchNorm statistics on training images, or ``keep`` the averaged.
        bn_samples: training images the statistics are recomputed on.
        alphas: interpolate: the α of the curve, ascending from 0 (run A) to 1 (run B).
        alpha: interpolate: the α whose weights are the checkpoint (fixed, not selected).
        seed: draws DARE's masks, the Fisher's labels and the BatchNorm images.
        ensemble_baseline: report the ingredients' output ensemble (read by the evaluation).
        tasks: the ingredients are fine-tunes on different tasks, each with its own head
            (see :mod:`sweeplab.regimes.merge_tasks`).
        runs_dir: the store (``paths.runs_dir``).
        data_json: this run's data config as JSON, checked against the ingredients'.
    """

    trains = False

    def __init__(
        self,
        runs: str | Sequence[str],
        method: str = "uniform",
        base: str | Sequence[str] | None = None,
        backbone: BackboneFactory | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "merge",
        mixer: Mixer | None = None,
        checkpoint: str = "last",
        scaling: float | None = None,
        ties_keep: float = 0.2,
        dare_p: float = 0.5,
        dare_with: str = "task_arithmetic",
        fisher_samples: int = 256,
        fisher_target: str = "sampled",
        fisher_eps: float = 1e-8,
        bn: str = "recompute",
        bn_samples: int = 512,
        alphas: Sequence[float] = interp.DEFAULT_ALPHAS,
        alpha: float = 0.5,
        seed: int = 0,
        ensemble_baseline: bool = True,
        tasks: bool = False,
        runs_dir: str | os.PathLike | None = None,
        data_json: str | None = None,
    ) -> None:
        super().__init__(None, None, label_smoothing, check_finite_every, name)
        check_choice("regime.method", method, METHODS)
        check_choice("regime.dare_with", dare_with, DARE_WITH)
        check_choice("regime.bn", bn, BN_POLICIES)
        check_choice("regime.fisher_target", fisher_target, FISHER_TARGETS)
        check_choice("regime.checkpoint", checkpoint, ("last", "best"))
        if not 0.0 < ties_keep <= 1.0:
            raise ValueError(f"regime.ties_keep must be in (0, 1], got {ties_keep}")
        if not 0.0 <= dare_p < 1.0:
            raise ValueError(f"regime.dare_p must be in [0, 1), got {dare_p}")
        if method not in BASE_METHODS and base is not None:
            raise ValueError(
                f"regime.base is used by {', '.join(BASE_METHODS)} only, not by "
                f"regime.method={method}; drop it"
            )
        self.method, self.bn = method, bn
        self.scaling = scaling
        self.ties_keep, self.dare_p, self.dare_with = ties_keep, dare_p, dare_with
        self.fisher_samples, self.fisher_target, self.fisher_eps = (
            fisher_samples,
            fisher_target,
            fisher_eps,
        )
        self.bn_samples, self.seed = bn_samples, seed
        self.alphas, self.alpha = interp.check_alphas(alphas), float(alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"regime.alpha must be in [0, 1], got {alpha}")
        self.curve: dict[str, Any] | None = None
        store = None if runs_dir is None else str(runs_dir)
        try:
            self.run_ids = source_ids(runs, store)
        except ValueError as exc:
            raise ValueError(f"regime.runs: {exc}") from None
        if method == "interpolate" and len(self.run_ids) != 2:
            raise ValueError(
                "regime.method=interpolate needs exactly two runs in regime.runs (A and B), "
                f"got {len(self.run_ids)}: {', '.join(self.run_ids)}"
            )
        self.tasks = bool(tasks)
        if self.tasks and method not in tasks_of.TASK_METHODS:
            raise ValueError(
                f"regime.tasks=true merges fine-tunes of different tasks into one backbone, "
                f"which regime.method={method} does not (it picks or interpolates whole runs "
                f"on one task's val data); use one of {', '.join(tasks_of.TASK_METHODS)}"
            )
        self.ingredient_runs = [open_run(run_id, runs_dir) for run_id in self.run_ids]
        self.base_inferred = method in BASE_METHODS and base is None
        if self.base_inferred:
            self.base_id = shared_init_from(self.ingredient_runs, method)
            log.info(
                "regime.base not given: using the ingredients' shared init_from %s", self.base_id
            )
        else:
            self.base_id = None if base is None else _one(base, store)
        base_run = None if self.base_id is None else open_run(self.base_id, runs_dir)
        named = self.ingredient_runs + ([base_run] if base_run is not None else [])
        this_data = None if data_json is None else json.loads(data_json)
        self.task_names: list[str] = []
        self.eval_task = 0  # the task whose head the ordinary evaluation uses
        if self.tasks:
            self.task_names = tasks_of.task_names(self.ingredient_runs)
            self.eval_task = tasks_of.matching_task(
                self.ingredient_runs, self.task_names, this_data
            )
        else:
            check_mergeable(named, this_data, getattr(backbone, "model_input", None))
        # The ingredients stay out of the module tree: only the merge is the checkpoint.
        self.ingredients = [_backbone(run, checkpoint) for run in self.ingredient_runs]
        self.base_model = None if base_run is None else _backbone(base_run, checkpoint)
        models = self.ingredients + ([self.base_model] if self.base_model is not None else [])
        # A task's head is its own: kept out of the merge (and of the architecture check).
        self.head_keys = tasks_of.head_keys(self.ingredients[0]) if self.tasks else set()
        mm.check_compatible(
            [tasks_of.without(m.state_dict(), self.head_keys) for m in models],
            [f"run {run.run_id}" for run in named],
        )
        self.backbone = copy.deepcopy(self.ingredients[self.eval_task if self.tasks else 0])
        if self.tasks:  # every task's head, beside the merge, in the checkpoint
            self.task_heads = nn.ModuleDict(
                {
                    name: copy.deepcopy(model.head)
                    for name, model in zip(self.task_names, self.ingredients, strict=True)
                }
            )
        self.task_data: list[Any] = []
        self.merge_summary: dict[str, Any] = {}
        self.attach_mixer(mixer, nn.Identity())

    # -- evaluation ------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The merged model's logits ``[B, 1, C]`` and pooled features ``[B, 1, D]``."""
        features = self.backbone.features(x)
        return self.backbone.head(features).unsqueeze(1), features.unsqueeze(1)

    def source_summary(self, metrics, plots_dir) -> dict[str, Any]:
        """How the merge was made (the greedy soup's kept ingredients), for the loggers."""
        return dict(self.merge_summary)

    # -- merging ---------------------------------------------------------------------

    def prepare(self, datamodule) -> None:
        """Merge the ingredients into ``self.backbone``; reads train (BatchNorm, Fisher)
        and val (greedy soup) only."""
        from omegaconf import OmegaConf

        from sweeplab.assembly import setup_data

        generator = torch.Generator().manual_seed(int(self.seed))
        self._data = datamodule
        if self.tasks:  # each task's own data: its Fisher, the BatchNorm mixture, its test
            self.task_data = [
                datamodule if index == self.eval_task else setup_data(OmegaConf.create(run.config))
                for index, run in enumerate(self.ingredient_runs)
            ]
        states = [tasks_of.without(m.state_dict(), self.head_keys) for m in self.ingredients]
        params = {key for key, _ in self.backbone.named_parameters()} - self.head_keys
        if self.method == "greedy":
            merged = self._greedy(states)
        elif self.method == "best":
            merged = self._best(states)
        elif self.method == "interpolate":
            merged = self._interpolate(states)
        else:
            merged = mm.uniform_soup(states)  # buffers (and counters) of every method
            merged.update(self._merge_parameters(states, params, generator))
        # In tasks mode the head is the evaluated task's own, left as it is.
        self.backbone.load_state_dict({**self.backbone.state_dict(), **merged})
        if self.bn == "recompute" and self.method not in ("greedy", "best", "interpolate"):
            self._recompute_bn(self.backbone, generator)
        self.backbone.eval()
        self._data = None
        log.info("merged %d runs by %s", len(states), self.method)

    def _merge_parameters(self, states, params: set[str], generator) -> dict[str, Tensor]:
        only = [{k: v for k, v in state.items() if k in params} for state in states]
        if self.method == "uniform":
            return mm.uniform_soup(only)
        if self.method == "fisher":
            fishers = []
            for index, model in enumerate(self.ingredients):
                # Each model's Fisher on its own task's data (one data set without tasks).
                data = self.task_data[index] if self.tasks else self._data
                images, labels = _train_sample(data, self.fisher_samples, generator)
                target = None if self.fisher_target == "sampled" else labels
                fisher = diagonal_fisher(model, images, target, generator)
                fishers.append({k: v for k, v in fisher.items() if k in params})
            return mm.fisher_merge(only, fishers, self.fisher_eps)
        base = {k: v for k, v in self.base_model.state_dict().items() if k in params}
        if self.method == "task_arithmetic":
            return mm.task_arithmetic(only, base, self._scaling("task_arithmetic"))
        if self.method == "ties":
            return mm.ties(only, base, self.ties_keep, self._scaling("ties"))
        return mm.dare(
            only,
            base,
            self.dare_p,
            self.dare_with,
            self._scaling(self.dare_with),
            keep=self.ties_keep,
            generator=generator,
        )

    def _scaling(self, method: str) -> float:
        return DEFAULT_SCALING[method] if self.scaling is None else float(self.scaling)

    def _greedy(self, states) -> dict[str, Tensor]:
        """Wortsman et al.'s greedy soup: ingredients by val accuracy, best first; each
        kept if the soup's val accuracy (after BatchNorm recomputation) does not drop."""
        accuracies = [self._ingredient_val_acc(i) for i in range(len(states))]
        order = sorted(range(len(states)), key=lambda i: -accuracies[i])
        scratch = copy.deepcopy(self.backbone)
        seed = int(self.seed)

        def score(state) -> float:
            scratch.load_state_dict(state)
            if self.bn == "recompute":
                self._recompute_bn(scratch, torch.Generator().manual_seed(seed))
            return self._val_accuracy(scratch)

        soup, kept = mm.greedy_soup([states[i] for i in order], score)
        if self.bn == "recompute":
            scratch.load_state_dict(soup)
            self._recompute_bn(scratch, torch.Generator().manual_seed(seed))
            soup = scratch.state_dict()
        kept_ids = [self.run_ids[order[k]] for k in kept]
        self.merge_summary = {
            "merge/greedy/kept": float(len(kept)),
            "merge/greedy/kept_runs": ",".join(kept_ids),
        }
        log.info("greedy soup keeps %d of %d runs: %s", len(kept), len(states), kept_ids)
        return soup

    def _interpolate(self, states) -> dict[str, Tensor]:
        """The curve between the two runs (val and test), then the weights at ``alpha``."""
        scratch = copy.deepcopy(self.backbone)
        seed = int(self.seed)

        def at(alpha: float) -> nn.Module:
            scratch.load_state_dict(interp.interpolate(states[0], states[1], alpha))
            if self.bn == "recompute":
                self._recompute_bn(scratch, torch.Generator().manual_seed(seed))
            return scratch

        def score(alpha: float) -> dict[str, dict[str, float]]:
            model = at(alpha)
            return {split: self._split_scores(model, split) for split in interp.SPLITS}

        self.curve = {
            "runs": list(self.run_ids),
            "alpha": self.alpha,
            "bn": self.bn,
            **interp.compute_curve(self.alphas, score),
        }
        return at(self.alpha).state_dict()

    def write_outputs(self, run_dir, plots_dir) -> tuple[dict[str, float], dict[str, str]]:
        """An interpolation's curve (``interpolation.json``, ``plots/interpolation.png``)
        and its barrier heights ``merge/interp/<split>/{nll,acc}_barrier``."""
        from pathlib import Path

        from sweeplab.tracking.layout import INTERPOLATION_FILE

        made = self.record_metrics()
        if self.tasks and self.task_data:
            made.update(self.task_metrics())
            self.task_data = []
        if self.curve is None:
            return made, {}
        interp.write_curve(Path(run_dir) / INTERPOLATION_FILE, self.curve)
        if plots_dir is not None:
            from sweeplab.evaluation.plots import interpolation_plot

            a, b = self.curve["runs"]
            title = f"(1 − α) {a} + α {b}, BatchNorm {self.bn}"
            interpolation_plot(self.curve, Path(plots_dir) / "interpolation.png", title)
        made.update(interp.barrier_metrics(self.curve))
        return made, {"interpolation": INTERPOLATION_FILE}

    @torch.no_grad()
    def _split_scores(self, model: nn.Module, split: str) -> dict[str, float]:
        """Accuracy and NLL of ``model`` on a split, as the evaluation computes them."""
        from sweeplab.metrics.classification import accuracy, nll

        images, labels = self._data.split(split)
        model.eval()
        size = int(getattr(self._data, "eval_batch_size", 512))
        logits = [
            model(self._data.preprocess(images[start : start + size], train=False))
            for start in range(0, labels.shape[0], size)
        ]
        log_probs = torch.log_softmax(torch.cat(logits).double(), dim=-1)
        return {"acc": accuracy(log_probs, labels), "nll": nll(log_probs, labels)}

    def _best(self, states) -> dict[str, Tensor]:
        """The ingredient with the highest val accuracy (its record's ``val/cls/acc``),
        alone: the best single run a soup is judged against. Val only, never test; its
        BatchNorm statistics are the run's own."""
        accuracies = [self._ingredient_val_acc(i) for i in range(len(states))]
        state, index = mm.best_single(states, accuracies)
        self.merge_summary = {
            "merge/best/run": self.run_ids[index],
            "merge/best/val_acc": float(accuracies[index]),
        }
        log.info(
            "best single run by val accuracy: %s (%.4f)", self.run_ids[index], accuracies[index]
        )
        return state

    def _ingredient_val_acc(self, index: int) -> float:
        value = (self.ingredient_runs[index].record.get("metrics") or {}).get(VAL_ACC)
        if isinstance(value, int | float) and value == value:
            return float(value)
        return self._val_accuracy(self.ingredients[index])

    @torch.no_grad()
    def _val_accuracy(self, model: nn.Module) -> float:
        images, labels = self._data.split("val")
        model.eval()
        size = int(getattr(self._data, "eval_batch_size", 512))
        correct = 0
        for start in range(0, labels.shape[0], size):
            x = self._data.preprocess(images[start : start + size], train=False)
            correct += int((model(x).argmax(dim=1) == labels[start : start + size]).sum())
        return correct / max(labels.shape[0], 1)

    def _train_sample(self, count: int, generator) -> tuple[Tensor, Tensor]:
        return _train_sample(self._data, count, generator)

    def _recompute_bn(self, model: nn.Module, generator) -> None:
        if not batchnorm_layers(model):
            return
        if self.tasks:
            images = tasks_of.mixed_train_images(self.task_data, self.bn_samples, generator)
        else:
            images, _ = self._train_sample(self.bn_samples, generator)
        size = int(getattr(self._data, "eval_batch_size", 512))
        recompute_batchnorm(model, images, size)

    def task_metrics(self) -> dict[str, float]:
        """Every task's test accuracy with the merged backbone and its own head, beside
        its own fine-tune's on the same samples (``merge/task/…``, ``merge/tasks/…``)."""
        device = next(self.backbone.parameters()).device
        merged, finetuned = {}, {}
        for name, model, data in zip(
            self.task_names, self.ingredients, self.task_data, strict=True
        ):
            merged[name] = tasks_of.test_accuracy(self.backbone, self.task_heads[name], data)
            model.to(device)
            finetuned[name] = tasks_of.test_accuracy(model, model.head, data)
            model.to("cpu")
        return tasks_of.summarise(merged, finetuned)

    def record_metrics(self) -> dict[str, Any]:
        """How the merge was made, for the record: the base it took (and whether it was
        inferred), the greedy soup's kept runs, the best single run."""
        made: dict[str, Any] = dict(self.merge_summary)
        if self.base_id is not None:
            made["merge/base_run"] = self.base_id
            made["merge/base_inferred"] = float(self.base_inferred)
        return made


def _train_sample(data, count: int, generator) -> tuple[Tensor, Tensor]:
    """``count`` preprocessed training images of ``data`` and their labels."""
    images, labels = data.split("train")
    index = torch.randperm(labels.shape[0], generator=generator)[:count]
    return data.preprocess(images[index], train=False), labels[index]


def shared_init_from(runs: Sequence[Run], method: str) -> str:
    """The one run every ingredient was started from (``init_from``), as the base of a
    task-vector method given no ``regime.base``; else a one-line error."""
    starts = {}
    for run in runs:
        value = run.config.get("init_from")
        ids = list(value) if isinstance(value, list) else []
        starts[run.run_id] = ids[0] if len(ids) == 1 else None
    found = set(starts.values())
    if len(found) == 1 and None not in found:
        return found.pop()
    listing = ", ".join(f"{run_id}: {start or 'none'}" for run_id, start in starts.items())
    raise ValueError(
        f"regime.method={method} needs regime.base=<run> (the run the ingredients were "
        f"fine-tuned from), and the ingredients do not share one init_from to take it from "
        f"({listing}); give regime.base"
    )


def _one(value: Any, runs_dir: str | None) -> str:
    try:
        ids = source_ids(value, runs_dir)
    except ValueError as exc:
        raise ValueError(f"regime.base: {exc}") from None
    if len(ids) != 1:
        raise ValueError(f"regime.base must name one run, but it matches {', '.join(ids)}")
    return ids[0]


def _backbone(run: Run, checkpoint: str) -> nn.Module:
    from sweeplab.regimes.loading import load_model

    backbone = getattr(load_model(run, checkpoint), "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f"regime.runs: run {run.run_id} has no single backbone to merge "
            "(an ensemble's members are merged by naming their runs)"
        )
    return backbone


def check_mergeable(runs: Sequence[Run], this_data: dict | None, model_input) -> None:
    """One input (image shape and class count) and one data split for every run.

    The split matters for greedy soups: an ingredient trained on another ``data.seed``
    has trained on samples of this run's val split.
    """
    from sweeplab.regimes.ensemble_from_runs import data_differences
    from sweeplab.regimes.loading import model_input_of

    inputs = {f"run {run.run_id}": model_input_of(run) for run in runs}
    if model_input is not None:
        inputs["this run"] = model_input
    if len(set(inputs.values())) > 1:
        listing = "; ".join(f"{key}: {value.describe()}" for key, value in inputs.items())
        raise ValueError(
            f"regime.runs: runs of different inputs cannot be merged ({listing}); fine-tunes "
            "on different tasks, each with its own head, merge with regime.tasks=true"
        )
    configs = [run.config for run in runs] + ([{"data": this_data}] if this_data else [])
    differences = data_differences(configs)
    if differences:
        names = [run.run_id for run in runs] + (["this run"] if this_data else [])
        listing = "; ".join(f"{key}: {', '.join(map(str, v))}" for key, v in differences.items())
        raise ValueError(
            f"regime.runs: {', '.join(names)} differ in their data or split ({listing}); "
            "merge runs of one data set and data.seed, and give this run the same data options "
            "(or, for fine-tunes on different tasks, set regime.tasks=true)"
        )
