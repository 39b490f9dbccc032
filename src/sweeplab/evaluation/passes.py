"""The forward passes of evaluation: every set the model must see, once, into the cache.

This is the only part of evaluation that runs the model. It writes
``eval_cache/{train,val,test}.pt``, ``eval_cache/ood/<set>/{val,test}.pt``,
``eval_cache/shift.pt`` (logits of every corruption and severity),
``eval_cache/head.pt`` (each member's classifier as a linear map, for the
``needs_head`` detectors) and ``eval_cache/<detector>.pt`` with the scores of the
``needs_model`` detectors (ODIN's input gradients). Everything else is computed
from these files by :mod:`sweeplab.evaluation.report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from sweeplab.evaluation.cache import (
    CACHE_DIR,
    EvalOutputs,
    cache_file,
    cached_fingerprint,
    collect_outputs,
    load_outputs,
    save_outputs,
    save_tensors,
)
from sweeplab.evaluation.ood import fixed_hyperparameters
from sweeplab.evaluation.progress import EvalProgress, counted, sample_count

log = logging.getLogger(__name__)

HEAD_CACHE = "head"
SHIFT_CACHE = "shift"
FIT_SPLITS = ("train", "val")
MODEL_SCORES_SEED = 0  # draws the test samples of eval.ood.model_max_samples


def fingerprint(value: Any) -> str:
    """A short stable hash of a JSON-able value (what produced a cache file)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ood_set_configs(eval_cfg: DictConfig) -> dict[str, DictConfig]:
    """The configured OOD sets by name; a set overridden to ``null`` is dropped."""
    sets = eval_cfg.ood.get("sets") or {}
    return {str(name): node for name, node in sets.items() if node is not None}


def ood_cache_name(set_name: str, split: str) -> str:
    return f"ood/{set_name}/{split}"


def ood_fingerprint(set_cfg: DictConfig) -> str:
    """What an OOD set's cache depends on (the model's image shape is fixed by the run)."""
    return fingerprint(OmegaConf.to_container(set_cfg, resolve=True))


def shift_fingerprint(eval_cfg: DictConfig) -> str:
    shift = eval_cfg.get("shift") or {}
    return fingerprint(OmegaConf.to_container(shift, resolve=True) if shift else {})


def model_scores_cache(detector: str) -> str:
    """The cache file of a ``needs_model`` detector's scores: ``eval_cache/<detector>.pt``."""
    return detector


def model_scores_fingerprint(
    eval_cfg: DictConfig, set_fingerprints: dict[str, str], detector: str
) -> str:
    """What a ``needs_model`` detector's cached scores depend on: the sets and its settings."""
    ood = eval_cfg.ood
    produced_by = {
        "sets": set_fingerprints,
        "select_on_val": bool(ood.get("select_on_val", True)),
        "hyperparameters": fixed_hyperparameters(ood.get("hyperparameters")).get(detector, {}),
    }
    if ood.get("model_max_samples") is not None:  # unset, the caches written before it match
        produced_by["max_samples"] = int(ood.model_max_samples)
    return fingerprint(produced_by)


