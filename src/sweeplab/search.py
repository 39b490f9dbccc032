"""The search app: ``sweeplab search hparams_search=<preset> [overrides…]``.

An Optuna study whose trials are ordinary runs of the run store. It uses Optuna's own
ask-and-tell API with SQLite storage in the runs directory rather than Hydra's Optuna
sweeper, whose release pins Optuna 2 and SQLAlchemy 1 while this project needs Optuna
3.4 or later; and it makes a relaunch finish the study: a search stopped at any point continues until
``n_trials`` trials are complete, a trial that was running when it stopped is marked
failed and its parameters are tried again (its run resumes from its checkpoint), and a
trial whose run is already complete is told its recorded value without training.

A study belongs to one search: its base config (the run id of the base overrides, so
paths, loggers and progress flags do not count) and its space (the ``params``, the
metric and its direction) are stored as the study's user attributes when it is
created, and a launch with another base or space under the same study name is
refused with both named, rather than continuing (or reporting the best of) a study
of other runs. ``n_trials`` and the other settings may change between launches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("sweeplab.search")

USAGE = """usage: sweeplab search hparams_search=<preset> [overrides…]

Run (or continue) the Optuna study of a conf/hparams_search preset; every trial is a run.
  sweeplab search hparams_search=digits_optuna
  sweeplab search hparams_search=digits_optuna hparams_search.n_trials=40
A study belongs to its base overrides and search space: the same command continues it, and
other overrides (say backbone=mlp) under the same study name are refused; give them their own,
  sweeplab search hparams_search=digits_optuna backbone=mlp hparams_search.study_name=digits_mlp
