"""Distillation loss terms as plain functions of tensors, so each can be checked against a hand computation.

Masks: `mask` is the batch's attention mask [B, T] (1 = real token). Hidden states [B, T, H] are compared on real
tokens only; attention maps [B, heads, T, T] on (real query, real key) pairs, so padding never counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch's predictions: its
    examples [B, C], or every position of a causal LM's [B, T, V] (the mean per token, as its loss is).

    The T^2 keeps the soft-target gradients on the same scale as the hard-label loss when T changes.
    """
    student, teacher = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * mean over the batch of -sum softmax(teacher/T) * log_softmax(student/T) (TinyBERT's prediction loss)."""
    targets = F.softmax(teacher / temperature, dim=-1)
    return -(targets * F.log_softmax(student / temperature, dim=-1)).sum(-1).mean() * temperature**2


def _weights(feature: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Per-position weights broadcastable to `feature` without its last dim, or None for no masking."""
    if mask is None:
        return None
    mask = mask.to(feature.dtype)
    if feature.ndim == 3:  # [B, T, H]
        return mask
    if feature.ndim == 4 and feature.shape[-1] == feature.shape[-2] == mask.shape[-1]:  # [B, heads, T, T]
        return (mask[:, None, :, None] * mask[:, None, None, :]).expand(feature.shape)
    return None


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the unmasked elements."""
    weights = _weights(student, mask)
    squared = (student - teacher) ** 2
    if weights is None:
        return squared.mean()
    if student.ndim == 3:  # token mask: every hidden unit of a real token counts
        return (squared * weights[..., None]).sum() / (weights.sum() * student.shape[-1])
    return (squared * weights).sum() / weights.sum()


def masked_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of 1 - cos(student, teacher) along the last dim over unmasked positions (rows)."""
    distance = 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)
    weights = _weights(student, mask)
    if weights is None:
        return distance.mean()
    if student.ndim == 4:  # a row (one query) counts if its query token is real
        weights = weights.amax(-1)
    return (distance * weights).sum() / weights.sum()


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher row || student row) of attention probabilities, summed over keys, averaged over real queries."""
    log_student = torch.log(student.clamp_min(1e-12))
    pointwise = torch.xlogy(teacher, teacher) - teacher * log_student
    weights = _weights(student, mask)
    if weights is None:
        return pointwise.sum(-1).mean()
    rows = weights.amax(-1)  # real query rows; masked keys carry (near) zero probability in both maps
    return ((pointwise * weights).sum(-1) * rows).sum() / rows.sum()
