"""Batches from in-memory tensors: a seeded per-epoch order, sharded across DDP ranks.

The order of an epoch is a pure function of ``(seed, epoch)``, so a run resumed from an
end-of-epoch checkpoint sees the same batches as one that never stopped. Evaluation
order is fixed, never sharded and never padded: metrics must see exactly N samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

EPOCH_SEED_STRIDE = 1_000_003  # seed * stride + epoch: distinct streams per (seed, epoch)


def distributed_rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of one training epoch."""
    generator = torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)
    return torch.randperm(num_samples, generator=generator)


class EpochBatchPlan:
    """Which sample indices form each batch of an epoch, on this process.

    ``shuffle=True`` is the training plan: a permutation per epoch, sharded ``rank::world``
    when a process group is initialised, truncated (``drop_last``) or wrapped around
    (otherwise, like ``DistributedSampler``) so that every rank yields the same number of
    batches. ``shuffle=False`` is the evaluation plan: ``0..N-1`` on every process.
    """

    def __init__(
        self, num_samples: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int = 0
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed

    def _world(self) -> tuple[int, int]:
        return distributed_rank_and_world_size() if self.shuffle else (0, 1)

    def samples_per_rank(self) -> int:
        _, world_size = self._world()
        if self.drop_last:
            return self.num_samples // world_size
        return math.ceil(self.num_samples / world_size)

    def __len__(self) -> int:
        per_rank = self.samples_per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def indices(self, epoch: int | None) -> Tensor:
        """This rank's sample order for ``epoch``; ``None`` keeps the source order."""
        if self.shuffle and epoch is not None:
            order = epoch_permutation(self.num_samples, self.seed, epoch)
        else:
            order = torch.arange(self.num_samples)
        rank, world_size = self._world()
        if world_size > 1:
            total = self.samples_per_rank() * world_size
            if total > self.num_samples:  # wrap around so every rank gets the same count
                order = order.repeat(math.ceil(total / self.num_samples))
            order = order[:total][rank::world_size]
        return order

    def batches(self, epoch: int | None) -> list[Tensor]:
        order = self.indices(epoch)
        batches = list(order.split(self.batch_size))
        return batches[: len(self)]


class PlannedLoader:
    """What every loader shares: a batch plan and the lazily chosen epoch order.

    ``begin_epoch`` is called when iteration actually starts (Lightning calls
    ``iter()`` once just to check that a loader is iterable) and returns the epoch
    whose order to use, or ``None`` for the fixed order. Without it the order is fixed.
    """

    def __init__(self, plan: EpochBatchPlan, begin_epoch: Callable[[], int | None] | None) -> None:
        self.plan = plan
        self.begin_epoch = begin_epoch

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    def __len__(self) -> int:
        return len(self.plan)

    def current_epoch(self) -> int | None:
        return self.begin_epoch() if self.begin_epoch is not None else None


class TensorBatchLoader(PlannedLoader):
    """Iterate ``(images[idx], labels[idx])`` CPU batches following an :class:`EpochBatchPlan`.

    ``begin_epoch`` is called lazily, when iteration actually starts (Lightning calls
    ``iter()`` once just to check that a loader is iterable), and returns the epoch whose
    order to use, or ``None`` for the fixed order. Without it the order is fixed.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        plan: EpochBatchPlan,
        begin_epoch: Callable[[], int | None] | None = None,
    ) -> None:
        if images.shape[0] != labels.shape[0] or plan.num_samples != labels.shape[0]:
            raise ValueError(
                f"images ({images.shape[0]}), labels ({labels.shape[0]}) and the batch plan "
                f"({plan.num_samples}) must describe the same number of samples"
            )
        super().__init__(plan, begin_epoch)
        self.images = images
        self.labels = labels

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in self.plan.batches(self.current_epoch()):
            yield self.images[index], self.labels[index]
