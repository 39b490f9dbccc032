"""The eval cache: one forward pass per evaluation set, saved to disk.

Every metric, detector and calibrator reads these tensors instead of the model,
so new metrics can be computed for a finished run without running it again.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sweeplab.files import atomic_write_bytes

CACHE_DIR = "eval_cache"


@dataclass(frozen=True)
class EvalOutputs:
    """Per-member logits ``[N, M, C]``, pooled features ``[N, D]`` and labels ``[N]``."""

    member_logits: Tensor
    features: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.member_logits.ndim != 3 or self.member_logits.shape[0] != n:
            raise ValueError(
                f"member_logits must be [N={n}, M, C], got {tuple(self.member_logits.shape)}"
            )
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise ValueError(f"features must be [N={n}, D], got {tuple(self.features.shape)}")

    def to_dict(self) -> dict[str, Tensor]:
        return {
            "member_logits": self.member_logits,
            "features": self.features,
            "labels": self.labels,
        }


@torch.no_grad()
def collect_outputs(
    predict: Callable[[Tensor], tuple[Tensor, Tensor]],
    batches: Iterable[tuple[Tensor, Tensor]],
    preprocess: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
) -> EvalOutputs:
    """Run ``predict`` (a regime's ``predict_eval``) over every batch exactly once."""
    logits, features, labels = [], [], []
    for x, y in batches:
        member_logits, feats = predict(preprocess(x.to(device, non_blocking=True)))
        logits.append(member_logits.float().cpu())
        features.append(feats.float().cpu())
        labels.append(y.cpu())
    if not labels:
        raise ValueError("evaluation set is empty: no batches to evaluate")
    return EvalOutputs(torch.cat(logits), torch.cat(features), torch.cat(labels))


def save_outputs(outputs: EvalOutputs, run_dir: str | os.PathLike, split: str) -> Path:
    """Write ``eval_cache/<split>.pt`` atomically; returns the path relative to ``run_dir``."""
    buffer = io.BytesIO()
    torch.save(outputs.to_dict(), buffer)
    relative = Path(CACHE_DIR) / f"{split}.pt"
    atomic_write_bytes(Path(run_dir) / relative, buffer.getvalue())
    return relative


def load_outputs(run_dir: str | os.PathLike, split: str) -> EvalOutputs:
    """Read a cached split (tensors only: ``weights_only=True``)."""
    path = Path(run_dir) / CACHE_DIR / f"{split}.pt"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return EvalOutputs(data["member_logits"], data["features"], data["labels"])
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"eval cache {path} is corrupt ({exc}); delete it to recompute") from exc
