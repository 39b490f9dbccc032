"""``sweeplab eval run=<supernet run> subnet=<arch>``: the whole evaluation of a searched subnet.

The search scores subnets on val alone. To see a chosen subnet's test accuracy,
calibration, OOD detection and robustness with the weights it inherits, this makes
it a run of the store with nothing trained (``regime=inherit``,
:mod:`sweeplab.regimes.inherited`): the supernet's data, space and BatchNorm settings,
``init_from`` the supernet, evaluated the ordinary way. Its run id hashes the
supernet's id and the architecture, so asking again finds the same run; eval
overrides then re-evaluate it as ``sweeplab eval`` does any run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeplab.models.search_space import SearchSpace
from sweeplab.tracking.runs import Run, RunError, open_run

# The supernet run's overrides that say how it trained, not what data and space it has.
_TRAINING_ONLY = ("regime=", "regime.", "regime/", "backbone=", "backbone.arch=")


class InheritedEvalError(Exception):
    """The subnet cannot be evaluated; the message says why and what to do."""


def supernet_of(spec: str, runs_dir: str | os.PathLike | None) -> Run:
    """The complete supernet run ``spec`` names (a run id, a prefix of one, or a directory)."""
    try:
        run = open_run(spec, runs_dir)
    except RunError as exc:
        raise InheritedEvalError(str(exc)) from None
    regime = (run.record.get("choices") or {}).get("regime")
    if regime != "supernet":
        raise InheritedEvalError(
            f"subnet= evaluates a subnet of a supernet run, but run {run.run_id} has "
            f"regime={regime}; give a run of regime=supernet"
        )
    return run


def checked_arch(run: Run, arch: str) -> str:
    """``arch`` if it lies in the supernet's search space; else a one-line error."""
    backbone = run.config["backbone"]
    space = SearchSpace.of(
        backbone["widths"],
        backbone["depths"],
        backbone["width_mults"],
        backbone["kernels"],
        backbone["stem_width"],
    )
    try:
        space.decode(arch, key="subnet")
    except ValueError as exc:
        raise InheritedEvalError(f"{exc} of supernet {run.run_id}") from None
    return arch


def inherited_overrides(run: Run, arch: str, bn_policy: str | None = None) -> list[str]:
    """The overrides of the run that evaluates subnet ``arch`` of supernet ``run`` with
    the weights it inherits, BatchNorm as the supernet scores its subnets (or ``bn_policy``)."""
    regime = run.config["regime"]
    kept = [o for o in run.record.get("overrides") or [] if not o.startswith(_TRAINING_ONLY)]
    return [
        *kept,
        "regime=inherit",
        f"regime.seed={regime['seed']}",
        f"regime.bn_policy={bn_policy or regime['bn_policy']}",
        f"regime.bn_calibration_images={regime['bn_calibration_images']}",
        f"init_from={run.run_id}",
        "backbone=subnet",
        f"backbone.arch={arch}",
    ]


def inherited_run_dir(overrides: list[str]) -> Path:
    """Where the run of ``overrides`` lives in the store (composed and its eval values
    checked, not launched)."""
    from sweeplab.evaluate import EvalConfigError
    from sweeplab.schema import check_config
    from sweeplab.search import SearchError, compose_train
    from sweeplab.tracking.identity import compute_run_id

    try:
        cfg = compose_train(overrides)
    except SearchError as exc:
        raise InheritedEvalError(f"the subnet's run does not compose: {exc}") from None
    try:
        check_config(cfg, groups=["eval"])
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from None
    return Path(cfg.paths.runs_dir) / cfg.name / compute_run_id(cfg)


def evaluate_inherited(
    spec: str,
    arch: str,
    eval_overrides: list[str],
    bn_policy: str | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> tuple[Path, dict[str, Any], bool]:
    """Evaluate subnet ``arch`` of supernet ``spec``: ``(run dir, record, trained now)``.

    A run that is not in the store yet is launched (``sweeplab train``, nothing trains);
    one that is complete is re-evaluated when ``eval_overrides`` ask for more.
    """
    from sweeplab.evaluate import evaluate_run
    from sweeplab.tracking.record import read_record

    run = supernet_of(spec, runs_dir)
    base = inherited_overrides(run, checked_arch(run, arch), bn_policy)
    overrides = [o for o in base if o not in eval_overrides] + eval_overrides
    run_dir = inherited_run_dir(overrides)
    record = read_record(run_dir)
    if record and record.get("status") == "complete":
        evaluated = [o for o in eval_overrides if not o.startswith("paths.")]
        if evaluated:
            record = evaluate_run(run_dir, evaluated)
        return run_dir, record, False
    command = [sys.executable, "-m", "sweeplab", "train", *overrides]
    # The run's own results line goes with its status lines (file descriptor 2):
    # stdout holds this command's result alone.
    subprocess.run(command, check=False, stdout=2)
    record = read_record(run_dir)
    if not record or record.get("status") != "complete":
        reason = (record or {}).get("error") or "it left no record"
        raise InheritedEvalError(f"the subnet's run {run_dir} did not complete: {reason}")
    return run_dir, record, True


def eval_command(
    run_id: str, arch: str, bn_policy: str | None = None, store: Sequence[str] = ()
) -> str:
    """The command that evaluates subnet ``arch`` of supernet ``run_id`` with inherited
    weights; ``store`` holds the ``paths.*`` overrides that find the supernet's store."""
    policy = [f"--bn-policy {bn_policy}"] if bn_policy else []
    return " ".join(
        ["sweeplab eval", f"run={run_id}", f"subnet={arch}", *policy, *map(shlex.quote, store)]
    )
