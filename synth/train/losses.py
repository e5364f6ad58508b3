"""Per-sample segmentation losses on logits; the trainer averages them over valid samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def _mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean of a pixel loss, over the pixels of non-zero weight."""
    if weight is None:
        return x.flatten(1).mean(1)
    w = weight.flatten(1)
    return (x.flatten(1) * w).sum(1) / w.sum(1).clamp(min=1e-6)


def bce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy on the sigmoid output (the paper's loss), per sample."""
    return _mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), weight)


def dice(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss per sample; ``eps`` makes an empty mask predicted empty cost ~0."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    if weight is not None:
        p, t = p * weight.flatten(1), t * weight.flatten(1)
    inter = (p * t).sum(1)
    return 1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> torch.Tensor:
    """Focal loss (Lin et al., 2017) per sample: down-weights the many easy background pixels."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return _mean(a_t * (1 - p_t) ** gamma * ce, weight)


def per_sample_loss(
    name: str, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss ``name`` (bce, dice, focal, bce+dice) of each sample, computed in float32, over
    the pixels where ``weight`` (same shape as ``target``) is non-zero (all by default)."""
    logits, target = logits.float(), target.float()
    if name == "bce":
        return bce(logits, target, weight)
    if name == "dice":
        return dice(logits, target, weight)
    if name == "focal":
        return focal(logits, target, weight)
    if name == "bce+dice":
        return bce(logits, target, weight) + dice(logits, target, weight)
    raise ValueError(f"loss {name!r}: use bce, dice, focal or bce+dice")
