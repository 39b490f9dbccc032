"""Knowledge distillation: a student learns from a frozen teacher of the store.

``regime.teacher`` is a run id, a run selector (``sweeplab runs`` grammar) or the
path of a run's checkpoint. The runner pins a selector to the sorted ids it matches
(:mod:`sweeplab.tracking.lineage`): the record lists them under ``sources`` and the
run id hashes them. Several runs make an *ensemble teacher* whose target is the mean
of its members' probabilities (MEAL V2). A checkpoint path is no run: it stays out of
``sources`` and the run id hashes the path. A teacher of the run's own architecture
is born-again self-distillation; nothing about it is special.

The loss is a weighted sum of named terms (``regime.weights``): ``ce`` (the mixer's
loss on its targets, so every ``augment=`` works), ``kd`` (Hinton et al. 2015),
``hint`` (FitNets, a learned adapter from a student module to a teacher module) and
``dist`` (DIST, Huang et al. 2022). A term of weight 0 is not computed, and without
``kd``, ``hint`` and ``dist`` the teacher never runs.

The teacher is frozen, in eval mode, and held outside the module's state, so it is
never in a checkpoint or the optimiser; :meth:`Distill._apply` moves it with the
student. Under a mixer it scores the mixed batch the student sees
(``teacher_input=mixed``) or the clean batch, its probabilities then mixed with the
batch's λ and partners (``clean``; always so for manifold mixup, which mixes inside
the student). When its inputs repeat exactly (no random crop or flip, and a clean
teacher input), its logits for the whole train split are computed once when
training starts and indexed by each batch's sample indices (``cache_teacher``);
otherwise it runs under ``torch.inference_mode`` in the student's precision.

When the run ends, :meth:`Distill.source_summary` gives the loggers (W&B's summary,
TensorBoard) the teacher lineage (``teacher/run_ids``) and the teacher's headline test
metrics beside the student's (``teacher/test/cls/acc``, ``…/nll``, ``teacher/test/cal/ece``:
the mean over an ensemble teacher's runs), read from the teacher runs' records, and with
``eval.plots`` the bars of ``plots/teacher_vs_student.png``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from sweeplab.augment.base import Mixer
from sweeplab.augment.identity import NoMix
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.distill_losses import (
    HintAdapter,
    dist_loss,
    hint_loss,
    kd_loss,
    mix_targets,
    teacher_probabilities,
)
from sweeplab.regimes.registry import register_regime
from sweeplab.tracking.layout import CHECKPOINT_DIR, CHECKPOINTS, RECORD_FILE
from sweeplab.tracking.lineage import is_checkpoint_path, source_ids

TERMS = ("ce", "kd", "hint", "dist")
TEACHER_INPUTS = ("mixed", "clean")
CACHE_CHOICES = ("auto", True, False)
# What a distilled run publishes about its teacher run(s) beside its own metrics.
TEACHER_PREFIX = "teacher/"
TEACHER_METRICS = ("test/cls/acc", "test/cls/nll", "test/cal/ece")
TEACHER_PLOT = "teacher_vs_student.png"
log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def term_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The weight of every term, 0 for those not named; unknown or negative ones fail."""
    weights = dict(_plain(weights) or {})
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise ValueError(f"regime.weights: unknown term(s) {unknown}; known: {', '.join(TERMS)}")
    out = {term: float(weights.get(term) or 0.0) for term in TERMS}
    for term, weight in out.items():
        if weight < 0:
            raise ValueError(f"regime.weights.{term} must be ≥ 0, got {weight}")
    if not any(out.values()):
        raise ValueError("regime.weights: every term has weight 0; nothing would be trained")
    return out