def image_batches(images: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images, -1 labels)`` batches of an unlabeled set, in order."""
    for chunk in torch.split(images, batch_size):
        yield chunk, torch.full((chunk.shape[0],), -1, dtype=torch.long)


def seeded_subsample(num_samples: int, max_samples: int | None, seed: int) -> Tensor | None:
    """``max_samples`` of the indices ``0..num_samples-1``, drawn with ``seed``, sorted;
    ``None`` (every sample) when ``max_samples`` is ``None`` or covers them all."""
    if max_samples is None or num_samples <= int(max_samples):
        return None
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_samples, generator=generator)[: int(max_samples)].sort().values


def gather_rows(batches, indices: Tensor) -> tuple[Tensor, Tensor]:
    """The samples at sorted ``indices`` of a split, read in one pass over its batches."""
    images, labels, start = [], [], 0
    for x, y in batches:
        end = start + len(y)
        local = indices[(indices >= start) & (indices < end)] - start
        if len(local):
            images.append(x[local])
            labels.append(y[local])
        start = end
    return torch.cat(images), torch.cat(labels)


def corrupted_batches(
    loader, name: str, severity: int, seed: int, device: torch.device | str = "cpu"
) -> Iterator[tuple[Tensor, Tensor]]:
    """The test batches with one corruption applied on ``device``; each batch has its own seed."""
    from sweeplab.data.corruptions import corrupt

    for index, (images, labels) in enumerate(loader):
        batch_seed = int(fingerprint([seed, name, severity, index])[:8], 16)
        yield corrupt(images.to(device), name, severity, batch_seed), labels


def member_heads(module: nn.Module) -> list[nn.Module]:
    """Each member's classifier, mapping its features ``[B, D]`` to its logits ``[B, C]``.

    The regime's ``member_heads()``; a module without one is a single model whose
    classifier is ``backbone.head``, if it has one.
    """
    if hasattr(module, "member_heads"):
        return list(module.member_heads())
    head = getattr(getattr(module, "backbone", None), "head", None)
    return [head] if isinstance(head, nn.Module) else []


def head_cache(module: nn.Module) -> dict[str, Any]:
    """``head.pt``: each member's classifier as ``{weight [C, D], bias [C]}``.

    Read with :meth:`LinearHead.from_module`, so any head that is affine in eval mode
    works (timm's 1×1-conv and averaged distillation heads too). A model whose head
    cannot be read gets no heads and the reason, so the ``needs_head`` detectors are
    skipped with it instead of asking for the model again.
    """
    from sweeplab.evaluation.detectors import LinearHead

    heads = member_heads(module)
    if not heads:
        return {"heads": [], "unavailable": "the model exposes no classifier head"}
    try:
        linear = [LinearHead.from_module(head) for head in heads]
    except ValueError as err:
        return {"heads": [], "unavailable": str(err)}
    return {
        "heads": [{"weight": head.weight, "bias": head.bias} for head in linear],
        "unavailable": "",
    }


class EvalPasses:
    """Runs the model over the evaluation sets that are missing from a run's cache.

    Args:
        eval_cfg: the ``eval`` config node.
        run_dir: the run directory whose ``eval_cache/`` is filled.
        force: recompute every file (after training); ``False`` keeps the files whose
            fingerprint matches the config, so ``sweeplab eval`` runs the model only
            for what is new (another OOD set, other corruptions, ODIN).
    """

    def __init__(self, eval_cfg: DictConfig, run_dir: Path, force: bool = True) -> None:
        self.eval_cfg = eval_cfg
        self.run_dir = Path(run_dir)
        self.force = force
        self.module = None
        self.datamodule = None
        self.device = torch.device("cpu")
        fit_split = str(eval_cfg.ood.get("fit_split", "train"))
        if fit_split not in FIT_SPLITS:
            raise ValueError(f"eval.ood.fit_split must be one of {FIT_SPLITS}, got {fit_split!r}")
        self.fit_split = fit_split
        self.fit_limit = eval_cfg.ood.get("fit_max_samples")
        # No detector, no OOD pass: the sets are only ever read by detectors.
        self.set_fingerprints = (
            {name: ood_fingerprint(node) for name, node in ood_set_configs(eval_cfg).items()}
            if eval_cfg.ood.get("detectors")
            else {}
        )
        self._corrupt: set[str] = set()
        self.progress = EvalProgress(show=False)

    # -- what is missing -------------------------------------------------------------

    def _fingerprint(self, name: str) -> str | None:
        """The fingerprint a cache file was written with; ``None`` if it is absent or
        unreadable. A corrupt or truncated file is recomputed like a missing one, with a
        warning that names it."""
        found = cached_fingerprint(self.run_dir, name)
        path = cache_file(self.run_dir, name)
        if found is None and name not in self._corrupt and path.exists():
            self._corrupt.add(name)
            log.warning("eval cache %s is corrupt or truncated: recomputing it", path)
        return found

    def _stale(self, name: str, expected: str = "") -> bool:
        return self.force or self._fingerprint(name) != expected

    def _split_fingerprint(self, split: str) -> str:
        return fingerprint(self.fit_limit) if split == "train" else ""

    def _splits_needed(self) -> list[str]:
        splits = ["val", "test"] + (["train"] if self.fit_split == "train" else [])
        return [s for s in splits if self._stale(s, self._split_fingerprint(s))]

    def _sets_needed(self) -> list[str]:
        return [
            name
            for name, expected in self.set_fingerprints.items()
            if self._stale(ood_cache_name(name, "test"), expected)
            or (
                cache_file(self.run_dir, ood_cache_name(name, "val")).exists()
                and self._stale(ood_cache_name(name, "val"), expected)
            )
        ]

    def _wants_shift(self) -> bool:
        shift = self.eval_cfg.get("shift")
        return bool(shift and shift.get("corruptions"))

    def _model_detectors_needed(self, test_cached: bool = True) -> list[str]:
        """The configured ``needs_model`` detectors whose cached scores are stale.

        Those not defined for the model's number of members (as the cached test split
        tells it) are left out: evaluation skips them.
        """
        from sweeplab.evaluation.detectors import DETECTORS

        if not self.set_fingerprints:
            return []
        names = [
            str(name)
            for name in self.eval_cfg.ood.get("detectors") or []
            if str(name) in DETECTORS and DETECTORS[str(name)].needs_model
        ]
        names = [
            name
            for name in names
            if self._stale(model_scores_cache(name), self._model_fingerprint(name))
        ]
        members = self._cached_members() if names and test_cached else None
        if members is not None:
            names = [name for name in names if not DETECTORS[name].unsupported(members)]
        return names

    def _cached_members(self) -> int | None:
        """The number of members M as the cached test split has it; ``None`` if not cached."""
        try:
            return load_outputs(self.run_dir, "test").num_members
        except (FileNotFoundError, ValueError):
            return None

    def missing(self) -> list[str]:
        """The cache files the model must (re)compute; empty when the cache is complete."""
        splits = self._splits_needed()
        needed = list(splits)
        if self.force or self._fingerprint(HEAD_CACHE) is None:
            needed.append(HEAD_CACHE)
        needed += [ood_cache_name(name, "test") for name in self._sets_needed()]
        if self._wants_shift() and self._stale(SHIFT_CACHE, shift_fingerprint(self.eval_cfg)):
            needed.append(SHIFT_CACHE)
        model_detectors = self._model_detectors_needed(test_cached="test" not in splits)
        needed += [model_scores_cache(name) for name in model_detectors]
        return needed

    def _model_fingerprint(self, detector: str) -> str:
        return model_scores_fingerprint(self.eval_cfg, self.set_fingerprints, detector)

    # -- the passes ------------------------------------------------------------------

    def _preprocess(self, x: Tensor) -> Tensor:
        return self.datamodule.preprocess(x, train=False)

    def _collect(self, batches, keep_features: bool = True) -> EvalOutputs:
        return collect_outputs(
            self.module.predict_eval, batches, self._preprocess, self.device, keep_features
        )

    def run(
        self,
        module,
        datamodule,
        device: torch.device | str = "cpu",
        progress: EvalProgress | None = None,
    ) -> dict[str, str]:
        """Compute what :meth:`missing` lists; returns the artifacts written.

        ``progress`` shows each pass as a bar and times it (by default, silently).
        """
        self.module, self.datamodule, self.device = module, datamodule, torch.device(device)
        self.progress = progress or EvalProgress(show=False)
        needed = self.missing()
        module.to(self.device).eval()
        artifacts: dict[str, str] = {}
        for split in self._splits_needed():
            artifacts.update(self._split(split))
        if HEAD_CACHE in needed:
            path = save_tensors(self.run_dir, HEAD_CACHE, head_cache(module))
            artifacts[f"{CACHE_DIR}/{HEAD_CACHE}"] = str(path)
        model_detectors = self._model_detectors_needed()
        sets_needed = set(self._sets_needed())
        ood_images: dict[str, Tensor] = {}
        for name, set_cfg in ood_set_configs(self.eval_cfg).items():
            if name not in self.set_fingerprints:
                continue
            if name in sets_needed or model_detectors:
                ood_images.update(self._ood_set(name, set_cfg, name in sets_needed, artifacts))
        if SHIFT_CACHE in needed:
            artifacts.update(self._shift())
        for name in model_detectors:
            artifacts.update(self._model_scores(name, ood_images))
        return artifacts

    def _split(self, split: str) -> dict[str, str]:
        loader = self.datamodule.loader(split)
        phase = "train_features" if split == "train" else split
        with self.progress.phase(phase, sample_count(loader)) as bar:
            outputs = self._collect(counted(loader, bar))
        if (
            split == "train"
            and self.fit_limit is not None
            and len(outputs.labels) > int(self.fit_limit)
        ):
            generator = torch.Generator().manual_seed(0)
            keep = torch.randperm(len(outputs.labels), generator=generator)[: int(self.fit_limit)]
            outputs = outputs.subset(keep.sort().values)
        path = save_outputs(outputs, self.run_dir, split, self._split_fingerprint(split))
        return {f"{CACHE_DIR}/{split}": str(path)}

    def _ood_set(
        self, name: str, set_cfg: DictConfig, write: bool, artifacts: dict[str, str]
    ) -> dict[str, Tensor]:
        """Load and adapt one OOD set; pass (and cache) its val and test parts if ``write``."""
        from hydra.utils import instantiate

        try:
            ood_set = instantiate(set_cfg)
        except Exception as exc:
            raise ValueError(f"eval.ood.sets.{name} could not be created: {exc}") from exc
        expected = self.set_fingerprints[name]
        images_by_cache: dict[str, Tensor] = {}
        with self.progress.phase(f"ood_{name}", total=0) as bar:
            for split in ("val", "test"):
                cache = ood_cache_name(name, split)
                bar.set_postfix_str(f"loading {split}")
                images = ood_set.load(self.datamodule, split)
                if images is None:
                    if write:
                        cache_file(self.run_dir, cache).unlink(missing_ok=True)
                    continue
                images_by_cache[cache] = images
                if write:
                    bar.total = (bar.total or 0) + len(images)
                    bar.set_postfix_str(split)
                    batches = image_batches(images, self.datamodule.eval_batch_size)
                    outputs = self._collect(counted(batches, bar))
                    artifacts[f"{CACHE_DIR}/{cache}"] = str(
                        save_outputs(outputs, self.run_dir, cache, expected)
                    )
        return images_by_cache

    def _shift_loader(self):
        """The test samples the shift pass corrupts (``eval.shift.max_samples`` of them,
        see :func:`seeded_subsample`), their indices in the test split (``None``: all) and
        the split's size. The same samples serve every corruption and severity, so that
        their accuracies differ by the corruption alone."""
        shift = self.eval_cfg.shift
        loader = self.datamodule.loader("test")
        total = sample_count(loader)
        if total is None:
            total = sum(len(y) for _, y in loader)
        indices = seeded_subsample(total, shift.get("max_samples"), int(shift.seed))
        if indices is None:
            return loader, None, total
        return self._batches_of(*gather_rows(loader, indices)), indices, total

    def _batches_of(self, images: Tensor, labels: Tensor):
        """Evaluation batches of in-memory samples, in order."""
        from sweeplab.data.loaders import EpochBatchPlan, TensorBatchLoader

        plan = EpochBatchPlan(
            len(labels), self.datamodule.eval_batch_size, shuffle=False, drop_last=False
        )
        return TensorBatchLoader(images, labels, plan)

    def _shift(self) -> dict[str, str]:
        shift = self.eval_cfg.shift
        loader, indices, total = self._shift_loader()
        samples = total if indices is None else len(indices)
        cells = [
            (str(name), int(severity))
            for name in shift.corruptions
            for severity in shift.severities
        ]
        logits: dict[str, Tensor] = {}
        labels = None
        with self.progress.phase("shift", len(cells) * samples) as bar:
            for name, severity in cells:
                bar.set_postfix_str(f"{name} {severity}")
                batches = corrupted_batches(loader, name, severity, int(shift.seed), self.device)
                outputs = self._collect(counted(batches, bar), keep_features=False)
                logits[f"{name}/{severity}"] = outputs.member_logits
                labels = outputs.labels
        path = save_tensors(
            self.run_dir,
            SHIFT_CACHE,
            {
                "logits": logits,
                "labels": labels,
                "indices": indices,
                "test_samples": total,
                "fingerprint": shift_fingerprint(self.eval_cfg),
            },
        )
        return {f"{CACHE_DIR}/{SHIFT_CACHE}": str(path)}

    def _model_scores(self, detector: str, ood_images: dict[str, Tensor]) -> dict[str, str]:
        """A ``needs_model`` detector's scores for every set (ODIN: input gradients), with
        its hyperparameters chosen on the val OOD sets if any."""
        from sweeplab.evaluation.detectors import DETECTORS, build_detector
        from sweeplab.evaluation.ood import hyperparameter_candidates, select_on_val

        batch_size = self.datamodule.eval_batch_size
        limit = self.eval_cfg.ood.get("model_max_samples")
        subsets: dict[str, Tensor | None] = {}

        def subset(cache: str) -> Tensor | None:
            """The samples of a test set the detector scores (``None``: all of them)."""
            if cache not in subsets:
                subsets[cache] = seeded_subsample(full_size(cache), limit, MODEL_SCORES_SEED)
            return subsets[cache]

        def full_size(cache: str) -> int:
            if cache in ("val", "test"):
                return sample_count(self.datamodule.loader(cache)) or 0
            return len(ood_images[cache])

        def size(cache: str) -> int:
            keep = subset(cache) if cache.endswith("test") else None
            return full_size(cache) if keep is None else len(keep)

        def batches(cache: str):
            keep = subset(cache) if cache.endswith("test") else None
            if cache in ("val", "test"):
                loader = self.datamodule.loader(cache)
                return loader if keep is None else self._batches_of(*gather_rows(loader, keep))
            images = ood_images[cache] if keep is None else ood_images[cache][keep]
            return image_batches(images, batch_size)

        candidates = [
            build_detector(detector, **params).hyperparameters
            for params in hyperparameter_candidates(self.eval_cfg, detector)
        ]
        val_ood = [cache for cache in ood_images if cache.endswith("/val")]
        tests = ["test", *[cache for cache in ood_images if cache.endswith("/test")]]
        grid = len(candidates) > 1 and bool(val_ood)
        scored = tests + (["val", *val_ood] if grid else [])
        with self.progress.phase(detector, sum(size(cache) for cache in scored)) as bar:

            def grid_scores(settings: list[dict[str, Any]], cache: str) -> list[Tensor]:
                bar.set_postfix_str(f"{cache}, {len(settings)} setting(s)")
                return DETECTORS[detector].score_inputs_grid(
                    self._member_logits,
                    counted(batches(cache), bar),
                    self._preprocess,
                    settings,
                    self.device,
                )

            params = candidates[0]
            if grid:
                val_in = grid_scores(candidates, "val")
                val_out = [grid_scores(candidates, cache) for cache in val_ood]
                by_setting = {
                    id(setting): (val_in[i], torch.cat([scores[i] for scores in val_out]))
                    for i, setting in enumerate(candidates)
                }
                params, _ = select_on_val(candidates, lambda p: by_setting[id(p)])
            scores = {cache: grid_scores([params], cache)[0] for cache in tests}
        cache = model_scores_cache(detector)
        path = save_tensors(
            self.run_dir,
            cache,
            {
                "scores": scores,
                "indices": {cache: subset(cache) for cache in tests},
                "sizes": {cache: full_size(cache) for cache in tests},
                "hyperparameters": dict(params),
                "fingerprint": self._model_fingerprint(detector),
            },
        )
        return {f"{CACHE_DIR}/{cache}": str(path)}

    def _member_logits(self, x: Tensor) -> Tensor:
        """Member logits ``[B, M, C]``: what ODIN differentiates through (by their mean
        probability, as the logit detectors define the ensemble's prediction)."""
        return self.module.predict_eval(x)[0]


def check_eval_config(eval_cfg: DictConfig, held_out_classes) -> None:
    """Refuse ``eval`` names that do not exist and sets that cannot be built, before
    training or re-evaluating, naming the full key, the value given and what is allowed
    (``ValueError``). Types and ranges of single values are checked before this, with
    the rest of the config, by :func:`sweeplab.schema.check_config`.

    ``held_out_classes`` are the data's held-out classes (``data.held_out_classes``),
    which a held-out-classes OOD set needs. Builds nothing but the OOD set objects, so
    it is cheap enough to run on every launch, also of a run that is already complete.
    """
    from hydra.utils import instantiate

    from sweeplab.checks import one_of
    from sweeplab.data.corruptions import CORRUPTIONS
    from sweeplab.data.ood_sets import GROUPS, HeldOutClasses
    from sweeplab.evaluation.calibrators import CALIBRATORS
    from sweeplab.evaluation.detectors import DETECTORS, build_detector

    ood = eval_cfg.ood
    if ood.get("histogram_detector") is not None:
        one_of("eval.ood.histogram_detector", ood.histogram_detector, sorted(DETECTORS))
    for key, known, chosen in (
        ("eval.calibration.calibrators", CALIBRATORS, eval_cfg.calibration.get("calibrators")),
        ("eval.ood.detectors", DETECTORS, eval_cfg.ood.get("detectors")),
        ("eval.shift.corruptions", CORRUPTIONS, (eval_cfg.get("shift") or {}).get("corruptions")),
    ):
        unknown = [str(name) for name in chosen or [] if str(name) not in known]
        if unknown:
            raise ValueError(f"{key}: unknown {unknown}; choose from {sorted(known)}")
    fixed = fixed_hyperparameters(eval_cfg.ood.get("hyperparameters"))
    for name, params in fixed.items():
        if name not in DETECTORS:
            raise ValueError(
                f"eval.ood.hyperparameters.{name}: unknown detector; choose from {sorted(DETECTORS)}"
            )
        build_detector(name, **(params or {}))
    for name, set_cfg in ood_set_configs(eval_cfg).items():
        try:
            ood_set = instantiate(set_cfg)
        except Exception as exc:
            raise ValueError(f"eval.ood.sets.{name} could not be created: {exc}") from exc
        if ood_set.group not in GROUPS:
            raise ValueError(
                f"eval.ood.sets.{name}.group must be one of {GROUPS}, got {ood_set.group!r}"
            )
        if isinstance(ood_set, HeldOutClasses) and not held_out_classes:
            raise ValueError(
                f"eval.ood.sets.{name} uses held-out classes but data.held_out_classes is empty: "
                f"set data.held_out_classes (e.g. [8,9]) or drop the set with "
                f"eval.ood.sets.{name}=null"
            )
