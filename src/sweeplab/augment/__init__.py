"""Batch mixers of the mixup family, applied on the device to preprocessed training batches.

Every option of ``conf/augment`` names one class here. A mixer maps ``(x, y)`` to a
:class:`MixedBatch` (inputs plus soft targets ``[B, K]``), and its ``loss`` scores the
model's logits on it; ``mixer(x, y) -> (x_mixed, y_soft)`` is the short form for
input-space mixers. See ``base.py`` for the options all of them share.
"""

from sweeplab.augment.base import Mixer
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.cutmix import CutMix
from sweeplab.augment.fmix import FMix
from sweeplab.augment.identity import NoMix
from sweeplab.augment.losses import MixLoss
from sweeplab.augment.manifold import ManifoldMixup
from sweeplab.augment.mixup import Mixup
from sweeplab.augment.mixup_cutmix import MixupCutMix
from sweeplab.augment.regmixup import RegMixup
from sweeplab.augment.resizemix import ResizeMix
from sweeplab.augment.saliencymix import SaliencyMix
from sweeplab.augment.smoothmix import SmoothMix

__all__ = [
    "CutMix",
    "FMix",
    "ManifoldMixup",
    "MixLoss",
    "MixedBatch",
    "Mixer",
    "Mixup",
    "MixupCutMix",
    "NoMix",
    "RegMixup",
    "ResizeMix",
    "SaliencyMix",
    "SmoothMix",
]