def load_teachers(
    teacher: str | Sequence[str], checkpoint: str, runs_dir: str | os.PathLike | None
) -> tuple[list[Regime], list[str], list[Any]]:
    """The frozen teacher models, the run ids they come from and each one's ModelInput.

    A checkpoint path must lie in a run directory (``<run>/checkpoints/last.ckpt`` or
    ``best.ckpt``): that run's config says which model the file holds.
    """
    from sweeplab.regimes.loading import load_model, model_input_of
    from sweeplab.tracking.runs import open_run

    teacher = _plain(teacher)
    if is_checkpoint_path(teacher):
        path = Path(teacher.strip()).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"regime.teacher: no checkpoint file at {path}")
        run_dir = path.parent.parent
        which = {name: key for key, name in CHECKPOINTS.items()}.get(path.name)
        if (
            path.parent.name != CHECKPOINT_DIR
            or which is None
            or not (run_dir / RECORD_FILE).is_file()
        ):
            raise ValueError(
                f"regime.teacher: {path} is not a run's checkpoint (<run>/{CHECKPOINT_DIR}/"
                f"{'|'.join(CHECKPOINTS.values())}), so nothing says which model it holds"
            )
        run = open_run(run_dir)
        return [load_model(run, which)], [], [model_input_of(run)]
    ids = source_ids(teacher, None if runs_dir is None else str(runs_dir))
    runs = [open_run(run_id, runs_dir) for run_id in ids]
    return [load_model(run, checkpoint) for run in runs], ids, [model_input_of(r) for r in runs]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def teacher_metrics(
    ids: Sequence[str], runs_dir: str | os.PathLike | None
) -> dict[str, dict[str, float]]:
    """``run id -> {metric: value}`` of :data:`TEACHER_METRICS`, from each run's record."""
    from sweeplab.tracking.runs import open_run

    out: dict[str, dict[str, float]] = {}
    for run_id in ids:
        recorded = open_run(run_id, runs_dir).metrics
        values = {key: _finite(recorded.get(key)) for key in TEACHER_METRICS}
        out[run_id] = {key: value for key, value in values.items() if value is not None}
    return out


