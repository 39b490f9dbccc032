"""Backbones: pooled ``features(x)`` then a classifier ``head``; see ``backbone.py``.

Each option of ``conf/backbone`` names one class here through ``_target_``.
"""

from sweeplab.models.backbone import Backbone, count_parameters
from sweeplab.models.mlp import MLP
from sweeplab.models.resnet_cifar import CifarResNet
from sweeplab.models.small_cnn import SmallCNN
from sweeplab.models.timm_backbone import TimmBackbone

__all__ = ["MLP", "Backbone", "CifarResNet", "SmallCNN", "TimmBackbone", "count_parameters"]
