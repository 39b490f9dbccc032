"""SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation Strategy
for Better Regularization", ICLR 2021).

CutMix whose box is centred on the partner's most salient pixel rather than a random
one, so the pasted patch is likely to hold the partner's object. The saliency is the
spectral residual (:mod:`sweeplab.augment.saliency`), computed for the whole batch on the
device; the authors' code calls OpenCV's fine-grained static saliency per image instead.
Each sample's box sits on its own partner's peak (the authors' code reuses one box,
from the first partner, for the whole batch), and λ is corrected to the clipped area.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sweeplab import checks
from sweeplab.augment.base import Mixer, sample_beta
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.boxes import box_area_fraction, box_masks, centred_boxes
from sweeplab.augment.saliency import saliency_peaks


class SaliencyMix(Mixer):
    """Paste the partner's most salient box into each image.

    Args:
        alpha: Beta(α, α) concentration of λ (the paper's β = 1), which sets the box size.
    """

    def __init__(self, *, alpha: float = 1.0, **options) -> None:
        super().__init__(**options)
        self.alpha = checks.positive("augment.alpha", alpha)

    def mix_batch(self, x: Tensor, y: Tensor, generator: torch.Generator) -> MixedBatch:
        batch, _, height, width = x.shape
        partner, draw = self.draw_partners(batch, generator)
        ratio = (1.0 - sample_beta(self.alpha, self.draw_count(batch), generator)).sqrt()[draw]
        sides = torch.stack([(height * ratio).long(), (width * ratio).long()], dim=1)
        partner, sides = partner.to(x.device), sides.to(x.device)
        centres = saliency_peaks(x)[partner]
        boxes = centred_boxes(centres[:, 0], centres[:, 1], sides[:, 0], sides[:, 1], height, width)
        x_mixed = torch.where(box_masks(boxes, height, width), x[partner], x)
        lam = 1.0 - box_area_fraction(boxes, height, width)
        return self.finish(x_mixed, y, partner, lam)
