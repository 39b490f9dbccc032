"""The eval cache: one forward pass per evaluation set, saved to disk.

Every metric, detector and calibrator reads these tensors instead of the model,
so new metrics can be computed for a finished run without running it again.
Each file carries a fingerprint of what produced it (an OOD set's config, the
corruptions of the shift pass), so a changed set is recomputed, never mixed up.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sweeplab.files import atomic_write_bytes
from sweeplab.tracking.layout import EVAL_CACHE_DIR as CACHE_DIR


@dataclass(frozen=True)
class EvalOutputs:
    """Per-member logits ``[N, M, C]``, per-member pooled features ``[N, M, D]``, labels ``[N]``.

    Members of an ensemble have feature spaces of their own, so features keep the
    member axis. Features given as ``[N, D]`` (a single model's, and every cache
    written before the member axis existed) are read as ``M = 1``. OOD sets have no
    labels in the model's label space: their labels are ``-1``.
    """

    member_logits: Tensor
    features: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.member_logits.ndim != 3 or self.member_logits.shape[0] != n:
            raise ValueError(
                f"member_logits must be [N={n}, M, C], got {tuple(self.member_logits.shape)}"
            )
        if self.features.ndim == 2:
            object.__setattr__(self, "features", self.features.unsqueeze(1))
        members = self.member_logits.shape[1]
        if self.features.ndim != 3 or self.features.shape[:2] != (n, members):
            raise ValueError(
                f"features must be [N={n}, M={members}, D] (or [N, D] for M = 1), "
                f"got {tuple(self.features.shape)}"
            )

    @property
    def num_members(self) -> int:
        return self.member_logits.shape[1]

    def to_dict(self) -> dict[str, Tensor]:
        return {
            "member_logits": self.member_logits,
            "features": self.features,
            "labels": self.labels,
        }

    def subset(self, index: Tensor) -> EvalOutputs:
        return EvalOutputs(self.member_logits[index], self.features[index], self.labels[index])


@torch.no_grad()
def collect_outputs(
    predict: Callable[[Tensor], tuple[Tensor, Tensor]],
    batches: Iterable[tuple[Tensor, Tensor]],
    preprocess: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    keep_features: bool = True,
) -> EvalOutputs:
    """Run ``predict`` (a regime's ``predict_eval``) over every batch exactly once.

    ``predict`` returns member logits ``[B, M, C]`` and member features ``[B, M, D]``,
    or ``[B, D]`` for a single model; without ``keep_features`` they are ``[B, M, 0]``.
    """
    logits, features, labels = [], [], []
    for x, y in batches:
        member_logits, feats = predict(preprocess(x.to(device, non_blocking=True)))
        if feats.ndim == 2:
            feats = feats.unsqueeze(1)
        if not keep_features:
            feats = feats.new_empty(len(y), member_logits.shape[1], 0)
        logits.append(member_logits.float().cpu())
        features.append(feats.float().cpu())
        labels.append(y.cpu())
    if not labels:
        raise ValueError("evaluation set is empty: no batches to evaluate")
    return EvalOutputs(torch.cat(logits), torch.cat(features).cpu(), torch.cat(labels))


def cache_file(run_dir: str | os.PathLike, name: str) -> Path:
    return Path(run_dir) / CACHE_DIR / f"{name}.pt"


def save_tensors(run_dir: str | os.PathLike, name: str, data: dict[str, Any]) -> Path:
    """Write ``eval_cache/<name>.pt`` atomically; returns the path relative to ``run_dir``."""
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(cache_file(run_dir, name), buffer.getvalue())
    return Path(CACHE_DIR) / f"{name}.pt"


def load_tensors(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read a cache file safely (``weights_only=True``); a damaged file says how to recover."""
    path = cache_file(run_dir, name)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"eval cache {path} is corrupt ({exc}); delete it to recompute") from exc


def save_outputs(
    outputs: EvalOutputs, run_dir: str | os.PathLike, name: str, fingerprint: str = ""
) -> Path:
    """Write one evaluation set's outputs; returns the path relative to ``run_dir``."""
    return save_tensors(run_dir, name, {**outputs.to_dict(), "fingerprint": fingerprint})


def load_outputs(run_dir: str | os.PathLike, name: str) -> EvalOutputs:
    """Read one cached evaluation set (tensors only: ``weights_only=True``)."""
    data = load_tensors(run_dir, name)
    try:
        return EvalOutputs(data["member_logits"], data["features"], data["labels"])
    except (KeyError, ValueError) as exc:
        path = cache_file(run_dir, name)
        raise ValueError(f"eval cache {path} is corrupt ({exc}); delete it to recompute") from exc


def cached_fingerprint(run_dir: str | os.PathLike, name: str) -> str | None:
    """The fingerprint a cache file was written with; ``None`` if absent or unreadable."""
    try:
        return str(load_tensors(run_dir, name).get("fingerprint", ""))
    except (FileNotFoundError, ValueError):
        return None
