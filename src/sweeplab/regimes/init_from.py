"""``init_from=<run>``: a run starts from another finished run's weights.

Fine-tunes that merge well share one initialisation, so a sweep of fine-tunes names
a run of the store (``init_from=3f9c0a1b2c4d``, or a selector matching exactly one
run) and each of its runs starts from that run's ``last`` checkpoint. The source is
pinned to its run id like ``regime.runs`` (:mod:`sweeplab.tracking.lineage`): the run
id hashes it and the record lists it under ``sources``.

This lives beside the regimes, not inside one, because it applies to every regime
that trains: the runner calls :func:`apply_init_from` on the regime it built
(:func:`sweeplab.assembly.build_components`), before fitting and before a resume
replaces the weights by the run's own checkpoint. The models it writes into are the
regime's single ``backbone`` or each of its ``members``. The classifier ``head`` is
kept, unless the class counts differ or ``init_from_head=reinit`` asks for a fresh
one (the one the regime drew from its own seed). Every other entry must match the
source's in name and shape; the first that does not is named in a one-line error. A
subnet (``backbone=subnet``) started from a supernet run inherits the supernet's
weights cropped to its architecture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sweeplab.regimes.base import Regime

log = logging.getLogger(__name__)

HEAD_CHOICES = ("keep", "reinit")


def init_targets(regime: Regime) -> list[nn.Module]:
    """The models of ``regime`` that start from the source: its backbone, or its members."""
    backbone = getattr(regime, "backbone", None)
    if isinstance(backbone, nn.Module):
        return [backbone]
    members = getattr(regime, "members", None)
    if isinstance(members, nn.ModuleList) and len(members):
        return list(members)
    return []


def head_keys(model: nn.Module) -> set[str]:
    """State-dict names of the model's classifier (``model.head``), empty if it has none."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        return set()
    return {f"head.{key}" for key in head.state_dict()}


def one_run_id(value: Any, runs_dir: str | os.PathLike | None) -> str:
    """The single run id ``init_from`` names (pinned: a one-item list; else a selector)."""
    from sweeplab.tracking.lineage import source_ids

    try:
        ids = source_ids(value, None if runs_dir is None else str(runs_dir))
    except ValueError as exc:
        raise ValueError(f"init_from: {exc}") from None
    if len(ids) != 1:
        raise ValueError(
            f"init_from must name exactly one run, but it matches {len(ids)} "
            f"({', '.join(ids)}); narrow the selector or give a run id"
        )
    return ids[0]


def source_state(source: nn.Module, target: nn.Module) -> dict:
    """What ``source`` gives ``target``: its state dict, or, from a supernet to one of its
    subnets, the supernet's weights cropped to that subnet (OFA's inherited weights)."""
    from sweeplab.models.supernet import Subnet, Supernet

    if isinstance(source, Supernet) and isinstance(target, Subnet):
        if source.space != target.space:
            raise ValueError(
                "init_from: the subnet's search space (backbone.widths, depths, width_mults, "
                "kernels, stem_width) differs from the supernet's; use the supernet's"
            )
        return source.subnet_state(target.arch, like=target)
    return source.state_dict()


def init_state(
    target: nn.Module, source: nn.Module, reinit_head: bool, names: Sequence[str]
) -> dict:
    """The target's state dict with every entry the source provides (the head unless
    ``reinit_head``); ``names`` = (source, target) for the error message."""
    from sweeplab.regimes.merge_methods import first_difference

    skip = head_keys(target) | head_keys(source) if reinit_head else set()
    wanted = {k: v for k, v in target.state_dict().items() if k not in skip}
    given = {k: v for k, v in source_state(source, target).items() if k not in skip}
    difference = first_difference(given, wanted)
    if difference is not None:
        raise ValueError(
            f"init_from: run {names[0]} and {names[1]} have different architectures "
            f"(first difference at {difference}); train this run with the source's backbone"
        )
    return {**target.state_dict(), **given}


def apply_init_from(
    regime: Regime,
    run: Any,
    head: str = "keep",
    runs_dir: str | os.PathLike | None = None,
    this_run: str = "this run",
) -> str:
    """Load run ``run``'s ``last`` weights into ``regime``'s models; returns its run id.

    ``this_run`` names the run being built in error messages.
    """
    from sweeplab.regimes.loading import load_model, model_input_of
    from sweeplab.tracking.runs import open_run

    if head not in HEAD_CHOICES:
        raise ValueError(f"init_from_head must be one of {', '.join(HEAD_CHOICES)}, got {head!r}")
    if not (regime.trains or regime.starts_from_run):
        raise ValueError(
            f"init_from does not apply to regime={regime.regime_name}, which does not train; "
            "drop init_from (its sources are set by regime.runs)"
        )
    run_id = one_run_id(run, runs_dir)
    source_run = open_run(run_id, runs_dir)
    with torch.random.fork_rng(devices=[]):  # rebuilding the source draws no training randomness
        source = getattr(load_model(source_run), "backbone", None)
    if not isinstance(source, nn.Module):
        raise ValueError(f"init_from: run {run_id} has no single backbone to start from")
    targets = init_targets(regime)
    if not targets:
        raise ValueError(
            f"init_from: regime={regime.regime_name} has no backbone or members to initialise"
        )
    source_classes = model_input_of(source_run).num_classes
    this_classes = getattr(regime.model_input, "num_classes", source_classes)
    reinit = head == "reinit" or source_classes != this_classes
    for target in targets:
        target.load_state_dict(init_state(target, source, reinit, (run_id, this_run)))
    if reinit and source_classes != this_classes:
        log.info(
            "init_from %s: %d classes there, %d here: the head is re-initialised",
            run_id,
            source_classes,
            this_classes,
        )
    regime.init_source = run_id
    state = "re-initialised" if reinit else "kept"
    log.info("initialised %d model(s) from run %s (head %s)", len(targets), run_id, state)
    return run_id
