"""The evaluation app: ``sweeplab eval run=<dir|id> [eval overrides…]``.

Re-evaluates a finished run with a changed ``eval`` config (more detectors, other
calibrators, more bins) from its eval cache and updates its record. The trained
model is fixed, so only ``eval`` keys may change. The model runs only for what the
cache lacks: a new OOD set, other corruptions, ODIN (it needs input gradients),
or a run without a cache; it is then loaded from its checkpoint.

It adds to the record: metrics it does not recompute (another detector, calibrator,
OOD set or corruption than the overrides ask for) are kept, the means over OOD sets
and corruptions are taken again over old and new, and the record's ``config.eval``
lists the union of what was computed then and now (detectors, calibrators,
corruptions, severities, OOD sets), so that it describes every metric it holds.
Other settings (bins, a detector's hyperparameters, the fit split) take the new
value and apply to what was recomputed. ``--replace`` drops every evaluation metric
first, so that the record holds exactly what this evaluation computed.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeplab.tracking.layout import CONFIG_FILE, runs_dir_from_overrides
from sweeplab.tracking.record import CorruptRecordError, now_iso, read_record, write_record

log = logging.getLogger("sweeplab.eval")

USAGE = """usage: sweeplab eval run=<run dir | run id> [--replace] [eval overrides…]

Recompute a finished run's evaluation from its eval cache and update its record.
Only eval keys may be overridden, e.g.
  sweeplab eval run=runs/digits_small_cnn/0123abcd4567 eval.ood.detectors=[knn,vim]
  sweeplab eval run=0123abcd4567 eval.calibration.n_bins=20 eval/ood_sets=digits
The metrics this does not recompute stay in the record (the first command adds knn
and vim beside the other detectors), and the record's config.eval lists the union.
--replace  drop the record's evaluation metrics first: it then holds only these.

A subnet of a supernet run, with the weights it inherits (e.g. one nas search found):
  sweeplab eval run=<supernet run> subnet=d1w0.5k3-d2w1k3-d1w1k5 [--bn-policy batch]
makes it a run of the store (regime=inherit: BatchNorm recalibrated as the search
scores it, nothing trained) and evaluates it the ordinary way; asked again, it
re-evaluates that run with the eval overrides given.
A run id is looked up in the run store: paths.runs_dir=… if given, else $SWEEPLAB_RUNS_DIR,\nelse $SWEEPLAB_HOME/runs, else ./runs.
"""

EVAL_OVERRIDE_PREFIXES = ("eval.", "eval=", "eval/", "paths.")


class EvalError(Exception):
    """A re-evaluation that cannot start; the message says what to do."""


class EvalConfigError(EvalError):
    """An ``eval`` value that cannot work; the message names the key, the value and what is
    allowed, and the command exits with :data:`CONFIG_ERROR_EXIT`."""


CONFIG_ERROR_EXIT = 2  # a usage error, as for an unknown command


def _is_eval_override(override: str) -> bool:
    return override.lstrip("+~").startswith(EVAL_OVERRIDE_PREFIXES)


def find_run(spec: str, runs_dir: Path | None = None) -> Path:
    """A run directory from a path or a (prefix of a) run id in the store."""
    from sweeplab.tracking.runs import RunError, open_run

    try:
        return open_run(spec, runs_dir, require_complete=False).path
    except RunError as exc:
        raise EvalError(str(exc)) from exc


def eval_config(record: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The run's stored config with its ``eval`` node recomposed under ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sweeplab.configs import config_dir

    bad = [o for o in overrides if not _is_eval_override(o)]
    if bad:
        raise EvalError(
            f"sweeplab eval changes only eval (and paths) keys, got {bad}; the trained model "
            "is fixed: start a new run with sweeplab train for other settings"
        )
    stored = OmegaConf.create(record.get("config") or {})
    data_choice = (record.get("choices") or {}).get("data")
    previous = [o for o in record.get("overrides", []) if o.lstrip("+~").startswith("eval")]
    composed_overrides = ([f"data={data_choice}"] if data_choice else []) + previous + overrides
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            composed = compose("train", overrides=composed_overrides)
    except Exception as exc:
        raise EvalError(f"the eval overrides do not compose: {exc}") from exc
    finally:
        GlobalHydra.instance().clear()
    # The new eval node resolves its interpolations (paths, seed) against the run's config.
    stored.eval = OmegaConf.to_container(composed.eval, resolve=False)
    for override in overrides:
        if override.startswith("paths."):
            key, _, value = override.partition("=")
            OmegaConf.update(stored, key, value)
    return stored


def _load_model(cfg: DictConfig, run_dir: Path, device):
    """The run's data and regime with its evaluated weights, loaded safely (``weights_only``)."""
    from sweeplab.assembly import ModelInput, setup_data
    from sweeplab.regimes.loading import load_model
    from sweeplab.tracking.runs import Run, RunError

    which = "best" if cfg.get("eval_checkpoint") == "best" else "last"
    try:
        module = load_model(Run(run_dir, read_record(run_dir)), which)
    except RunError as exc:
        raise EvalError(
            f"the eval cache lacks what this evaluation needs and the model cannot be "
            f"loaded to recompute it: {exc}"
        ) from exc
    datamodule = setup_data(cfg)
    if ModelInput.of(datamodule) != module.model_input:
        raise EvalError(
            f"run {run_dir.name}: its data now gives {ModelInput.of(datamodule).describe()}, "
            f"but the model was built for {module.model_input.describe()}"
        )
    return datamodule, module.to(device)


