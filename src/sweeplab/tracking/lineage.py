"""Lineage: runs made from other runs name them by run id, never by the selector text.

A run built from finished runs (an ensemble of runs, a distillation teacher, merge
ingredients and a merge's base, the run ``init_from`` names) takes them from a config
key holding a run selector in the filter grammar of ``sweeplab runs``
(``"name=mnist_small_cnn seed=0,1,2"``) or a list of run ids. Before a run starts,
:func:`pin_sources` replaces each selector by the sorted ids it matches, so the
stored config rebuilds exactly these members, the record lists them under
``sources``, and the run id hashes them: a later run that matches
the same selector makes a new run instead of silently changing an old one.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweeplab.tracking.identity import RUN_ID_LENGTH

# Dotted config keys whose value names source runs (a selector string or a list of ids).
SOURCE_KEYS = ("regime.runs", "regime.teacher", "regime.base", "init_from")
# A value ending so names a checkpoint file, not runs: it is hashed as its path and
# stays out of ``sources``.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
SOURCES_FIELD = "sources"  # the record's sorted list of every source run id
FULL_RUN_ID = re.compile(f"[0-9a-f]{{{RUN_ID_LENGTH}}}")


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def source_ids(value: Any, runs_dir: str | None) -> list[str]:
    """The sorted run ids a source value names: a selector string, or run ids / dirs."""
    from sweeplab.tracking.runs import open_run, select_runs

    if isinstance(value, str) and "=" not in value:
        value = [value]  # one run id, id prefix or run directory
    if isinstance(value, str):
        runs = select_runs(value, runs_dir)
        if not _names_regime(value):
            runs = [run for run in runs if _trained(run)] or runs
        return sorted({run.run_id for run in runs})
    if not isinstance(value, Sequence | ListConfig) or not value:
        raise ValueError(f"expected a run selector or a non-empty list of run ids, got {value!r}")
    # Full run ids are taken as they are (a pinned config rebuilds without a store scan);
    # prefixes and directories are looked up.
    return sorted(
        {
            spec if FULL_RUN_ID.fullmatch(spec) else open_run(spec, runs_dir).run_id
            for spec in (str(item) for item in value)
        }
    )


def is_checkpoint_path(value: Any) -> bool:
    """Whether a source value is a checkpoint file's path rather than runs."""
    return isinstance(value, str) and value.strip().endswith(CHECKPOINT_SUFFIXES)


def _names_regime(selector: str) -> bool:
    return any(f.split("=", 1)[0].lstrip("+").startswith("regime") for f in shlex.split(selector))


def _trained(run) -> bool:
    """Whether the run trained a model (not an ensemble of runs or a merge, which match
    a selector only when it names ``regime=`` itself: an ensemble of ``seed=0,1,2``
    would otherwise take in the earlier ensembles of those seeds)."""
    from sweeplab.regimes.registry import list_regimes, regime_class

    choice = (run.record.get("choices") or {}).get("regime") or (
        run.config.get("regime") or {}
    ).get("name")
    return choice not in list_regimes() or regime_class(choice).trains


def resolve_sources(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{key: sorted run ids}`` for every source key the (resolved) config sets."""
    runs_dir = _lookup(config, "paths.runs_dir")
    resolved = {}
    for key in SOURCE_KEYS:
        value = _lookup(config, key)
        if value is None or is_checkpoint_path(value):
            continue
        try:
            resolved[key] = source_ids(value, runs_dir)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from exc
    return resolved


def pin_sources(cfg: DictConfig) -> list[str]:
    """Replace each source selector of ``cfg`` by its run ids; return all ids, sorted."""
    keys = [key for key in cfg if key != "hydra"]  # Hydra's node resolves only inside a job
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    pinned = resolve_sources(container)
    for key, ids in pinned.items():
        OmegaConf.update(cfg, key, ids, merge=False)
    return sorted({run_id for ids in pinned.values() for run_id in ids})
