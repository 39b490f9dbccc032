"""Mixup or CutMix, switching between them with a probability, as timm's ``Mixup`` does.

With ``lam_mode=batch`` the whole batch is either mixed up or cut-mixed; with
``sample`` (timm's ``elem``) or ``pair`` every sample or pair chooses on its own. Both
are one operation here: mixup is a mask that takes ``1 − λ`` of every pixel from the
partner, CutMix a mask that takes all of the box.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.base import Mixer, blend, sample_beta
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.boxes import box_area_fraction, box_masks
from sweeplab.augment.checks import optional_scale_range
from sweeplab.augment.cutmix import draw_cutmix_boxes


class MixupCutMix(Mixer):
    """Mixup with probability ``1 − switch_prob``, CutMix with ``switch_prob``.

    Args:
        mixup_alpha: Beta concentration of mixup's λ (timm's ImageNet recipes: 0.8).
        cutmix_alpha: Beta concentration of CutMix's λ (1.0).
        switch_prob: probability of CutMix rather than mixup (0.5).
        minmax: CutMix box sides as ``[min, max]`` fractions instead of λ-sized boxes.
    """

    def __init__(
        self,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        minmax: tuple[float, float] | None = None,
        **options,
    ) -> None:
        super().__init__(**options)
        self.mixup_alpha = checks.positive("augment.mixup_alpha", mixup_alpha)
        self.cutmix_alpha = checks.positive("augment.cutmix_alpha", cutmix_alpha)
        self.switch_prob = checks.probability("augment.switch_prob", switch_prob)
        self.minmax = optional_scale_range("augment.minmax", minmax)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        batch, _, height, width = x.shape
        partner, draw = self.draw_partners(batch, generator)
        count = self.draw_count(batch)
        use_cutmix = torch.rand(count, generator=generator) < self.switch_prob
        mixup_lam = sample_beta(self.mixup_alpha, count, generator)
        boxes = draw_cutmix_boxes(count, height, width, self.cutmix_alpha, self.minmax, generator)
        device = x.device
        use_cutmix, mixup_lam, boxes = use_cutmix.to(device), mixup_lam.to(device), boxes.to(device)
        partner, draw = partner.to(device), draw.to(device)
        share = torch.where(
            use_cutmix[:, None, None, None],
            box_masks(boxes, height, width).to(x.dtype),
            (1.0 - mixup_lam).to(x.dtype)[:, None, None, None],
        )
        lam = torch.where(use_cutmix, 1.0 - box_area_fraction(boxes, height, width), mixup_lam)
        if count > 1:
            share = share[draw]
        return self.finish(blend(x, x[partner], share), y, partner, lam[draw])
