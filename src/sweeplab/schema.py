"""One check of every value in the composed config, before anything runs.

Each group's code checks its own arguments when it is built, but by then the run
directory exists, the store has been searched and a bad value ends as a failed
record; and values that reach a library first (``trainer.max_epochs=abc``,
``regime.optimizer.lr=abc``, ``seed=-1``) end as that library's error, naming no key.
:func:`check_config` walks the resolved config once, before the run id is computed,
and checks every value it has a rule for: its type, its range, what is allowed. It
also runs for a run that is already complete (an ``eval.*`` value can change there)
and for ``sweeplab eval``.

The rules follow :mod:`sweeplab.checks`: ``rule(key, value)`` raises
``ValueError("<full key> must be …, got <value>")``. A pattern's ``*`` stands for
one key segment. The walk checks a mapping and goes on into its keys, unless its
rule is marked :func:`whole` (a library's free options). Keys without a rule (a user's own
``_target_`` may take any arguments) pass; ``tests/test_schema.py`` checks that
every key of every shipped config option has one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweeplab import checks
from sweeplab.augment.base import LAM_MODES, PARTNERS
from sweeplab.augment.checks import optional_scale_range, scale_range, stage_list
from sweeplab.data import checks as data_checks
from sweeplab.data.benchmarks import SOURCES as DATA_SOURCES
from sweeplab.data.ood_sets import GROUPS as OOD_GROUPS
from sweeplab.evaluation.passes import FIT_SPLITS
from sweeplab.models import search_space as space
from sweeplab.models.implicit_ensembles import FAST_INITS
from sweeplab.models.subnet_scoring import BN_POLICIES as NAS_BN_POLICIES
from sweeplab.regimes.distill import TEACHER_INPUTS
from sweeplab.regimes.init_from import HEAD_CHOICES
from sweeplab.regimes.mc_dropout import PLACEMENTS
from sweeplab.regimes.merge import BN_POLICIES, DARE_WITH, FISHER_TARGETS
from sweeplab.regimes.merge import METHODS as MERGE_METHODS
from sweeplab.regimes.supernet import INPLACE_KD
from sweeplab.regimes.supernet import SAMPLERS as NAS_SAMPLERS
from sweeplab.tracking.layout import CHECKPOINTS
from sweeplab.tracking.run_lock import ON_RUNNING

Rule = Callable[[str, Any], Any]
MISSING = "???"


# ------------------------------------------------------------------ rule makers
def optional(rule: Rule) -> Rule:
    """``null`` or a value ``rule`` accepts."""

    def check(key: str, value: Any) -> Any:
        return None if value is None else rule(key, value)

    return check


def choice(*allowed: Any) -> Rule:
    """One of ``allowed``."""

    def check(key: str, value: Any) -> Any:
        return checks.one_of(key, value, allowed)

    return check


def int_at_least(low: int) -> Rule:
    """An integer ≥ ``low`` (for counts where 0 or -1 means something)."""

    def check(key: str, value: Any) -> int:
        if not checks.is_int(value) or value < low:
            raise ValueError(f"{key} must be an integer ≥ {low}, got {value!r}")
        return int(value)

    return check


def list_of(rule: Rule, what: str) -> Rule:
    """A list (possibly empty) whose every item ``rule`` accepts."""

    def check(key: str, value: Any) -> list:
        if not _is_list(value):
            raise ValueError(f"{key} must be a list of {what}, got {value!r}")
        return [rule(f"{key}[{i}]", item) for i, item in enumerate(value)]

    return check


def either(*rules: Rule, allowed: str) -> Rule:
    """A value one of ``rules`` accepts; the message says ``allowed``."""

    def check(key: str, value: Any) -> Any:
        for rule in rules:
            try:
                return rule(key, value)
            except ValueError:
                continue
        raise ValueError(f"{key} must be {allowed}, got {value!r}")

    return check


# --------------------------------------------------------------- single rules
def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def text(key: str, value: Any) -> str:
    """Any string, also an empty one (a label, a path a library resolves)."""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def pair_of_positives(key: str, value: Any) -> tuple[float, float]:
    """Two numbers > 0 (Adam's betas are below 1 too: see :func:`betas`)."""
    if _is_list(value) and len(value) == 2 and all(checks.is_real(v) and v > 0 for v in value):
        return float(value[0]), float(value[1])
    raise ValueError(f"{key} must be a pair of numbers > 0, got {value!r}")


def betas(key: str, value: Any) -> tuple[float, float]:
    """Adam's two decay rates, each in [0, 1)."""
    if _is_list(value) and len(value) == 2 and all(checks.is_real(v) and 0 <= v < 1 for v in value):
        return float(value[0]), float(value[1])
    raise ValueError(f"{key} must be a pair [beta1, beta2], each in [0, 1), got {value!r}")


def ascending_fractions(key: str, value: Any) -> list[float]:
    """Milestones as fractions of training, strictly increasing within (0, 1)."""
    inside = _is_list(value) and value and all(checks.is_real(v) and 0 < v < 1 for v in value)
    if inside and all(a < b for a, b in itertools.pairwise(value)):
        return [float(v) for v in value]
    raise ValueError(
        f"{key} must be a non-empty increasing list of fractions of training in (0, 1), "
        f"got {value!r}"
    )


def batches(key: str, value: Any) -> int | float:
    """A number of batches (an integer ≥ 0) or a fraction of them (a float in [0, 1])."""
    if checks.is_int(value) and value >= 0:
        return int(value)
    if checks.is_real(value) and 0.0 <= value <= 1.0:
        return float(value)
    raise ValueError(
        f"{key} must be a number of batches (an integer ≥ 0) or a fraction in [0, 1], got {value!r}"
    )


def devices(key: str, value: Any) -> Any:
    """Lightning's ``devices``: a count ≥ 1, -1 (all), ``auto``, or a list of device indices."""
    if value == "auto" or value == -1 or (checks.is_int(value) and value >= 1):
        return value
    if _is_list(value) and value and all(checks.is_int(v) and v >= 0 for v in value):
        return list(value)
    if isinstance(value, str) and value.replace(",", "").strip().isdigit():
        return value  # "0,1": the indices, as Lightning also takes them
    raise ValueError(
        f"{key} must be a device count ≥ 1, -1 (all), auto, or a list of device indices, "
        f"got {value!r}"
    )


def strategy(key: str, value: Any) -> Any:
    """A Lightning strategy by name, or a mapping that builds one (``_target_``)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, Mapping) and "_target_" in value:
        return value
    raise ValueError(
        f"{key} must be a strategy name (e.g. ddp) or a {{_target_: …}}, got {value!r}"
    )


def members(key: str, value: Any) -> list:
    """Heterogeneous ensemble members: entries ``{backbone: <option>, <option key>: value}``."""
    if _is_list(value) and all(
        isinstance(m, Mapping) and isinstance(m.get("backbone"), str) for m in value
    ):
        return list(value)
    raise ValueError(
        f"{key} must be a list of members like [{{backbone: mlp}}, {{backbone: small_cnn}}], "
        f"got {value!r}"
    )


def sources(key: str, value: Any) -> Any:
    """Runs named for a regime: a selector or run id (a string), or a list of run ids."""
    if isinstance(value, str) and value.strip():
        return value
    if _is_list(value) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{key} must be a run selector, a run id or a list of run ids, got {value!r}")


def fraction_up_to_one(key: str, value: Any) -> float:
    """A fraction in (0, 1]."""
    if not checks.is_real(value) or not 0 < value <= 1:
        raise ValueError(f"{key} must be a number in (0, 1], got {value!r}")
    return float(value)


def image_size(key: str, value: Any) -> Any:
    return data_checks.image_size(key, value)


def class_list(key: str, value: Any) -> Any:
    return data_checks.class_list(key, value)


def per_channel(key: str, value: Any) -> list[float]:
    """One number per channel (or one for all); the data module matches it to the channels."""
    return list_of(real, "numbers")(key, [value] if checks.is_real(value) else value)


def real(key: str, value: Any) -> float:
    if not checks.is_real(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def positive_std(key: str, value: Any) -> list[float]:
    stds = per_channel(key, value)
    if not all(s > 0 for s in stds):
        raise ValueError(f"{key} must be > 0 for every channel, got {value!r}")
    return stds


def anything(key: str, value: Any) -> Any:
    """Checked where it is used (a library's own options)."""
    return value


def whole(rule: Rule) -> Rule:
    """``rule`` checks a mapping as one value: its keys are free (a library's options)."""

    def check(key: str, value: Any) -> Any:
        return rule(key, value)

    check.whole = True
    return check


# Lightning's documented precision settings (``Trainer(precision=…)``).
PRECISIONS = (
    "16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true",
    "transformer-engine", "transformer-engine-float16",
    16, 32, 64, "16", "32", "64", "bf16",
)  # fmt: skip
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")

positive_int = checks.positive_int
non_negative_int = checks.non_negative_int
positive = checks.positive
non_negative = checks.non_negative
boolean = checks.boolean
seed = checks.seed
path = text  # a path is resolved by the code that opens it, which names it when it is missing

MIXER_RULES: dict[str, Rule] = {
    "augment.alpha": positive,
    "augment.mixup_alpha": positive,
    "augment.cutmix_alpha": positive,
    "augment.switch_prob": checks.probability,
    "augment.minmax": optional_scale_range,
    "augment.scale": scale_range,
    "augment.sigma": pair_of_positives,
    "augment.decay_power": positive,
    "augment.stages": stage_list,
    "augment.include_input": boolean,
    "augment.mixed_weight": positive,
    "augment.prob": checks.probability,
    "augment.lam_mode": choice(*LAM_MODES),
    "augment.partner": choice(*PARTNERS),
    "augment.label_smoothing": checks.fraction_below_one,
    "augment.off_epoch": non_negative_int,
    "augment.decoupled_weight": non_negative,
    "augment.seed": seed,
}

BACKBONE_RULES: dict[str, Rule] = {
    "backbone.name": checks.nonempty_str,
    "backbone.hidden": lambda k, v: checks.positive_int_list(k, v, allow_empty=True),
    "backbone.widths": checks.positive_int_list,
    "backbone.layers": checks.positive_int_list,
    "backbone.dropout": checks.fraction_below_one,
    "backbone.zero_init_residual": boolean,
    "backbone.pretrained": boolean,
    "backbone.model_kwargs": whole(optional(checks.mapping)),
    "backbone.stem_width": positive_int,
    "backbone.depths": space.depth_choices,
    "backbone.width_mults": space.width_choices,
    "backbone.kernels": space.kernel_choices,
    "backbone.arch": space.arch_text,
}

DATA_RULES: dict[str, Rule] = {
    "data.name": checks.nonempty_str,
    "data.dataset": checks.nonempty_str,
    "data.source": choice(*DATA_SOURCES),
    "data.root": path,
    "data.download": boolean,
    "data.seed": seed,
    "data.data_seed": seed,
    "data.batch_size": positive_int,
    "data.eval_batch_size": positive_int,
    "data.val_fraction": checks.open_fraction,
    "data.train_subset": optional(positive_int),
    "data.held_out_classes": class_list,
    "data.random_crop_padding": non_negative_int,
    "data.horizontal_flip": boolean,
    "data.mean": per_channel,
    "data.std": positive_std,
    "data.drop_last": boolean,
    "data.num_workers": non_negative_int,
    "data.cache_dir": path,
    "data.channels": choice(1, 3),
    "data.image_size": image_size,
    "data.in_memory": boolean,
    "data.num_train": positive_int,
    "data.num_test": positive_int,
    "data.num_classes": int_at_least(2),
    "data.noise_std": non_negative,
}

REGIME_RULES: dict[str, Rule] = {
    "regime.name": checks.nonempty_str,
    "regime.label_smoothing": checks.fraction_below_one,
    "regime.seed": seed,
    "regime.num_members": optional(int_at_least(2)),
    "regime.members": optional(members),
    "regime.shared_batches": boolean,
    "regime.vectorize": either(boolean, choice("auto"), allowed="auto, true or false"),
    "regime.fast_init": choice(*FAST_INITS),
    "regime.fast_init_std": positive,
    "regime.dropout": checks.fraction_below_one,
    "regime.placement": choice(*PLACEMENTS),
    "regime.num_passes": positive_int,
    # packed's width factor (> 0, checked by the regime) or a merge's α in [0, 1]
    "regime.alpha": non_negative,
    "regime.gamma": positive_int,
    "regime.cycles": positive_int,
    "regime.runs": sources,
    "regime.teacher": sources,
    "regime.checkpoint": choice(*CHECKPOINTS),
    "regime.runs_dir": path,
    "regime.data_json": text,
    "regime.temperature": positive,
    "regime.weights.*": non_negative,
    "regime.hint.*": optional(checks.nonempty_str),
    "regime.dist.*": non_negative,
    "regime.teacher_input": choice(*TEACHER_INPUTS),
    "regime.cache_teacher": either(boolean, choice("auto"), allowed="auto, true or false"),
    "regime.method": choice(*MERGE_METHODS),
    "regime.base": optional(sources),
    "regime.scaling": optional(non_negative),
    "regime.ties_keep": fraction_up_to_one,
    "regime.dare_p": checks.fraction_below_one,
    "regime.dare_with": choice(*DARE_WITH),
    "regime.fisher_samples": positive_int,
    "regime.fisher_target": choice(*FISHER_TARGETS),
    "regime.fisher_eps": positive,
    "regime.bn": choice(*BN_POLICIES),
    "regime.bn_samples": positive_int,
    "regime.alphas": list_of(checks.probability, "numbers in [0, 1]"),
    "regime.ensemble_baseline": boolean,
    "regime.tasks": boolean,
    "regime.sampler": choice(*NAS_SAMPLERS),
    "regime.num_random": non_negative_int,
    "regime.inplace_kd": choice(*INPLACE_KD),
    "regime.alpha_min": real,
    "regime.alpha_max": real,
    "regime.ratio_clip": positive,
    "regime.bn_policy": choice(*NAS_BN_POLICIES),
    "regime.bn_calibration_images": positive_int,
    "regime.full_epochs": non_negative_int,
    "regime.sort_channels": boolean,
    "regime.optimizer.lr": positive,
    "regime.optimizer.momentum": checks.fraction_below_one,
    "regime.optimizer.weight_decay": non_negative,
    "regime.optimizer.nesterov": boolean,
    "regime.optimizer.betas": betas,
    "regime.optimizer.eps": positive,
    "regime.scheduler.warmup_epochs": non_negative_int,
    "regime.scheduler.min_lr_ratio": checks.probability,
    "regime.scheduler.milestones": ascending_fractions,
    "regime.scheduler.gamma": positive,
}

TRAINER_RULES: dict[str, Rule] = {
    "trainer.accelerator": choice(*ACCELERATORS),
    "trainer.devices": devices,
    "trainer.strategy": strategy,
    "trainer.strategy.process_group_backend": choice("gloo", "nccl", "mpi"),
    "trainer.strategy.*": anything,  # the strategy's own arguments: Lightning checks them
    "trainer.sync_batchnorm": boolean,
    "trainer.max_epochs": positive_int,
    "trainer.precision": choice(*PRECISIONS),
    "trainer.deterministic": either(boolean, choice("warn"), allowed="true, false or warn"),
    "trainer.gradient_clip_val": optional(positive),
    "trainer.check_val_every_n_epoch": positive_int,
    "trainer.log_every_n_steps": positive_int,
    "trainer.enable_progress_bar": boolean,
    "trainer.enable_model_summary": boolean,
    "trainer.num_sanity_val_steps": int_at_least(-1),
    "trainer.use_distributed_sampler": boolean,
    "trainer.limit_train_batches": optional(batches),
    "trainer.limit_val_batches": optional(batches),
    "trainer.overfit_batches": batches,
    "trainer.fast_dev_run": either(boolean, non_negative_int, allowed="true, false or a count"),
}

CALLBACK_RULES: dict[str, Rule] = {
    "callbacks.*": optional(checks.mapping),  # a callback, or null to switch it off
    "callbacks.*.monitor": checks.nonempty_str,
    "callbacks.*.mode": choice("min", "max"),
    "callbacks.*.filename": checks.nonempty_str,
    "callbacks.*.save_top_k": int_at_least(-1),
    "callbacks.*.save_last": boolean,
    "callbacks.*.auto_insert_metric_name": boolean,
    "callbacks.*.enable_version_counter": boolean,
    "callbacks.*.patience": non_negative_int,
    "callbacks.*.min_delta": non_negative,
}

LOGGER_RULES: dict[str, Rule] = {
    "logger.*": optional(checks.mapping),  # a logger, or null to switch it off
    "logger.*.name": text,
    "logger.*.version": either(text, non_negative_int, allowed="a string or a number"),
    "logger.*.default_hp_metric": boolean,
    "logger.*.project": checks.nonempty_str,
    "logger.*.entity": optional(checks.nonempty_str),
    "logger.*.group": optional(checks.nonempty_str),
    "logger.*.tags": list_of(text, "strings"),
    "logger.*.job_type": checks.nonempty_str,
    "logger.*.log_model": either(boolean, choice("all"), allowed="true, false or all"),
    "logger.*.offline": optional(boolean),
}

EVAL_RULES: dict[str, Rule] = {
    "eval.plots": boolean,
    "eval.calibration.n_bins": positive_int,
    "eval.calibration.calibrators": list_of(checks.nonempty_str, "calibrator names"),
    "eval.ood.detectors": list_of(checks.nonempty_str, "detector names"),
    "eval.ood.fit_max_samples": optional(positive_int),
    "eval.ood.model_max_samples": optional(positive_int),
    "eval.ood.fit_split": choice(*FIT_SPLITS),
    "eval.ood.histogram_detector": optional(checks.nonempty_str),
    "eval.ood.select_on_val": boolean,
    "eval.ood.hyperparameters.*": whole(optional(checks.mapping)),  # each detector checks its own
    "eval.ood.sets.*": optional(checks.mapping),  # a set, or null to switch it off
    "eval.ood.sets.*.group": choice(*OOD_GROUPS),
    "eval.ood.sets.*.count": optional(positive_int),
    "eval.ood.sets.*.val_count": optional(non_negative_int),
    "eval.ood.sets.*.seed": seed,
    "eval.ood.sets.*.kind": checks.nonempty_str,
    "eval.ood.sets.*.root": path,
    "eval.ood.sets.*.cache_dir": path,
    "eval.ood.sets.*.channels": choice(1, 3),
    "eval.ood.sets.*.split": choice("train", "test"),
    "eval.ood.sets.*.image_size": image_size,
    "eval.ood.sets.*.classes": optional(class_list),
    "eval.shift.corruptions": list_of(checks.nonempty_str, "corruption names"),
    "eval.shift.severities": list_of(
        either(choice(1, 2, 3, 4, 5), allowed="an integer in 1..5"), "severities 1..5"
    ),
    "eval.shift.seed": seed,
    "eval.shift.max_samples": optional(positive_int),
}

TOP_LEVEL_RULES: dict[str, Rule] = {
    "name": checks.nonempty_str,
    "seed": seed,
    "tags": list_of(text, "strings"),
    "eval_checkpoint": choice(*CHECKPOINTS),
    "on_running": choice(*ON_RUNNING),
    "init_from": optional(sources),
    "init_from_head": choice(*HEAD_CHOICES),
    "debug_run": boolean,
    "paths.*": path,
    "*._target_": checks.nonempty_str,
    "*.*._target_": checks.nonempty_str,
    "*.*.*._target_": checks.nonempty_str,
    "*.*.*.*._target_": checks.nonempty_str,
    "*._partial_": boolean,
    "*.*._partial_": boolean,
}

RULES: dict[str, Rule] = {
    **TOP_LEVEL_RULES,
    **MIXER_RULES,
    **BACKBONE_RULES,
    **DATA_RULES,
    **REGIME_RULES,
    **TRAINER_RULES,
    **CALLBACK_RULES,
    **LOGGER_RULES,
    **EVAL_RULES,
}


def _matches(pattern: Sequence[str], key: Sequence[str]) -> bool:
    return len(pattern) == len(key) and all(
        p in ("*", k) for p, k in zip(pattern, key, strict=True)
    )


_PATTERNS = [(tuple(p.split(".")), rule) for p, rule in RULES.items() if "*" in p]


def rule_for(key: str) -> Rule | None:
    """The rule for a dotted key: its own, else the first pattern that matches it."""
    if key in RULES:
        return RULES[key]
    parts = tuple(key.split("."))
    for pattern, rule in _PATTERNS:
        if _matches(pattern, parts):
            return rule
    return None


class ConfigValue(NamedTuple):
    key: str  # dotted, from the root
    value: Any  # resolved, as plain containers
    copied: bool  # an interpolation: the value was set (and is checked) at another key


def check_config(cfg: DictConfig | Mapping, *, groups: Sequence[str] | None = None) -> None:
    """Check every value of ``cfg`` (only those under ``groups`` when given) by its rule.

    Raises ``ValueError`` naming the full key, the value given and what is allowed;
    a mandatory value left unset (``???``) is named with how to set it. Values set
    directly are checked before copies of them, so a bad value is named where it
    was typed (``regime.label_smoothing``), not where it was copied to.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    values = [v for v in config_values(cfg) if groups is None or v.key.split(".")[0] in groups]
    for item in sorted(values, key=lambda v: v.copied):
        if item.value == MISSING:
            raise ValueError(
                f"{item.key} has no value and needs one: add {item.key}=<value> to the command"
            )
        rule = rule_for(item.key)
        if rule is not None:
            rule(item.key, item.value)


def config_values(node: DictConfig, prefix: str = "") -> Iterator[ConfigValue]:
    """Every value of ``node``, mappings included; into each mapping unless its rule
    checks it whole."""
    for key in node:
        full = f"{prefix}{key}"
        if full == "hydra":  # Hydra's own node (a search trial's config has it): Hydra checks it
            continue
        if OmegaConf.is_missing(node, key):
            yield ConfigValue(full, MISSING, False)
            continue
        copied = OmegaConf.is_interpolation(node, key)
        try:
            value = node[key]
        except Exception as exc:  # an interpolation that cannot be resolved
            raise ValueError(f"{full} cannot be resolved: {exc}".splitlines()[0]) from exc
        if isinstance(value, DictConfig | ListConfig):
            plain = OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
            yield ConfigValue(full, plain, copied)
            if isinstance(value, DictConfig) and not getattr(rule_for(full), "whole", False):
                yield from config_values(value, f"{full}.")
        else:
            yield ConfigValue(full, value, copied)
