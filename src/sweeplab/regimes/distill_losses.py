"""The distillation terms: pure functions of student outputs and teacher targets.

Teacher targets are *probabilities* (for an ensemble teacher the mean member
probability, as in MEAL V2, Shen & Savvides 2020), so every term takes ``[B, C]``
target probabilities at the temperature they were softened with, not teacher logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab.augment.batch import MixedBatch

EPS = 1e-8


def teacher_probabilities(member_logits: Tensor, temperature: float) -> Tensor:
    """``mean_m softmax(z_m / T)`` of teacher member logits ``[B, M, C]``, in float32."""
    return F.softmax(member_logits.float() / temperature, dim=-1).mean(dim=1)


def kd_loss(student_logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    """Hinton et al. (2015): ``T² · KL(p_teacher^T ‖ p_student^T)``, averaged over the batch.

    The ``T²`` keeps the gradient's size roughly independent of ``T`` (the soft
    gradients scale as ``1/T²``), so the KD weight means the same at any temperature.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, target_probs, reduction="batchmean")
    return kl * temperature**2


def _pearson_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 − Pearson correlation`` of the rows of ``a`` and ``b``, averaged."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return 1.0 - F.cosine_similarity(a, b, dim=1, eps=EPS).mean()


def dist_loss(
    student_logits: Tensor,
    target_probs: Tensor,
    temperature: float,
    inter_weight: float = 1.0,
    intra_weight: float = 1.0,
) -> Tensor:
    """DIST (Huang et al. 2022): match *relations* rather than values.

    Inter-class: the Pearson correlation of each sample's student and teacher
    distributions; intra-class: that of each class's scores across the batch. Both
    are ``1 − ρ``, scaled by ``T²`` like KD. Needs a batch of at least two samples.
    """
    student = F.softmax(student_logits.float() / temperature, dim=-1)
    inter = _pearson_distance(student, target_probs)
    intra = _pearson_distance(student.t(), target_probs.t())
    return temperature**2 * (inter_weight * inter + intra_weight * intra)


def mix_targets(probs: Tensor, batch: MixedBatch) -> Tensor:
    """The teacher's targets for ``batch`` from its probabilities on the *clean* batch.

    Mixed rows take ``λ · p + (1 − λ) · p[partner]``, the same mix as the labels;
    RegMixup's clean rows come first. An unmixed batch keeps ``probs``.
    """
    if not batch.mixed:
        return probs
    mixed = torch.lerp(probs[batch.partner], probs, batch.lam.to(probs.dtype)[:, None])
    if batch.clean_rows:
        return torch.cat([probs, mixed])
    return mixed


class HintAdapter(nn.Module):
    """FitNets (Romero et al. 2015) regressor: student features → the teacher's shape.

    ``[B, D_s] → [B, D_t]`` is a linear map; ``[B, C_s, H, W] → [B, C_t, H', W']`` a
    1×1 convolution with BatchNorm (as RepDistiller's ``ConvReg``), then pooled to the
    teacher's size if it differs. A map compared with a vector is pooled first.
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.teacher_shape = tuple(teacher_shape)
        if len(student_shape) == 3 and len(teacher_shape) == 3:
            self.map = nn.Sequential(
                nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1, bias=False),
                nn.BatchNorm2d(teacher_shape[0]),
            )
        elif len(teacher_shape) == 1:
            self.map = nn.Linear(student_shape[0], teacher_shape[0])
        else:
            raise ValueError(
                f"regime.hint: a student feature of shape {list(student_shape)} cannot be "
                f"mapped onto a teacher feature map of shape {list(teacher_shape)}; choose a "
                "teacher module with a vector output, or a student feature map"
            )

    def forward(self, features: Tensor) -> Tensor:
        if len(self.teacher_shape) == 1:
            if features.ndim > 2:
                features = features.flatten(2).mean(dim=2)
            return self.map(features)
        mapped = self.map(features)
        if tuple(mapped.shape[-2:]) != self.teacher_shape[-2:]:
            mapped = F.adaptive_avg_pool2d(mapped, self.teacher_shape[-2:])
        return mapped


def hint_loss(adapted: Tensor, teacher_features: Tensor) -> Tensor:
    """Mean squared error between adapted student features and the teacher's."""
    return F.mse_loss(adapted.float(), teacher_features.float())


def alpha_divergence(
    student_logits: Tensor, target_probs: Tensor, alpha: float, ratio_clip: float
) -> Tensor:
    """Per-sample α-divergence ``D_α(p ‖ q)`` of the student ``q`` from the target ``p``.

    ``D_α = Σ_c q_c ((p_c / q_c)^α − 1) / (α (α − 1))``; its limits are ``KL(q ‖ p)`` at
    α = 0 and ``KL(p ‖ q)`` at α = 1. The weight ``(p / q)^α`` is clipped at
    ``ratio_clip`` to keep the gradient bounded, as AlphaNet does.
    """
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    q = log_q.exp()
    log_p = torch.log(target_probs.clamp_min(EPS))
    if abs(alpha) < 1e-3:
        return (q * (log_q - log_p)).sum(dim=-1)
    if abs(alpha - 1.0) < 1e-3:
        return (target_probs * (log_p - log_q)).sum(dim=-1)
    weight = torch.exp(alpha * (log_p - log_q)).clamp(max=ratio_clip)
    return (q * (weight - 1.0)).sum(dim=-1) / (alpha * (alpha - 1.0))


def adaptive_alpha_loss(
    student_logits: Tensor,
    target_probs: Tensor,
    alpha_min: float = -1.0,
    alpha_max: float = 1.0,
    ratio_clip: float = 5.0,
) -> Tensor:
    """AlphaNet (Wang et al. 2021): per sample the larger of ``D_{α_min}`` and ``D_{α_max}``,
    averaged over the batch, so the student is penalised both for missing the
    teacher's modes and for over-covering them. Differentiated directly."""
    low = alpha_divergence(student_logits, target_probs, alpha_min, ratio_clip)
    high = alpha_divergence(student_logits, target_probs, alpha_max, ratio_clip)
    return torch.maximum(low, high).mean()
