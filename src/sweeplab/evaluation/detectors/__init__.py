"""Out-of-distribution detectors that score the eval cache; higher scores mean more OOD.

Every detector reads an :class:`~sweeplab.evaluation.cache.EvalOutputs` (per-member
logits, pooled features, labels), so detectors can be added to a finished run
without the model. The interface follows pytorch-ood's fit/predict split::

    detector = build_detector("knn", k=50).fit(train_outputs)
    scores = detector.score(ood_outputs)  # [N], higher = more OOD

Each detector declares what it needs (:class:`Detector`): ``needs_fit`` ones read
in-distribution training (or val) outputs in ``fit``; ``needs_features`` ones are
fitted and scored member by member, their scores averaged; ``needs_head`` ones
also need each member's classifier as a :class:`LinearHead`; ``needs_model`` ones
(ODIN's input perturbation) need the model itself (:meth:`OdinDetector.score_inputs`);
``single_only`` / ``ensemble_only`` ones are defined for M = 1 or M > 1 only.
"""

from __future__ import annotations

from typing import Any

from sweeplab.evaluation.detectors.base import (
    Detector,
    LinearHead,
    MemberOutputs,
    MemberwiseDetector,
    NotFittedError,
    split_members,
)
from sweeplab.evaluation.detectors.features import KNNDetector, MahalanobisDetector
from sweeplab.evaluation.detectors.head_based import (
    ASHDetector,
    ReActDetector,
    ViMDetector,
    ash,
    vim_principal_dim,
)
from sweeplab.evaluation.detectors.logits import (
    EnergyDetector,
    EntropyDetector,
    MaxLogitDetector,
    MSPDetector,
    MutualInformationDetector,
    OdinDetector,
)

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        MSPDetector,
        MaxLogitDetector,
        EnergyDetector,
        EntropyDetector,
        OdinDetector,
        MutualInformationDetector,
        MahalanobisDetector,
        KNNDetector,
        ViMDetector,
        ReActDetector,
        ASHDetector,
    )
}


def build_detector(name: str, **hyperparameters: Any) -> Detector:
    """A detector by registry name; unknown names and hyperparameters raise ``ValueError``."""
    try:
        cls = DETECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown OOD detector {name!r}; known: {', '.join(DETECTORS)}") from None
    return cls(**hyperparameters)


__all__ = [
    "DETECTORS",
    "ASHDetector",
    "Detector",
    "EnergyDetector",
    "EntropyDetector",
    "KNNDetector",
    "LinearHead",
    "MSPDetector",
    "MahalanobisDetector",
    "MaxLogitDetector",
    "MemberOutputs",
    "MemberwiseDetector",
    "MutualInformationDetector",
    "NotFittedError",
    "OdinDetector",
    "ReActDetector",
    "ViMDetector",
    "ash",
    "build_detector",
    "split_members",
    "vim_principal_dim",
]
