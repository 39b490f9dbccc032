"""Run identity: a short hash of everything in the config that can change results.

Two launches with the same result-relevant config get the same run id and hence
the same run directory, which is what makes relaunching a sweep idempotent. A run made from other runs
hashes the ids of those runs, not the selector that found them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePath
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

RUN_ID_LENGTH = 12

# Dotted keys that never change a run's results: where files go, how progress is
# shown, which loggers receive copies, how data is fetched (loader workers, download,
# in memory or streamed: the same pixels either way). ``eval`` is left out because it
# never changes the trained model: ``sweeplab eval`` recomputes it for a finished run.
NON_RESULT_KEYS = (
    "hydra",
    "eval",
    "hparams_search",
    "name",
    "tags",
    "on_running",  # what to do when another trainer holds the run, not how it trains
    "paths",
    "logger",
    "regime.runs_dir",
    "regime.data_json",  # a copy of ``data``, which is hashed already
    "regime.ensemble_baseline",  # an extra evaluation of the sources, not the model
    "data.cache_dir",
    "data.num_workers",
    "data.download",
    "data.in_memory",
    "callbacks.model_checkpoint",
    "callbacks.throughput",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)
# Keys that change no recorded number: those the run id leaves out, except ``eval``,
# which leaves the model alone but changes the metrics computed from it.
NO_METRIC_KEYS = tuple(k for k in NON_RESULT_KEYS if k != "eval")


def changes_metrics(key: str) -> bool:
    """Whether a different value of ``key`` (an override's key, ``a.b`` or group ``a/b``)
    can change a run's metrics."""
    key = key.lstrip("+~")
    return not any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in NO_METRIC_KEYS)


# Top-level keys added after runs were stored: left unset they are not hashed (nor
# their companions, which mean nothing without them), so older run ids stay valid.
UNSET_KEYS = {"init_from": ("init_from_head",)}
# Path-valued keys: the file name identifies the data, the folder it sits in does not.
PATH_KEYS = ("data.root",)


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def _basename(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    if isinstance(tree.get(leaf), str):
        tree[leaf] = PurePath(tree[leaf]).name


def result_config(
    config: DictConfig | dict[str, Any], *, pin_sources: bool = True
) -> dict[str, Any]:
    """The resolved config restricted to keys that can change results.

    Source-run selectors are replaced by the run ids they match (``pin_sources``),
    which reads the run store; a selector that matches nothing raises ``ValueError``.
    """
    if isinstance(config, DictConfig):
        keys = [k for k in config if k != "hydra"]
        config = OmegaConf.to_container(
            OmegaConf.masked_copy(config, keys), resolve=True, throw_on_missing=True
        )
    tree = json.loads(json.dumps(config, default=str))
    if pin_sources:
        _pin_source_runs(tree)
    for key in NON_RESULT_KEYS:
        _drop(tree, key)
    for key, companions in UNSET_KEYS.items():
        if tree.get(key) is None:
            for dropped in (key, *companions):
                tree.pop(dropped, None)
    for key in PATH_KEYS:
        _basename(tree, key)
    return tree


def _pin_source_runs(tree: dict[str, Any]) -> None:
    """Source-run selectors become the sorted ids they match (see :mod:`.lineage`)."""
    from sweeplab.tracking.lineage import resolve_sources

    for dotted, ids in resolve_sources(tree).items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = ids


def compute_run_id(config: DictConfig | dict[str, Any], *, pin_sources: bool = True) -> str:
    """Stable short hash of :func:`result_config` (key order does not matter)."""
    tree = result_config(config, pin_sources=pin_sources)
    canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:RUN_ID_LENGTH]


def _run_id_resolver(*, _root_: DictConfig) -> str:
    """The run id for Hydra's run dir. A source selector that matches nothing falls back
    to hashing its text, so the runner itself reports the problem in one line."""
    try:
        return compute_run_id(_root_)
    except ValueError:
        return compute_run_id(_root_, pin_sources=False)


def _json_resolver(node: Any) -> str:
    """A config node as JSON text: passes a node with ``_target_`` to a constructor as data."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return json.dumps(node, sort_keys=True, default=str)


def seed_block(size: int, seed: int) -> str:
    """The seeds ``size·seed … size·seed + size − 1`` as ``a,b,c``: block ``seed`` of a
    sweep over ``size`` times as many seeds (the members of ensemble ``seed``)."""
    size, seed = int(size), int(seed)
    if size < 1 or seed < 0:
        raise ValueError(f"seed_block needs a size ≥ 1 and a seed ≥ 0, got {size}, {seed}")
    return ",".join(str(size * seed + k) for k in range(size))


def register_resolvers() -> None:
    """The config resolvers: ``${run_id:}`` (Hydra's run and sweep dirs use it),
    ``${json:${data}}`` (a node as JSON text) and
    ``${seed_block:5,${seed}}`` (see :func:`seed_block`)."""
    for name, resolver in (
        ("run_id", _run_id_resolver),
        ("json", _json_resolver),
        ("seed_block", seed_block),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=False)
