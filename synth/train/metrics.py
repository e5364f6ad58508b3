"""Validation metrics that merge across batches and DDP ranks without keeping every pixel.

Pixel AUROC / AP come from per-class histograms of the logits (fine bins over [-20, 20]: a
monotone map of the probability, so the ranking is kept where sigmoid would saturate). Sums of
histograms merge exactly across ranks with one all-reduce. Image scores (max pixel probability,
as in the paper's protocol) are few and are kept exactly.
"""

from __future__ import annotations

import numpy as np
import torch

LOGIT_RANGE = 20.0


def auroc_ap_from_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision from per-bin positive/negative counts (ascending scores).

    Samples sharing a bin count as ties: half credit in AUROC, one PR point in AP.
    """
    pos, neg = pos.astype(np.float64)[::-1], neg.astype(np.float64)[::-1]
    P, N = pos.sum(), neg.sum()
    if P == 0 or N == 0:
        return float("nan"), float("nan")
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    neg_below = N - fp
    auroc = float(((neg_below + 0.5 * neg) * pos).sum() / (P * N))
    keep = pos > 0
    precision = tp[keep] / (tp[keep] + fp[keep])
    ap = float((precision * pos[keep]).sum() / P)
    return auroc, ap


def auroc_ap(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Exact AUROC and average precision of ``scores`` for binary ``labels`` (ties averaged)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    uniq, inv = np.unique(scores, return_inverse=True)
    pos = np.bincount(inv, weights=labels, minlength=len(uniq))
    neg = np.bincount(inv, weights=~labels, minlength=len(uniq))
    return auroc_ap_from_counts(pos, neg)


class SegmentationMeter:
    """Accumulates pixel histograms and image scores of validation batches.

    Args:
        bins: histogram bins over logits in [-20, 20].
        device: where the histograms live (the model's device).
    """

    def __init__(self, bins: int = 8192, device: torch.device | str = "cpu"):
        self.bins = bins
        self.hist = torch.zeros(2, bins, dtype=torch.float64, device=device)
        self.image_scores: list[np.ndarray] = []
        self.image_labels: list[np.ndarray] = []

    def update(self, logits: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> None:
        """Add a batch of logits and 0/1 masks (B, 1, H, W), skipping samples not ``valid``."""
        logits, mask = logits[valid].float(), mask[valid] > 0.5
        if logits.numel() == 0:
            return
        scaled = (logits.clamp(-LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / (2 * LOGIT_RANGE)
        idx = (scaled * (self.bins - 1)).round().long().flatten()
        target = mask.flatten().long()
        counts = torch.bincount(idx + target * self.bins, minlength=2 * self.bins)
        self.hist += counts.view(2, self.bins).to(self.hist.dtype)
        self.image_scores.append(torch.sigmoid(logits.flatten(1).amax(1)).cpu().numpy())
        self.image_labels.append(mask.flatten(1).any(1).cpu().numpy())

    def merge_ranks(self) -> None:
        """Sum the histograms and concatenate the image scores of every DDP rank."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.hist)
        local = (
            np.concatenate(self.image_scores or [np.empty(0)]),
            np.concatenate(self.image_labels or [np.empty(0, bool)]),
        )
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        self.image_scores = [g[0] for g in gathered]
        self.image_labels = [g[1] for g in gathered]

    def compute(self) -> dict[str, float]:
        """pixel_auroc, pixel_ap, image_auroc (NaN where a class is missing)."""
        hist = self.hist.cpu().numpy()
        pixel_auroc, pixel_ap = auroc_ap_from_counts(hist[1], hist[0])
        out = {"pixel_auroc": pixel_auroc, "pixel_ap": pixel_ap}
        if self.image_scores:
            out["image_auroc"] = auroc_ap(
                np.concatenate(self.image_scores), np.concatenate(self.image_labels)
            )[0]
        return out
