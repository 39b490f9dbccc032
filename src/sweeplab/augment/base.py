"""What every batch mixer shares: options, seeded draws, partners and soft targets.

A mixer turns a preprocessed training batch into a :class:`MixedBatch`: the inputs the
model sees and the soft targets ``[B, K]`` the loss compares against. Every random
choice (whether to mix, λ, partners, boxes, masks) comes from a CPU generator seeded
by (run seed, epoch, batch index, rank), so a resumed run repeats the mixes of one
that never stopped, and the global RNG is neither read nor advanced. The draws are
a few numbers per sample; they reach the device in one small copy, and the pixels
are mixed there, batched.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.losses import MixLoss

LAM_MODES = ("batch", "pair", "sample")
PARTNERS = ("permute", "flip", "pairs")


def step_seed(seed: int, epoch: int, batch_index: int, rank: int) -> int:
    """A 63-bit seed for one training step, stable across processes and Python versions."""
    key = f"sweeplab/mix/{seed}/{epoch}/{batch_index}/{rank}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def sample_beta(alpha: float, count: int, generator: torch.Generator) -> Tensor:
    """``count`` draws of Beta(α, α) from ``generator`` as float32 ``[count]``.

    ``torch.distributions.Beta`` takes no generator; this is the Dirichlet sampler it
    uses underneath, which does.
    """
    concentration = torch.full((count, 2), float(alpha), dtype=torch.float64)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0].float()


def blend(x: Tensor, partner_x: Tensor, share: Tensor | float) -> Tensor:
    """``x`` with a ``share`` in [0, 1] of each element taken from ``partner_x``.

    ``lerp`` is exact at both ends, so a 0/1 mask copies pixels bit for bit.
    """
    if not isinstance(share, Tensor):
        share = torch.tensor(share, dtype=x.dtype, device=x.device)
    return torch.lerp(x, partner_x, share.to(x.dtype))


class Mixer(ABC):
    """Base of every mixer: ``mixer(x, y) -> (x_mixed, y_soft)`` on device tensors.

    Args:
        num_classes: K, the width of the soft targets (set from the data by the runner).
        prob: fraction of batches that are mixed; the others train on hard labels.
        lam_mode: ``batch`` (one λ and one box/mask per batch), ``pair`` (one per pair of
            partners, who swap the same region) or ``sample`` (one per sample).
        partner: ``permute`` (a random permutation), ``flip`` (the batch reversed, as
            timm does) or ``pairs`` (random disjoint pairs; an odd one out keeps itself).
        label_smoothing: ε of each one-hot label before mixing (ε/K on every class).
        off_epoch: no mixing during the last this-many epochs of training.
        decoupled_weight: weight η of the decoupled mixup regulariser (0: plain mixup CE).
        seed: the run seed; with epoch and batch index it seeds each step's draws.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        prob: float = 1.0,
        lam_mode: str = "batch",
        partner: str = "permute",
        label_smoothing: float = 0.0,
        off_epoch: int = 0,
        decoupled_weight: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.num_classes = checks.positive_int("num_classes", num_classes)
        self.prob = checks.probability("augment.prob", prob)
        self.lam_mode = checks.one_of("augment.lam_mode", lam_mode, LAM_MODES)
        self.partner = checks.one_of("augment.partner", partner, PARTNERS)
        if self.lam_mode == "pair" and self.partner == "permute":
            raise ValueError(
                "augment.lam_mode=pair needs partners that come in pairs: "
                "set augment.partner=pairs (random pairs) or augment.partner=flip"
            )
        self.label_smoothing = checks.fraction_below_one("augment.label_smoothing", label_smoothing)
        self.off_epoch = checks.non_negative_int("augment.off_epoch", off_epoch)
        self.seed = checks.non_negative_int("augment.seed", seed)
        self.loss = self.make_loss(
            checks.non_negative("augment.decoupled_weight", decoupled_weight)
        )
        self._calls = 0  # the stream of plain ``mixer(x, y)`` calls

    def make_loss(self, decoupled_weight: float) -> MixLoss:
        return MixLoss(label_smoothing=self.label_smoothing, decoupled_weight=decoupled_weight)

    # ------------------------------------------------------------------ the contract
    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_mixed, y_soft)``; successive calls continue one seeded stream."""
        mixed = self.mix(x, y)
        return mixed.x, mixed.target

    def mix(
        self,
        x: Tensor,
        y: Tensor,
        *,
        epoch: int = 0,
        batch_index: int | None = None,
        max_epochs: int | None = None,
        rank: int = 0,
    ) -> MixedBatch:
        """Mix one batch; the draws are a function of ``(seed, epoch, batch_index, rank)``.

        Without ``batch_index`` the mixer's own call counter stands in for it.
        ``max_epochs`` lets ``off_epoch`` switch mixing off near the end.
        """
        if batch_index is None:
            batch_index = self._calls
            self._calls += 1
        generator = torch.Generator().manual_seed(step_seed(self.seed, epoch, batch_index, rank))
        applies = bool(torch.rand((), generator=generator) < self.prob)
        if not applies or not self.active(epoch, max_epochs):
            return self.unmixed(x, y)
        return self.mix_batch(x, y, generator)

    def active(self, epoch: int, max_epochs: int | None) -> bool:
        """False during the last ``off_epoch`` epochs (when the run has an epoch budget)."""
        if self.off_epoch == 0 or max_epochs is None or max_epochs <= 0:
            return True
        return epoch < max_epochs - self.off_epoch

    @abstractmethod
    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        """Mix a batch that was drawn to be mixed, taking every random choice from ``generator``."""

    def check_backbone(self, backbone: nn.Module) -> None:
        """Raise ``ValueError`` if this mixer cannot work with ``backbone``; most always can."""
        return None

    # ------------------------------------------------------------ for the subclasses
    def unmixed(self, x: Tensor, y: Tensor) -> MixedBatch:
        return MixedBatch(x=x, target=self.one_hot(y), labels=y)

    def one_hot(self, y: Tensor) -> Tensor:
        """Label-smoothed one-hot targets ``[B, K]``, the same as ``F.cross_entropy``'s."""
        target = F.one_hot(y, self.num_classes).to(torch.float32)
        if self.label_smoothing == 0:
            return target
        return target.mul_(1.0 - self.label_smoothing).add_(self.label_smoothing / self.num_classes)

    def draw_partners(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Each sample's partner ``[B]`` and which draw it takes λ (and geometry) from ``[B]``.

        Draws are indexed 0..B-1 and there are :meth:`draw_count` of them; in ``pair``
        mode both members of a pair read the draw of the lower index.
        """
        index = torch.arange(batch_size)
        if self.partner == "flip":
            partner = index.flip(0)
        elif self.partner == "pairs":
            order = torch.randperm(batch_size, generator=generator)
            paired = batch_size // 2 * 2
            first, second = order[0:paired:2], order[1:paired:2]
            partner = index.clone()
            partner[first], partner[second] = second, first
        else:
            partner = torch.randperm(batch_size, generator=generator)
        if self.lam_mode == "batch":
            draw = torch.zeros(batch_size, dtype=torch.long)
        elif self.lam_mode == "pair":
            draw = torch.minimum(index, partner)
        else:
            draw = index
        return partner, draw

    def draw_count(self, batch_size: int) -> int:
        """How many λ (and boxes or masks) a batch needs: one, or one per sample."""
        return 1 if self.lam_mode == "batch" else batch_size

    def mixed_target(self, y: Tensor, partner: Tensor, lam: Tensor) -> Tensor:
        """``λ · own + (1 − λ) · partner`` of the smoothed one-hot targets."""
        target = self.one_hot(y)
        return torch.lerp(target[partner], target, lam[:, None])

    def finish(self, x_mixed: Tensor, y: Tensor, partner: Tensor, lam: Tensor) -> MixedBatch:
        """The :class:`MixedBatch` of an input-space mix (``partner`` and ``lam`` on device)."""
        return MixedBatch(
            x=x_mixed,
            target=self.mixed_target(y, partner, lam),
            labels=y,
            lam=lam,
            partner=partner,
        )

    def __repr__(self) -> str:
        options = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "loss"}
        shown = ", ".join(f"{key}={value!r}" for key, value in options.items())
        return f"{type(self).__name__}({shown})"