# The lists of what is evaluated: adding to a record takes their union.
UNION_KEYS = (
    ("ood", "detectors"),
    ("calibration", "calibrators"),
    ("shift", "corruptions"),
    ("shift", "severities"),
)


def merged_eval_config(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The ``eval`` config of a record after adding ``new`` to ``stored``: ``new``, with
    the lists of :data:`UNION_KEYS` and the OOD sets extended by the stored ones."""
    merged = copy.deepcopy(new)
    for section, key in UNION_KEYS:
        before = (stored.get(section) or {}).get(key) or []
        now = (merged.get(section) or {}).get(key) or []
        if before or now:
            union = list(before) + [item for item in now if item not in before]
            merged.setdefault(section, {})[key] = union
    sets = {**((stored.get("ood") or {}).get("sets") or {})}
    sets.update((merged.get("ood") or {}).get("sets") or {})
    if sets:
        merged.setdefault("ood", {})["sets"] = sets
    return merged


def _merged_details(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``record["evaluation"]`` after adding: the OOD notes per detector and set kept."""
    merged = {**before, **now}
    old_ood, new_ood = before.get("ood") or {}, now.get("ood") or {}
    if old_ood and new_ood:
        merged["ood"] = {**old_ood, **new_ood}
        for key in ("groups", "hyperparameters", "skipped", "subsampled"):
            merged["ood"][key] = {**(old_ood.get(key) or {}), **(new_ood.get(key) or {})}
    return merged


def evaluate_run(run_dir: Path, overrides: list[str], replace: bool = False) -> dict[str, Any]:
    """Re-evaluate one complete run and write its record; returns the updated record.

    The recomputed metrics are added to the record's (see the module's docstring);
    ``replace`` drops its evaluation metrics first.
    """
    from sweeplab.evaluation.passes import EvalPasses, check_eval_config
    from sweeplab.evaluation.progress import EvalProgress
    from sweeplab.evaluation.report import evaluate_cached, is_eval_metric, merge_eval_metrics
    from sweeplab.files import atomic_write_text
    from sweeplab.schema import check_config

    try:
        record = read_record(run_dir)
    except CorruptRecordError as exc:
        raise EvalError(str(exc)) from exc
    if record is None:
        raise EvalError(f"{run_dir} has no record.json")
    if record.get("status") != "complete":
        raise EvalError(
            f"run {run_dir} is {record.get('status')}; only complete runs can be re-evaluated "
            "(relaunch its sweeplab train command to finish it)"
        )
    cfg = eval_config(record, overrides)
    try:
        check_config(cfg, groups=["eval"])
        check_eval_config(cfg.eval, (cfg.get("data") or {}).get("held_out_classes"))
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from exc
    started = time.time()
    progress = EvalProgress(show=True)
    passes = EvalPasses(cfg.eval, run_dir, force=False)
    missing = passes.missing()
    if missing:
        import torch

        accelerator = str(cfg.get("trainer", {}).get("accelerator", "cpu"))
        use_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        device = torch.device("cuda" if use_gpu else "cpu")
        log.info("running the model for what the eval cache lacks: %s", ", ".join(missing))
        datamodule, module = _load_model(cfg, run_dir, device)
        artifacts = passes.run(module, datamodule, device, progress)
    else:
        artifacts = {}
    report = evaluate_cached(run_dir, cfg.eval, progress)
    report.metrics.update(progress.metrics())
    details = {**report.details, "recomputed": missing}
    eval_node = OmegaConf.to_container(cfg.eval, resolve=True)
    metrics = record.get("metrics", {})
    if replace:
        kept = {k: v for k, v in metrics.items() if not is_eval_metric(k)}
        record["metrics"] = {**kept, **report.metrics}
    else:
        details = _merged_details(record.get("evaluation") or {}, details)
        groups = (details.get("ood") or {}).get("groups") or {}
        record["metrics"] = merge_eval_metrics(metrics, report.metrics, groups)
        eval_node = merged_eval_config(record["config"].get("eval") or {}, eval_node)
    record["artifacts"].update({**artifacts, **report.artifacts})
    record["evaluation"] = {**details, "replaced": replace}
    record["config"]["eval"] = eval_node
    record["evaluated"] = now_iso()
    record["eval_duration_s"] = round(time.time() - started, 3)
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(record["config"]))
    write_record(run_dir, record)
    return record