"""

PARAM_TYPES = ("float", "int", "categorical")


class SearchError(Exception):
    """A search that cannot start or must stop; the message says why."""


def compose_train(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sweeplab.configs import config_dir
    from sweeplab.tracking.identity import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    except Exception as exc:
        raise SearchError(f"the overrides do not compose: {exc}") from exc
    finally:
        GlobalHydra.instance().clear()


def check_search(search: DictConfig | None) -> dict[str, Any]:
    """The ``hparams_search`` node as a plain dict, refusing impossible values by key."""
    if search is None:
        raise SearchError("choose a search preset, e.g. hparams_search=digits_optuna")
    spec = OmegaConf.to_container(search, resolve=True)
    if spec.get("direction") not in ("minimize", "maximize"):
        raise SearchError(
            f"hparams_search.direction must be minimize or maximize, got {spec.get('direction')!r}"
        )
    if not isinstance(spec.get("n_trials"), int) or spec["n_trials"] < 1:
        raise SearchError(f"hparams_search.n_trials must be ≥ 1, got {spec.get('n_trials')!r}")
    rate = spec.get("max_failure_rate")
    if not isinstance(rate, int | float) or not 0 < rate <= 1:
        raise SearchError(f"hparams_search.max_failure_rate must be in (0, 1], got {rate!r}")
    if not spec.get("params"):
        raise SearchError("hparams_search.params is empty: name at least one override to search")
    for key, param in spec["params"].items():
        if not isinstance(param, dict) or param.get("type") not in PARAM_TYPES:
            raise SearchError(f"hparams_search.params.{key}.type must be one of {PARAM_TYPES}")
    return spec


def suggest(trial, key: str, param: dict[str, Any]) -> Any:
    if param["type"] == "categorical":
        return trial.suggest_categorical(key, list(param["choices"]))
    if param["type"] == "int":
        return trial.suggest_int(
            key, int(param["low"]), int(param["high"]), log=param.get("log", False)
        )
    return trial.suggest_float(
        key, float(param["low"]), float(param["high"]), log=param.get("log", False)
    )


# The study's user attributes that say which search it belongs to.
KEY_ATTRS = ("sweeplab_base_id", "sweeplab_space")


def study_key(cfg: DictConfig, base: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """What a study belongs to: the run id of its base config and its search space
    (``base`` is kept beside them for the message that names a mismatch)."""
    from sweeplab.tracking.identity import compute_run_id

    try:
        base_id = compute_run_id(cfg)
    except ValueError as exc:
        raise SearchError(str(exc)) from exc
    space = {"params": spec["params"], "metric": spec["metric"], "direction": spec["direction"]}
    shown = [o for o in base if not o.lstrip("+~").startswith(("paths.", "hydra."))]
    return {"sweeplab_base_id": base_id, "sweeplab_space": space, "sweeplab_base": shown}


def _describe(key: dict[str, Any], which: str) -> str:
    if which == "sweeplab_base_id":
        base = " ".join(key.get("sweeplab_base") or []) or "the defaults"
        return f"base [{base}] (config {key.get('sweeplab_base_id')})"
    return f"space {json.dumps(key.get('sweeplab_space'), sort_keys=True)}"


def _check_key(study, spec: dict[str, Any], key: dict[str, Any]) -> None:
    """Stamp a new study with ``key``; refuse one made for another search."""
    attrs = study.user_attrs
    if not any(name in attrs for name in KEY_ATTRS):
        if study.trials:
            mismatch = "made without a record of its base and space"
        else:
            for name, value in key.items():
                study.set_user_attr(name, value)
            return
    else:
        differ = [name for name in KEY_ATTRS if attrs.get(name) != key[name]]
        if not differ:
            return
        mismatch = "made for {}; this search has {}".format(
            ", ".join(_describe(attrs, name) for name in differ),
            ", ".join(_describe(key, name) for name in differ),
        )
    digest = hashlib.sha256(
        json.dumps([key["sweeplab_base_id"], key["sweeplab_space"]], sort_keys=True).encode()
    ).hexdigest()[:8]
    raise SearchError(
        f"study {spec['study_name']} in {spec['storage']} was {mismatch}; continue it with "
        f"its own overrides, or start another with "
        f"hparams_search.study_name={spec['study_name']}_{digest}"
    )


def open_study(spec: dict[str, Any], key: dict[str, Any] | None = None):
    """The study in its SQLite file, created on first use and stamped with ``key`` (see
    :func:`study_key`), refused if made for another key; interrupted trials are requeued."""
    import optuna
    from optuna.trial import TrialState

    storage = str(spec["storage"])
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    existing = 0
    with contextlib.suppress(KeyError):  # KeyError: no such study yet
        existing = len(optuna.load_study(study_name=spec["study_name"], storage=storage).trials)
    study = optuna.create_study(
        study_name=spec["study_name"],
        storage=storage,
        direction=spec["direction"],
        sampler=optuna.samplers.TPESampler(seed=int(spec.get("seed", 0)) + existing),
        load_if_exists=True,
    )
    if key is not None:
        _check_key(study, spec, key)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.info("trial %d was interrupted: trying its parameters again", stale.number)
        study.tell(stale.number, state=TrialState.FAIL)
        study.enqueue_trial(stale.params)
    return study


def run_trial(base: list[str], params: dict[str, Any], metric: str) -> tuple[float | None, str]:
    """Train (or skip, if complete) the run of ``params``; its metric, or None and why not."""
    from sweeplab.tracking.identity import compute_run_id
    from sweeplab.train import execute

    overrides = [*base, *(f"{key}={value!r}" for key, value in params.items())]
    cfg = compose_train(overrides)
    choices = {
        group: str(option)
        for group, option in cfg.hydra.runtime.choices.items()
        if not group.startswith("hydra") and option is not None
    }
    run_dir = Path(str(cfg.paths.runs_dir)) / str(cfg.name) / compute_run_id(cfg)
    outcome = execute(cfg, run_dir, overrides, choices)
    if outcome.status == "failed":
        return None, f"{run_dir}: {outcome.error}"
    value = (outcome.record.get("metrics") or {}).get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{run_dir}: the record has no finite {metric}"
    return float(value), str(run_dir)


def search(overrides: list[str]) -> Any:
    """Run the study to ``n_trials`` complete trials; returns the study."""
    from optuna.trial import TrialState

    cfg = compose_train(overrides)
    spec = check_search(cfg.get("hparams_search"))
    base = [o for o in overrides if not o.lstrip("+~").startswith("hparams_search")]
    study = open_study(spec, study_key(cfg, base, spec))
    while True:
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        if complete >= spec["n_trials"]:
            break
        if trials and failed / len(trials) > spec["max_failure_rate"]:
            raise SearchError(
                f"{failed} of {len(trials)} trials failed, more than "
                f"hparams_search.max_failure_rate={spec['max_failure_rate']}; see sweeplab runs "
                "--status failed"
            )
        trial = study.ask()
        params = {key: suggest(trial, key, param) for key, param in spec["params"].items()}
        value, where = run_trial(base, params, spec["metric"])
        if value is None:
            log.error("trial %d failed: %s", trial.number, where)
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
            log.info("trial %d: %s=%.6g  (%s)", trial.number, spec["metric"], value, where)
    return study


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        study = search(args)
    except SearchError as exc:
        print(f"sweeplab search: {exc}", file=sys.stderr)
        return 1
    best = study.best_trial
    print(f"study {study.study_name}: {len(study.trials)} trials, best #{best.number}")
    print(f"  value {best.value:.6g}")
    for key, value in best.params.items():
        print(f"  {key}={value!r}")
    return 0
