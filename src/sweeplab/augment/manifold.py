"""Manifold Mixup (Verma et al., "Manifold Mixup: Better Representations by Interpolating
Hidden States", ICML 2019).

Mixup of hidden representations: each step picks one stage uniformly among the
configured ones (stage 0 is the input, as in the paper) and mixes that stage's output
``λ · h + (1 − λ) · h[partner]`` through a forward hook, which is removed after the
step's forward pass. Backbones list the modules after which mixing may happen in
``mixing_stages()``: the blocks of SmallCNN and CifarResNet, the hidden layers of the
MLP, and the modules named in a timm model's ``feature_info``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sweeplab import checks
from sweeplab.augment.base import blend
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.checks import stage_list
from sweeplab.augment.mixup import Mixup


def mixing_stages(backbone: nn.Module) -> list[nn.Module]:
    """The modules after which ``backbone`` may be mixed; empty if it lists none."""
    stages = getattr(backbone, "mixing_stages", None)
    return list(stages()) if callable(stages) else []


class FeatureMix:
    """Mix the output of one backbone stage with the partners' during one forward pass."""

    def __init__(self, stage: int, partner: Tensor, lam: Tensor) -> None:
        self.stage = stage
        self.partner = partner
        self.lam = lam

    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        module = mixing_stages(model)[self.stage - 1]
        handle = module.register_forward_hook(self._mix_output)
        try:
            return model(x)
        finally:
            handle.remove()

    def _mix_output(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"augment=manifold_mixup: backbone stage {self.stage} ({type(module).__name__}) "
                f"returns {type(output).__name__}, not a tensor; choose other augment.stages"
            )
        share = (1.0 - self.lam).view(-1, *([1] * (output.ndim - 1)))
        return blend(output, output[self.partner], share)


class ManifoldMixup(Mixup):
    """Mixup at a random backbone stage.

    Args:
        alpha: Beta(α, α) concentration of λ (the paper uses 2.0).
        stages: stage numbers to choose from, 1 = after the backbone's first stage;
            ``null`` for every stage the backbone lists.
        include_input: whether stage 0, the input itself, is among the choices.
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        stages: list[int] | None = (1, 2),
        include_input: bool = True,
        **options,
    ) -> None:
        super().__init__(alpha=alpha, **options)
        self.stages = stage_list("augment.stages", stages)
        self.include_input = checks.boolean("augment.include_input", include_input)
        self._available: int | None = None

    def check_backbone(self, backbone: nn.Module) -> None:
        """Require stages to hook, enough of them for ``augment.stages``."""
        available = len(mixing_stages(backbone))
        name = getattr(backbone, "name", type(backbone).__name__)
        if available == 0:
            raise ValueError(
                f"augment=manifold_mixup cannot mix inside backbone {name!r}: it lists no "
                "stages to hook (mixing_stages() is empty); choose another backbone, or an "
                "input-space mixer such as augment=mixup"
            )
        if self.stages is not None and self.stages[-1] > available:
            raise ValueError(
                f"augment.stages={self.stages} goes beyond the {available} stages of backbone "
                f"{name!r}; use stages in 1..{available}, or null for all of them"
            )
        self._available = available

    def choices(self) -> list[int]:
        """The stages a step picks from, 0 being the input."""
        if self.stages is not None:
            hidden = self.stages
        elif self._available is not None:
            hidden = list(range(1, self._available + 1))
        else:
            raise RuntimeError(
                "augment.stages=null needs the backbone's stages: call check_backbone(backbone)"
            )
        return [0, *hidden] if self.include_input else hidden

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError(
            "ManifoldMixup mixes inside the model, not its input: use "
            "mixer.mix(x, y) and then MixedBatch.forward(backbone)"
        )

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        choices = self.choices()
        stage = choices[int(torch.randint(len(choices), (), generator=generator))]
        if stage == 0:
            return super().mix_batch(x, y, generator)
        partner, lam = self.draw_lam(x.shape[0], generator)
        partner, lam = partner.to(x.device), lam.to(x.device)
        return MixedBatch(
            x=x,
            target=self.mixed_target(y, partner, lam),
            labels=y,
            lam=lam,
            partner=partner,
            feature_mix=FeatureMix(stage, partner, lam),
        )
