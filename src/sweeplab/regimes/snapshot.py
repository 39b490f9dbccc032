"""Snapshot ensembles (Huang et al. 2017): one training run, K cyclic restarts, K members.

``trainer.max_epochs`` is split into ``regime.cycles`` = K equal cycles. The
configured schedule (cosine by default, the paper's choice) runs once per cycle and
restarts at the start of the next, so the learning rate jumps back to its base value
at every cycle start. At the end of the last training batch of each cycle, before
that epoch's validation and checkpoint, the weights are copied into the module's
``snapshots``; they are part of its state, so a checkpoint holds the snapshots taken
so far and a killed run resumes with them. Validation scores the live model;
evaluation runs the K snapshots as the members ``[B, K, C]``. A model whose training
stopped before its last cycle ended (``trainer.max_steps``, an early stop, a
mid-training checkpoint) has fewer than K snapshots and refuses to evaluate: only
finished runs are evaluated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from sweeplab import checks
from sweeplab.augment.base import Mixer
from sweeplab.models.implicit_ensembles import at_least_two
from sweeplab.regimes.base import BackboneFactory, Regime, build_backbone
from sweeplab.regimes.registry import register_regime


def cosine_factor(step: int, steps: int) -> float:
    """``½ (1 + cos(π · step / steps))``: from 1 down to 0 over one cycle."""
    return 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


@register_regime("snapshot")
class Snapshot(Regime):
    """Snapshot ensemble: the weights at the end of each of K learning-rate cycles.

    Args:
        cycles: K ≥ 2 cycles (and members); ``trainer.max_epochs`` must be a multiple.
        seed: the backbone's initialisation.
    """

    def __init__(
        self,
        backbone: BackboneFactory | nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        cycles: int = 3,
        seed: int = 0,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "snapshot",
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, label_smoothing, check_finite_every, name)
        self.cycles = at_least_two("regime.cycles", cycles)
        self.backbone = build_backbone(backbone, seed=checks.seed("regime.seed", seed))
        self.snapshots = nn.ModuleList(copy.deepcopy(self.backbone) for _ in range(self.cycles))
        self.snapshots.requires_grad_(False)
        self.register_buffer("snapshots_taken", torch.zeros((), dtype=torch.long))
        self.attach_mixer(mixer, self.backbone)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = self.mix(x, y, batch_idx)
        return self.mixer.loss(mixed.forward(self.backbone), mixed)

    # -- cycles ----------------------------------------------------------------------

    def epochs_per_cycle(self) -> int:
        """``trainer.max_epochs / regime.cycles``; a one-line error if it does not divide."""
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs <= 0 or max_epochs % self.cycles:
            raise ValueError(
                f"trainer.max_epochs={max_epochs} must be a positive multiple of "
                f"regime.cycles={self.cycles} (each cycle is a whole number of epochs)"
            )
        return max_epochs // self.cycles

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.epochs_per_cycle()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """At the end of a cycle's last batch, keep the weights as that cycle's member."""
        epochs = self.epochs_per_cycle()
        if not self.trainer.is_last_batch or (self.current_epoch + 1) % epochs:
            return
        index = (self.current_epoch + 1) // epochs - 1
        self.snapshots[index].load_state_dict(self.backbone.state_dict())
        self.snapshots_taken.fill_(index + 1)

    def configure_optimizers(self):
        """The configured schedule once per cycle, restarted at each cycle's first step."""
        epochs = self.epochs_per_cycle()
        optimizer = self.optimizer_factory(self.trainable_parameters())
        total_steps = max(1, int(min(self.trainer.estimated_stepping_batches, 2**31)))
        steps_per_epoch = max(1, total_steps // self.trainer.max_epochs)
        cycle_steps = steps_per_epoch * epochs
        if self.scheduler_factory is None:

            def within(step: int) -> float:
                return cosine_factor(step, cycle_steps)
        else:
            inner = self.scheduler_factory(
                optimizer, total_steps=cycle_steps, steps_per_epoch=steps_per_epoch
            )
            if not isinstance(inner, LambdaLR) or len(inner.lr_lambdas) != 1:
                raise ValueError(
                    "regime=snapshot restarts regime.scheduler every cycle, so it must be one "
                    "of sweeplab.regimes.schedules (a LambdaLR), or null for plain cosine"
                )
            within = inner.lr_lambdas[0]
        scheduler = LambdaLR(optimizer, lambda step: within(step % cycle_steps))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- evaluation ------------------------------------------------------------------

    def validation_logits(self, x: Tensor) -> Tensor:
        """The live model during training: the snapshots are not all there yet."""
        return self.backbone(x).unsqueeze(1)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The K snapshots: logits ``[B, K, C]`` and pooled features ``[B, K, D]``."""
        taken = int(self.snapshots_taken)
        if taken < self.cycles:
            raise RuntimeError(
                f"regime=snapshot has {taken} of regime.cycles={self.cycles} snapshots: "
                "training stopped before its last cycle ended; evaluate a finished run"
            )
        features = [member.features(x) for member in self.snapshots]
        logits = [member.head(f) for member, f in zip(self.snapshots, features, strict=True)]
        return torch.stack(logits, dim=1), torch.stack(features, dim=1)

    def member_heads(self) -> list[nn.Module]:
        return [member.head for member in self.snapshots]
