"""Head-based detectors (ViM, ReAct, ASH) on timm classifiers that are not an ``nn.Linear``.

DLA's classifier is a 1×1 convolution and LeViT's the mean of two BatchNorm +
linear heads; the head cache must read both as the affine maps they are.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from sweeplab.evaluation.cache import EvalOutputs, save_tensors
from sweeplab.evaluation.detectors import build_detector
from sweeplab.evaluation.passes import HEAD_CACHE, head_cache
from sweeplab.evaluation.report import load_heads
from sweeplab.models.timm_backbone import MeanOfHeads, PointwiseConvHead, TimmBackbone

CLASSES, BLOCK = 4, 8


class SingleModel(nn.Module):
    """A regime without ``member_heads``: its head is ``backbone.head``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


def class_aligned(backbone: TimmBackbone) -> None:
    """Point every linear map of the head at its class's block of feature units."""
    width = backbone.num_features
    prototypes = torch.zeros(CLASSES, width)
    for c in range(CLASSES):
        prototypes[c, c * BLOCK : (c + 1) * BLOCK] = 1.0
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in backbone.head.modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                layer.weight.copy_(prototypes.reshape(layer.weight.shape))
                layer.bias.zero_()
            elif isinstance(layer, nn.BatchNorm1d):
                layer.running_mean.copy_(0.05 * torch.rand(width, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(width, generator=generator))


def feature_sets(width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test features in class blocks (post-ReLU-like), diffuse OOD features."""
    g = torch.Generator().manual_seed(1)

    def in_distribution(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(CLASSES).repeat_interleave(per_class)
        means = torch.zeros(CLASSES, width)
        for c in range(CLASSES):
            means[c, c * BLOCK : (c + 1) * BLOCK] = 3.0
        scale = torch.full((width,), 0.1)
        scale[: CLASSES * BLOCK] = 0.5
        noise = torch.randn(len(labels), width, generator=g) * scale
        return torch.relu(means[labels] + noise), labels

    train, train_labels = in_distribution(60)
    test, _ = in_distribution(30)
    ood = torch.relu(0.8 * torch.randn(120, width, generator=g))
    return train, train_labels, test, ood


@pytest.mark.parametrize(
    ("name", "kind"), [("dla46_c", PointwiseConvHead), ("levit_128s", MeanOfHeads)]
)
def test_head_detectors_on_a_timm_head_that_is_not_linear(name, kind, tmp_path):
    backbone = TimmBackbone(name=name, num_classes=CLASSES, in_chans=3, image_size=32).eval()
    assert isinstance(backbone.head, kind)
    class_aligned(backbone)
    save_tensors(tmp_path, HEAD_CACHE, head_cache(SingleModel(backbone)))
    (head,), unavailable = load_heads(tmp_path)
    assert unavailable == ""

    train, train_labels, test, ood = feature_sets(backbone.num_features)
    with torch.no_grad():
        images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        for features in (backbone.features(images), train[:16], ood[:16]):
            torch.testing.assert_close(
                head.logits(features), backbone.head(features), rtol=1e-5, atol=1e-5
            )

        def outputs(features: torch.Tensor, labels=None) -> EvalOutputs:
            labels = torch.zeros(len(features), dtype=torch.long) if labels is None else labels
            return EvalOutputs(backbone.head(features)[:, None], features, labels)

        fit = outputs(train, train_labels)
    for detector_name in ("vim", "react", "ash"):
        detector = build_detector(detector_name).fit(fit, [head])
        id_scores, ood_scores = detector.score(outputs(test)), detector.score(outputs(ood))
        assert torch.isfinite(id_scores).all() and torch.isfinite(ood_scores).all()
        is_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
        value = roc_auc_score(is_ood, np.r_[id_scores.numpy(), ood_scores.numpy()])
        assert value > 0.9, f"{name} {detector_name}: AUROC {value:.3f}"
