"""Run identity: a short hash of everything in the config that can change results.

Two launches with the same result-relevant config get the same run id and hence
the same run directory, which is what makes relaunching a sweep idempotent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePath
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
    "paths",
    "logger",
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


def result_config(config: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved config restricted to keys that can change results."""
    if isinstance(config, DictConfig):
        keys = [k for k in config if k != "hydra"]
        config = OmegaConf.to_container(
            OmegaConf.masked_copy(config, keys), resolve=True, throw_on_missing=True
        )
    tree = json.loads(json.dumps(config, default=str))
    for key in NON_RESULT_KEYS:
        _drop(tree, key)
    for key in PATH_KEYS:
        _basename(tree, key)
    return tree


def compute_run_id(config: DictConfig | dict[str, Any]) -> str:
    """Stable short hash of :func:`result_config` (key order does not matter)."""
    canonical = json.dumps(result_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:RUN_ID_LENGTH]


def _run_id_resolver(*, _root_: DictConfig) -> str:
    return compute_run_id(_root_)


def register_resolvers() -> None:
    """Make ``${run_id:}`` available to configs (Hydra's run and sweep dirs use it)."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", _run_id_resolver, use_cache=False)