def _summary(record: dict[str, Any]) -> str:
    header = f"run {record['run_id']} re-evaluated ({record['eval_duration_s']:.1f} s)"
    return "\n".join([header, *_metric_lines(record["metrics"])])


def _metric_lines(metrics: dict[str, Any], keys=("test/cls/acc",)) -> list[str]:
    """The headline metrics of an evaluation, one indented line each."""
    lines = []
    for key in (*keys, "test/cal/ece", "test/cal/ece_ts", "shift/mean/acc"):
        if key in metrics:
            lines.append(f"  {key:<24} {metrics[key]:.4f}")
    for key in sorted(k for k in metrics if k.startswith(("ood/near/", "ood/far/"))):
        if key.endswith("/auroc"):
            lines.append(f"  {key:<24} {metrics[key]:.4f}")
    return lines


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    replace = "--replace" in args
    args = [a for a in args if a != "--replace"]
    bn_policy, args = _take_option(args, "--bn-policy")
    subnets = [a.partition("=")[2] for a in args if a.startswith("subnet=")]
    args = [a for a in args if not a.startswith("subnet=")]
    specs = [a for a in args if a.startswith("run=")]
    overrides = [a for a in args if not a.startswith("run=")]
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        print(f"sweeplab eval: unknown option {flags[0]}\n\n{USAGE}", file=sys.stderr)
        return 2
    if len(specs) != 1:
        print(f"sweeplab eval: give exactly one run=<dir|id>\n\n{USAGE}", file=sys.stderr)
        return 2
    runs_dir = runs_dir_from_overrides(overrides)
    if subnets or bn_policy is not None:
        return _evaluate_subnet(specs[0].partition("=")[2], subnets, bn_policy, overrides, replace)
    try:
        run_dir = find_run(specs[0].partition("=")[2], runs_dir)
        record = evaluate_run(run_dir, overrides, replace=replace)
    except EvalConfigError as exc:
        print(f"sweeplab: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except EvalError as exc:
        print(f"sweeplab eval: {exc}", file=sys.stderr)
        return 1
    print(_summary(record))
    return 0


def _take_option(args: list[str], option: str) -> tuple[str | None, list[str]]:
    """The value of ``option value`` (or ``option=value``) in ``args``, and the rest."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(option + "="):
            return arg.partition("=")[2], args[:i] + args[i + 1 :]
    return None, args


def _evaluate_subnet(
    spec: str, subnets: list[str], bn_policy: str | None, overrides: list[str], replace: bool
) -> int:
    """``subnet=<arch>``: a supernet's subnet evaluated as a run of its own."""
    from sweeplab.models.subnet_scoring import BN_POLICIES
    from sweeplab.nas.inherited_eval import InheritedEvalError, evaluate_inherited

    problem = None
    if len(subnets) != 1 or not subnets[0]:
        problem = "give exactly one subnet=<arch> (an architecture sweeplab nas search printed)"
    elif bn_policy is not None and bn_policy not in BN_POLICIES:
        problem = f"--bn-policy must be one of {', '.join(BN_POLICIES)}, got {bn_policy!r}"
    elif replace:
        problem = "--replace does not apply to subnet=: the subnet's run is evaluated afresh"
    bad = [o for o in overrides if not _is_eval_override(o)]
    if problem is None and bad:
        problem = f"subnet= takes only eval (and paths) overrides besides run=, got {bad}"
    if problem is not None:
        print(f"sweeplab eval: {problem}\n\n{USAGE}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    runs_dir = runs_dir_from_overrides(overrides)
    try:
        run_dir, record, launched = evaluate_inherited(
            spec, subnets[0], overrides, bn_policy, runs_dir
        )
    except EvalConfigError as exc:
        print(f"sweeplab: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except (EvalError, InheritedEvalError) as exc:
        print(f"sweeplab eval: {exc}", file=sys.stderr)
        return 1
    how = "evaluated as a new run" if launched else "its run in the store"
    supernet = ", ".join(record.get("sources") or [])
    print(f"subnet {subnets[0]} of supernet {supernet} (inherited weights): {how}, {run_dir}")
    print("\n".join(_metric_lines(record.get("metrics") or {}, ("val/cls/acc", "test/cls/acc"))))
    return 0
