"""Deterministic train/val/test planning: carving, held-out classes, label remapping, subsets.

Splits are planned on labels alone, as index arrays into the source's ``train`` and
``test`` pools, so the same plan serves decoded tensors and streamed image folders alike.
Every random choice has its own seed derived from the run seed and a purpose string:
the val split does not change when ``train_subset`` or the held-out classes do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

FIXED_TEST_FRACTION = 0.2
FIXED_TEST_SEED = 0  # a constant: every run seed is tested on the same images


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose, stable across processes and Python versions."""
    digest = hashlib.sha256(f"sweeplab/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def carve_counts(class_counts: Tensor, fraction: float) -> Tensor:
    """How many samples of each class to carve: ``fraction · n_c`` rounded so the total is
    ``round(fraction · N)`` (largest remainders round up; ties go to the lower label)."""
    exact = class_counts.double() * fraction
    counts = torch.floor(exact).long()
    total = int(torch.floor(class_counts.sum().double() * fraction + 0.5))
    missing = total - int(counts.sum())
    if missing > 0:
        counts[torch.argsort(counts.double() - exact, stable=True)[:missing]] += 1
    return counts


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into ``(rest, carved)``, carving a ``fraction`` of each class
    (see :func:`carve_counts`); which samples is drawn from ``seed``.

    Both outputs are sorted, so the kept samples stay in source order.
    """
    labels = labels.long()
    n = labels.numel()
    if n == 0:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    grouped = perm[torch.argsort(labels[perm], stable=True)]  # by class, random within class
    grouped_labels = labels[grouped]
    counts = torch.bincount(labels)
    class_starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - class_starts[grouped_labels]
    carved_mask = rank_in_class < carve_counts(counts, fraction)[grouped_labels]
    return grouped[~carved_mask].sort().values, grouped[carved_mask].sort().values


@dataclass(frozen=True)
class SplitPart:
    """Samples of one split: ``indices`` into the source pool ``pool`` and final ``labels``."""

    pool: str  # "train" or "test": which source array the indices point into
    indices: Tensor
    labels: Tensor


@dataclass(frozen=True)
class SplitPlan:
    """The three splits, the held-out test samples (original labels) and the kept classes."""

    train: SplitPart
    val: SplitPart
    test: SplitPart
    held_out: SplitPart | None
    kept_classes: tuple[int, ...]
    # Held-out-class samples of the train pool (never trained on, disjoint from test):
    # a validation OOD set for choosing detector hyperparameters.
    held_out_val: SplitPart | None = None


def plan_splits(
    train_labels: Tensor,
    test_labels: Tensor | None,
    *,
    num_classes: int,
    seed: int,
    val_fraction: float,
    train_subset: int | None = None,
    held_out_classes: tuple[int, ...] = (),
) -> SplitPlan:
    """Plan the splits of a source with a train pool and an optional official test pool.

    Without ``test_labels`` a stratified ``FIXED_TEST_FRACTION`` of the train pool becomes
    the test split, chosen with ``FIXED_TEST_SEED`` whatever the run seed. Val is carved
    from what remains (stratified, from ``seed``), then held-out classes are removed from
    all three splits and the remaining labels are remapped to ``0..K-1`` in increasing
    order of the original label; ``train_subset`` is drawn last, from the remaining train.
    """
    train_labels = train_labels.long()
    all_train = torch.arange(train_labels.numel())
    if test_labels is None:
        candidates, test_indices = stratified_split(
            train_labels, FIXED_TEST_FRACTION, derive_seed(FIXED_TEST_SEED, "test_split")
        )
        test_pool, test_pool_labels = "train", train_labels
    else:
        candidates, test_indices = all_train, torch.arange(test_labels.numel())
        test_pool, test_pool_labels = "test", test_labels.long()

    rest, carved = stratified_split(
        train_labels[candidates], val_fraction, derive_seed(seed, "val_split")
    )
    train_indices, val_indices = candidates[rest], candidates[carved]

    held = torch.tensor(held_out_classes, dtype=torch.long)
    kept = tuple(c for c in range(num_classes) if c not in held_out_classes)
    remap = torch.full((num_classes,), -1, dtype=torch.long)
    remap[list(kept)] = torch.arange(len(kept))

    def keep(indices: Tensor, labels: Tensor) -> Tensor:
        return indices[~torch.isin(labels[indices], held)]

    held_val_indices = candidates[torch.isin(train_labels[candidates], held)]

    train_indices = keep(train_indices, train_labels)
    val_indices = keep(val_indices, train_labels)
    test_is_held = torch.isin(test_pool_labels[test_indices], held)
    held_indices, test_indices = test_indices[test_is_held], test_indices[~test_is_held]

    if train_subset is not None:
        if train_subset > train_indices.numel():
            raise ValueError(
                f"data.train_subset must be at most the {train_indices.numel()} training "
                f"samples left after carving val and removing held-out classes, "
                f"got {train_subset}"
            )
        chosen = torch.randperm(
            train_indices.numel(),
            generator=torch.Generator().manual_seed(derive_seed(seed, "train_subset")),
        )[:train_subset]
        train_indices = train_indices[chosen.sort().values]

    for split, indices in (("train", train_indices), ("val", val_indices)):
        if indices.numel() == 0:
            raise ValueError(
                f"data.val_fraction={val_fraction} leaves no {split} samples "
                f"out of {candidates.numel()}"
            )
    if test_indices.numel() == 0:
        raise ValueError("the test split is empty: the source has no test samples to evaluate on")

    return SplitPlan(
        train=SplitPart("train", train_indices, remap[train_labels[train_indices]]),
        val=SplitPart("train", val_indices, remap[train_labels[val_indices]]),
        test=SplitPart(test_pool, test_indices, remap[test_pool_labels[test_indices]]),
        held_out=(
            SplitPart(test_pool, held_indices, test_pool_labels[held_indices])
            if held_out_classes
            else None
        ),
        kept_classes=kept,
        held_out_val=(
            SplitPart("train", held_val_indices, train_labels[held_val_indices])
            if held_out_classes
            else None
        ),
    )