def teacher_summary(per_run: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """``teacher/run_ids`` (comma-separated), ``teacher/num_runs`` and ``teacher/<metric>``,
    the mean over the teacher runs that record it (one run: its own value)."""
    summary: dict[str, Any] = {
        f"{TEACHER_PREFIX}run_ids": ",".join(per_run),
        f"{TEACHER_PREFIX}num_runs": float(len(per_run)),
    }
    for key in TEACHER_METRICS:
        values = [metrics[key] for metrics in per_run.values() if key in metrics]
        if values:
            summary[f"{TEACHER_PREFIX}{key}"] = sum(values) / len(values)
    return summary


def teacher_rows(
    per_run: Mapping[str, Mapping[str, float]], student: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Bars of :func:`sweeplab.evaluation.plots.teacher_student_plot`: per metric, each
    teacher run, their mean (several runs) and the student."""
    rows: list[dict[str, Any]] = []
    summary = teacher_summary(per_run)
    for key in TEACHER_METRICS:
        metric = key.rsplit("/", 1)[-1]

        def add(model: str, kind: str, value: Any, metric: str = metric) -> None:
            if (number := _finite(value)) is not None:
                rows.append({"model": model, "kind": kind, "metric": metric, "value": number})

        for run_id, metrics in per_run.items():
            add(f"teacher {run_id}", "teacher", metrics.get(key))
        if len(per_run) > 1:
            add("teacher mean", "teacher mean", summary.get(f"{TEACHER_PREFIX}{key}"))
        add("student", "student", student.get(key))
    return rows


@contextlib.contextmanager
def captured(module: nn.Module, path: str | None) -> Iterator[dict[str, Tensor]]:
    """Record the output of ``module.get_submodule(path)`` (the head's input when
    ``path`` is None: the pooled features) during the forward passes inside."""
    store: dict[str, Tensor] = {}
    if path is None:
        target = module.head

        def hook(_, inputs):
            store["value"] = inputs[0]

        handle = target.register_forward_pre_hook(hook)
    else:
        target = module.get_submodule(path)

        def hook(_, inputs, output):
            store["value"] = output

        handle = target.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _backbone_of(model: nn.Module) -> nn.Module:
    return getattr(model, "backbone", model)


@register_regime("distill")
class Distill(Regime):
    """Knowledge distillation from a frozen teacher run, ensemble of runs or checkpoint.

    Args:
        teacher: a run id, run selector or list of ids (pinned by the runner), or the
            path of a run's ``last.ckpt``/``best.ckpt``.
        checkpoint: which checkpoint of teacher runs, ``last`` or ``best``.
        temperature: T of the ``kd`` and ``dist`` terms.
        weights: ``{ce, kd, hint, dist}``; terms left out weigh 0.
        hint: ``{student, teacher}`` module paths inside each backbone (as
            ``named_modules()`` names them); ``null`` is the pooled features.
        dist: ``{inter, intra}``, the weights of DIST's two relations.
        teacher_input: ``mixed`` (the student's batch) or ``clean`` (targets mixed).
        cache_teacher: ``auto`` (cache when the inputs repeat exactly), true, false.
        runs_dir: the store (``paths.runs_dir``).
    """

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        teacher: str | Sequence[str],
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "distill",
        mixer: Mixer | None = None,
        checkpoint: str = "last",
        temperature: float = 4.0,
        weights: Mapping[str, float] | None = None,
        hint: Mapping[str, str | None] | None = None,
        dist: Mapping[str, float] | None = None,
        teacher_input: str = "mixed",
        cache_teacher: bool | str = "auto",
        runs_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"regime.checkpoint must be last or best, got {checkpoint!r}")
        if not float(temperature) > 0:
            raise ValueError(f"regime.temperature must be > 0, got {temperature}")
        if teacher_input not in TEACHER_INPUTS:
            raise ValueError(f"regime.teacher_input must be mixed or clean, got {teacher_input!r}")
        if cache_teacher not in CACHE_CHOICES:
            raise ValueError(
                f"regime.cache_teacher must be auto, true or false, got {cache_teacher!r}"
            )
        self.temperature = float(temperature)
        self.weights = term_weights(weights if weights is not None else {"ce": 0.1, "kd": 0.9})
        self.hint_paths = {"student": None, "teacher": None, **(_plain(hint) or {})}
        self.dist_weights = {"inter": 1.0, "intra": 1.0, **(_plain(dist) or {})}
        self.teacher_input = teacher_input
        self.cache_teacher = cache_teacher
        self.runs_dir = runs_dir

        self.backbone = build_backbone(backbone)
        self.attach_mixer(mixer, self.backbone)
        # Rebuilding the teachers draws initial weights: keep the run's random stream as
        # ERM's, so with regime.weights.kd=0 this run is the ERM run (dropout masks too).
        try:
            with torch.random.fork_rng(devices=[]):
                models, self.teacher_ids, inputs = load_teachers(teacher, checkpoint, runs_dir)
        except ValueError as exc:
            message = str(exc)
            raise ValueError(
                message if message.startswith("regime.teacher") else f"regime.teacher: {message}"
            ) from None
        self.__dict__["teachers"] = models  # not a submodule: no state, no optimiser
        self._check_inputs(getattr(backbone, "model_input", None), inputs)
        self._check_hint()
        self.adapter = self._build_adapter() if self.weights["hint"] > 0 else None
        self.register_buffer("_term_sums", torch.zeros(len(TERMS)), persistent=False)
        self._cache: Tensor | None = None
        self._cache_checked = False
        self._plan_batches: tuple[int | None, list[Tensor]] | None = None

    # -- construction checks ---------------------------------------------------------

    def _check_inputs(self, student_input, teacher_inputs: list) -> None:
        names = self.teacher_ids or ["checkpoint"]
        num_classes = getattr(self.backbone, "num_classes", None)
        for run_id, teacher_input in zip(names, teacher_inputs, strict=True):
            if student_input is not None:
                differs = teacher_input != student_input
                student = student_input.describe()
            else:
                differs = num_classes is not None and teacher_input.num_classes != num_classes
                student = f"{num_classes} classes"
            if differs:
                raise ValueError(
                    f"regime.teacher: teacher {run_id} was built for {teacher_input.describe()} "
                    f"but this run's data gives {student}; distil from a teacher of this data"
                )

    def _check_hint(self) -> None:
        if self.weights["hint"] == 0:
            return
        if len(self.teachers) != 1:
            raise ValueError(
                f"regime.weights.hint > 0 needs one teacher model, but regime.teacher names "
                f"{len(self.teachers)} runs; set regime.weights.hint=0 for an ensemble teacher"
            )
        if self.mixes_clean_teacher:
            raise ValueError(
                "regime.weights.hint > 0 compares features of the same images, but the teacher "
                "scores the clean batch (regime.teacher_input=clean or augment=manifold_mixup); "
                "set regime.teacher_input=mixed, another augment, or regime.weights.hint=0"
            )

    def _build_adapter(self) -> HintAdapter:
        """The FitNets regressor, sized by one probe pass of both models (no gradients)."""
        student, teacher = self.backbone, _backbone_of(self.teachers[0])
        side = student.image_size
        probe = torch.zeros(2, student.in_chans, side, side)
        was_training = student.training
        student.eval()
        try:
            with torch.no_grad():
                with captured(student, self.hint_paths["student"]) as s:
                    student(probe)
                with captured(teacher, self.hint_paths["teacher"]) as t:
                    self.teachers[0].predict_eval(probe)
        except AttributeError as exc:
            raise ValueError(f"regime.hint: {exc}") from None
        finally:
            student.train(was_training)
        return HintAdapter(tuple(s["value"].shape[1:]), tuple(t["value"].shape[1:]))

    # -- properties ------------------------------------------------------------------

    @property
    def uses_teacher(self) -> bool:
        return any(self.weights[term] > 0 for term in ("kd", "hint", "dist"))

    @property
    def mixes_clean_teacher(self) -> bool:
        """Whether the teacher scores clean batches whose targets are then mixed."""
        from sweeplab.augment.manifold import ManifoldMixup

        return self.teacher_input == "clean" or isinstance(self.mixer, ManifoldMixup)

    def _mixer_mixes(self) -> bool:
        return not (isinstance(self.mixer, NoMix) or self.mixer.prob == 0)

    def _apply(self, fn, *args, **kwargs):
        """Move (or cast) the teacher with the student: it is no submodule."""
        super()._apply(fn, *args, **kwargs)
        for model in self.__dict__.get("teachers", []):
            model._apply(fn, *args, **kwargs)
        return self

    # -- the teacher cache -----------------------------------------------------------

    def why_not_cached(self, datamodule) -> str:
        """Why the teacher's outputs cannot be cached for this fit; empty when they can."""
        if not self.uses_teacher:
            return "the teacher is not used (regime.weights.kd, hint and dist are 0)"
        if self.weights["hint"] > 0:
            return "the hint term needs the teacher's features at every step"
        if self._mixer_mixes() and not self.mixes_clean_teacher:
            return "the teacher scores mixed batches (regime.teacher_input=mixed)"
        if datamodule is None or not hasattr(datamodule, "split"):
            return "the data module holds no in-memory train split"
        if getattr(datamodule, "random_crop_padding", 0) or getattr(
            datamodule, "horizontal_flip", False
        ):
            return "the train split is randomly cropped or flipped"
        loader = self.trainer.train_dataloader
        if not hasattr(loader, "plan"):
            return "the train loader has no batch plan to index the cache by"
        return ""

    def _build_cache(self, datamodule) -> Tensor:
        """Teacher member logits ``[N, M, C]`` of the whole train split, one pass."""
        images, _ = datamodule.split("train")
        size = getattr(datamodule, "eval_batch_size", 512)
        parts = []
        with self.trainer.precision_plugin.forward_context(), torch.inference_mode():
            for start in range(0, images.shape[0], size):
                x = images[start : start + size].to(self.device, non_blocking=True)
                parts.append(self._teacher_logits(datamodule.preprocess(x, train=False)))
        return torch.cat(parts).float().clone()

    def on_train_start(self) -> None:
        super().on_train_start()
        datamodule = getattr(self.trainer, "datamodule", None)
        self._cache, self._cache_checked, self._plan_batches = None, False, None
        if self.cache_teacher is False:
            return
        reason = self.why_not_cached(datamodule)
        if reason and self.cache_teacher is True:
            raise ValueError(f"regime.cache_teacher=true is impossible: {reason}")
        if reason:
            log.info("teacher outputs are not cached: %s", reason)
        else:
            self._cache = self._build_cache(datamodule)
            log.info("teacher logits cached for %d training samples", self._cache.shape[0])

    def _batch_indices(self, batch_idx: int) -> Tensor:
        """The train-split indices of this step's batch, from the loader's plan."""
        epoch = None if self.trainer.overfit_batches else self.current_epoch
        if self._plan_batches is None or self._plan_batches[0] != epoch:
            self._plan_batches = (epoch, self.trainer.train_dataloader.plan.batches(epoch))
        return self._plan_batches[1][batch_idx]

    def _cached_logits(self, y: Tensor, batch_idx: int) -> Tensor:
        index = self._batch_indices(batch_idx).to(self.device)
        if not self._cache_checked:  # one look (one sync) that the plan is the loader's
            _, labels = self.trainer.datamodule.split("train")
            if not torch.equal(labels.to(self.device)[index], y):
                raise RuntimeError(
                    "regime.cache_teacher: the batch is not the one the loader's plan names; "
                    "set regime.cache_teacher=false"
                )
            self._cache_checked = True
        return self._cache[index]

    # -- training --------------------------------------------------------------------

    def _teacher_logits(self, x: Tensor) -> Tensor:
        """Member logits ``[B, M, C]`` of every teacher model, concatenated."""
        return torch.cat([model.predict_eval(x)[0] for model in self.teachers], dim=1)

    def _teacher_outputs(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher member logits and (for the hint) features, without autograd."""
        with torch.inference_mode():
            if self.weights["hint"] == 0:
                return self._teacher_logits(x).clone(), None
            teacher = _backbone_of(self.teachers[0])
            with captured(teacher, self.hint_paths["teacher"]) as store:
                logits = self._teacher_logits(x)
        return logits.clone(), store["value"].clone()

    def teacher_targets(self, x: Tensor, mixed, y: Tensor, batch_idx: int | None = None):
        """The teacher's probabilities at T for the student's rows, and its hint features."""
        clean = self.mixes_clean_teacher or not mixed.mixed
        features = None
        if self._cache is not None and batch_idx is not None:
            logits = self._cached_logits(y, batch_idx)
        else:
            logits, features = self._teacher_outputs(x if clean else mixed.x)
        probs = teacher_probabilities(logits, self.temperature)
        return (mix_targets(probs, mixed) if clean else probs), features

    def distill_terms(
        self, x: Tensor, y: Tensor, batch_idx: int | None = None
    ) -> dict[str, Tensor]:
        """Every term of positive weight for one batch, unweighted."""
        mixed = self.mix(x, y, batch_idx if batch_idx is not None else 0)
        terms: dict[str, Tensor] = {}
        hint_on = self.weights["hint"] > 0
        context = captured(self.backbone, self.hint_paths["student"]) if hint_on else None
        with context or contextlib.nullcontext() as student_features:
            logits = mixed.forward(self.backbone)
        if self.weights["ce"] > 0:
            terms["ce"] = self.mixer.loss(logits, mixed)
        if self.uses_teacher:
            targets, teacher_features = self.teacher_targets(x, mixed, y, batch_idx)
            if self.weights["kd"] > 0:
                terms["kd"] = kd_loss(logits, targets, self.temperature)
            if self.weights["dist"] > 0:
                terms["dist"] = dist_loss(
                    logits,
                    targets,
                    self.temperature,
                    float(self.dist_weights["inter"]),
                    float(self.dist_weights["intra"]),
                )
            if hint_on:
                adapted = self.adapter(student_features["value"])
                terms["hint"] = hint_loss(adapted, teacher_features)
        return terms

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        terms = self.distill_terms(x, y, batch_idx)
        loss = sum(self.weights[name] * value for name, value in terms.items())
        with torch.no_grad():
            for i, name in enumerate(TERMS):
                if name in terms:
                    self._term_sums[i] += terms[name].detach().float() * x.shape[0]
        return loss

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._term_sums.zero_()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        count = max(self._loss_count, 1)
        for i, name in enumerate(TERMS):
            if self.weights[name] > 0:
                self.log(f"train/distill/{name}", self._term_sums[i] / count, on_epoch=True)

    # -- the teacher beside the student, for the loggers -------------------------------

    def source_summary(
        self, metrics: Mapping[str, float], plots_dir: Path | None
    ) -> dict[str, Any]:
        """The teacher lineage and metrics (see the module docstring); a checkpoint-path
        teacher is no run of the store, so it adds nothing. A teacher record that cannot
        be read any more is logged and left out: the student's run is complete anyway."""
        if not self.teacher_ids:
            return {}
        try:
            per_run = teacher_metrics(self.teacher_ids, self.runs_dir)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("teacher metrics not published: %s", exc)
            return {}
        if plots_dir is not None:
            from sweeplab.evaluation.plots import teacher_student_plot

            rows = teacher_rows(per_run, metrics)
            if rows:
                which = "ensemble teacher" if len(per_run) > 1 else "teacher"
                teacher_student_plot(rows, Path(plots_dir) / TEACHER_PLOT, f"{which} vs student")
        return teacher_summary(per_run)

    # -- evaluation: the student alone -----------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def validation_logits(self, x: Tensor) -> Tensor:
        return self(x).unsqueeze(1)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The student's logits ``[B, 1, C]`` and pooled features ``[B, 1, D]``."""
        features = self.backbone.features(x)
        return self.backbone.head(features).unsqueeze(1), features.unsqueeze(1)
