"""Anomaly-detection metrics in pure numpy: image/pixel ROC, AP, F1max and the PRO curve.

Why our own code instead of scikit-learn: scikit-learn is a dev-only dependency, and one sort
shared by all pixel metrics of a category (6.5M values for 100 maps at 256x256) is several times
faster than calling ``roc_curve``, ``average_precision_score`` and ``precision_recall_curve``
one after the other. The tests check every function against scikit-learn.

Ties: all samples with the same score share one threshold, i.e. one point of a curve. The ROC
therefore takes a diagonal step across a tie group (half credit, the Mann-Whitney convention),
and AP / F1max see the group as a single step — exactly what scikit-learn does. A pixel is
"positive at threshold t" when its score is ``>= t`` (``> t`` in the paper's PRO, see below).

PRO (per-region overlap): the regions are the 8-connected components of each ground-truth mask
(``cv2.connectedComponents``); at a threshold, the overlap of a region is the fraction of its
pixels that are positive, and PRO is the mean over all regions of all images of a category. The
x-axis is the false-positive rate over all ground-truth-negative pixels of the category.

Two conventions (:data:`CONVENTIONS`), chosen by the caller and printed by ``synth eval``:

``standard``
    Raw maps. AUPRO is the exact area under PRO(FPR) from 0 to FPR 0.3 (the curve is
    interpolated at 0.3) divided by 0.3, as in the MVTec AD reference code. Old anomalib
    versions divided by the last FPR reached instead of by the limit, which inflates the score.
``paper``
    What the MetaUAS evaluation code does, so numbers sit next to its table: maps min-max
    normalised per category; PRO on 200 thresholds ``min + k * (max - min) / 200`` with
    "positive" meaning ``score > threshold``; keep the points with FPR < 0.3, rescale those
    FPRs to [0, 1] by their own min and max, take the area. Its I-ROC and P-ROC report
    ``max(auc, 1 - auc)``; :func:`evaluate_category` does the same and says so in ``notes``.
    Min-max normalisation is an increasing affine map, so it changes none of the rank
    metrics and not the 200-threshold grid either (that grid is relative to min and max); the
    paper's PRO differs from the standard one through its thresholds and its FPR rescaling.

The image score of a map is its maximum (both conventions) or, with ``image_score="topk"``, the
mean of its top ``topk_frac`` pixels — less sensitive to a single hot pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

METRIC_NAMES: tuple[str, ...] = ("I-ROC", "I-PR", "I-F1max", "P-ROC", "P-PR", "P-F1max", "P-PRO")
CONVENTIONS: tuple[str, ...] = ("standard", "paper")
IMAGE_SCORES: tuple[str, ...] = ("max", "topk")
FPR_LIMIT = 0.3
PAPER_PRO_STEPS = 200


@dataclass(frozen=True)
class BinaryCurve:
    """Cumulative counts at each distinct threshold, from the highest score down.

    Attributes:
        thresholds: distinct scores, descending.
        tps: number of positives with ``score >= threshold``.
        fps: number of negatives with ``score >= threshold``.
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray

    @property
    def n_pos(self) -> int:
        """Total number of positives."""
        return int(self.tps[-1]) if self.tps.size else 0

    @property
    def n_neg(self) -> int:
        """Total number of negatives."""
        return int(self.fps[-1]) if self.fps.size else 0


@dataclass(frozen=True)
class ProCurve:
    """PRO as a function of the false-positive rate, FPR ascending from (0, 0)."""

    fpr: np.ndarray
    pro: np.ndarray


@dataclass
class CategoryMetrics:
    """Metrics of one category, the image scores they used, and remarks for the report.

    Attributes:
        values: metric name (:data:`METRIC_NAMES`) -> value in [0, 1], NaN when undefined.
        image_scores: one score per image, higher = more anomalous.
        notes: remarks a reader of the numbers should see (e.g. the paper's ROC flip).
    """

    values: dict[str, float]
    image_scores: np.ndarray
    notes: list[str] = field(default_factory=list)


def _check_pair(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in size")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    return labels, scores


def _group_ends(sorted_desc: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array."""
    if sorted_desc.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.append(np.flatnonzero(sorted_desc[1:] != sorted_desc[:-1]), sorted_desc.size - 1)


_SIGN = np.uint32(0x80000000)


def _sorted_desc(scores: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores in descending order with their uint32 payload (a label or a region id).

    float32 scores, what models emit, take a fast path: the score's bits, made
    order-preserving as an unsigned integer, and the payload are packed into one uint64 and
    sorted by value (numpy's SIMD sort), about 10x faster than ``argsort`` on millions of
    pixels. Other dtypes use ``argsort``. Order within a tie is irrelevant to every caller.
    """
    scores = scores.ravel()
    payload = payload.ravel().astype(np.uint32, copy=False)
    if scores.dtype != np.float32:
        order = np.argsort(scores)[::-1]
        return scores[order], payload[order]
    bits = (scores + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0
    code = np.where(bits & _SIGN, ~bits, bits | _SIGN)  # IEEE order -> unsigned order
    key = (code.astype(np.uint64) << np.uint64(32)) | payload
    del bits, code
    key.sort()
    key = key[::-1]
    payload = key.astype(np.uint32)  # the low 32 bits
    key >>= np.uint64(32)
    code = key.astype(np.uint32)
    del key
    negative = code < _SIGN
    code ^= _SIGN  # undo the encoding in place: positives ...
    np.bitwise_xor(code, np.uint32(0x7FFFFFFF), out=code, where=negative)  # ... and negatives
    return code.view(np.float32), payload


def _count_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64


def _curve_from_sorted(sorted_scores: np.ndarray, sorted_labels: np.ndarray) -> BinaryCurve:
    ends = _group_ends(sorted_scores)
    tps = np.cumsum(sorted_labels, dtype=_count_dtype(sorted_labels.size))[ends]
    fps = ends + 1 - tps
    return BinaryCurve(sorted_scores[ends], tps, fps)


def binary_curve(labels: np.ndarray, scores: np.ndarray) -> BinaryCurve:
    """Counts of positives and negatives at or above every distinct score (one sort).

    Args:
        labels: truthy = positive (anomalous), any shape.
        scores: same number of elements; higher = more anomalous.
    """
    labels, scores = _check_pair(labels, scores)
    sorted_scores, sorted_labels = _sorted_desc(scores, labels)
    return _curve_from_sorted(sorted_scores, sorted_labels.astype(bool))


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _roc_from_curve(c: BinaryCurve) -> float:
    if c.n_pos == 0 or c.n_neg == 0:
        return float("nan")
    fpr = np.concatenate([[0.0], c.fps / c.n_neg])
    tpr = np.concatenate([[0.0], c.tps / c.n_pos])
    return _trapezoid(fpr, tpr)


def _ap_from_curve(c: BinaryCurve) -> float:
    if c.n_pos == 0:
        return float("nan")
    precision = c.tps / (c.tps + c.fps)
    recall = c.tps / c.n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1max_from_curve(c: BinaryCurve) -> float:
    if c.n_pos == 0:
        return float("nan")
    # 2PR / (P + R) rewritten in counts: 2 tp / (tp + fp + n_pos); never 0/0.
    return float(np.max(2.0 * c.tps / (c.tps + c.fps + c.n_pos)))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when one class is absent (scikit-learn raises there)."""
    return _roc_from_curve(binary_curve(labels, scores))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Step-wise AP, sum of (R_k - R_{k-1}) P_k, as scikit-learn; NaN without positives."""
    return _ap_from_curve(binary_curve(labels, scores))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds (the max along the PR curve); NaN without positives."""
    return _f1max_from_curve(binary_curve(labels, scores))


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, AP and F1max from one shared sort: keys ``roc``, ``ap``, ``f1max``."""
    c = binary_curve(labels, scores)
    return {"roc": _roc_from_curve(c), "ap": _ap_from_curve(c), "f1max": _f1max_from_curve(c)}


def _check_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks).astype(bool, copy=False)
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be (N, H, W)")
    if not np.all(np.isfinite(maps)):
        raise ValueError("anomaly maps contain NaN or infinity")
    return masks, maps


def region_labels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the 8-connected ground-truth regions of every mask with one global id.

    Args:
        masks: bool (N, H, W).

    Returns:
        ``(labels, areas)``: int32 (N, H, W) with 0 = background and 1..R = regions, and the
        int64 area of each id (``areas[0]`` is the background pixel count).
    """
    labels = np.zeros(masks.shape, dtype=np.int32)
    offset = 0
    for i, m in enumerate(masks):
        if not m.any():
            continue
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        labels[i] = np.where(lab > 0, lab + offset, 0)
        offset += n - 1
    return labels, np.bincount(labels.ravel(), minlength=offset + 1).astype(np.int64)


def _pro_weights(areas: np.ndarray) -> np.ndarray:
    """Per-region-id weight 1 / (area * R), so that a cumulative sum is the mean overlap."""
    w = np.zeros(areas.size, dtype=np.float64)
    if areas.size > 1:
        w[1:] = 1.0 / (areas[1:] * (areas.size - 1))
    return w


def _pro_from_sorted(
    sorted_scores: np.ndarray, sorted_regions: np.ndarray, areas: np.ndarray
) -> ProCurve:
    ends = _group_ends(sorted_scores)
    n_neg = areas[0]
    fp = np.cumsum(sorted_regions == 0, dtype=_count_dtype(sorted_regions.size))[ends]
    w = _pro_weights(areas)[sorted_regions]
    pro = np.cumsum(w, out=w)[ends]
    del w
    fpr = np.concatenate([[0.0], fp / n_neg])
    return ProCurve(fpr, np.concatenate([[0.0], np.minimum(pro, 1.0)]))


def pro_curve(masks: np.ndarray, maps: np.ndarray, bins: int | None = None) -> ProCurve:
    """The PRO curve of a category, exact (one sort) or on ``bins`` uniform thresholds.

    Exact: one point per distinct score. Binned: thresholds ``linspace(min, max, bins)`` with
    ``score >= t``; each binned point is a point of the exact curve, so the binned area differs
    from the exact one by at most :func:`aupro_error_bound`. Binning needs O(bins * regions)
    memory instead of a sort of every pixel, for very large categories.

    Args:
        masks: bool (N, H, W) ground truth.
        maps: float (N, H, W) anomaly maps.
        bins: None for the exact curve, else the number of thresholds (>= 2).

    Returns:
        The curve; NaN-free only when there is at least one region and one negative pixel.
    """
    masks, maps = _check_maps(masks, maps)
    regions, areas = region_labels(masks)
    if areas.size < 2 or areas[0] == 0:
        return ProCurve(np.array([0.0, 1.0]), np.array([np.nan, np.nan]))
    if bins is None:
        return _pro_from_sorted(*_sorted_desc(maps, regions), areas)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    thresholds = np.linspace(float(maps.min()), float(maps.max()), bins)
    # counts[r, c]: pixels of region r (0 = negatives) whose score reaches exactly c thresholds
    counts = _threshold_counts(maps, regions, areas.size, thresholds, side="right")
    # positives at threshold k = pixels reaching more than k thresholds; k descending -> FPR up
    at_or_above = np.cumsum(counts[:, ::-1], axis=1)[:, :-1]
    fpr = at_or_above[0] / areas[0]
    pro = (_pro_weights(areas)[1:, None] * at_or_above[1:]).sum(axis=0)
    return ProCurve(np.concatenate([[0.0], fpr]), np.concatenate([[0.0], np.minimum(pro, 1.0)]))


def _threshold_counts(
    maps: np.ndarray, regions: np.ndarray, n_ids: int, thresholds: np.ndarray, side: str
) -> np.ndarray:
    """Histogram (n_ids, T + 1) of how many thresholds each pixel passes, image by image."""
    k = thresholds.size + 1
    counts = np.zeros(n_ids * k, dtype=np.int64)
    for m, r in zip(maps, regions, strict=True):
        passed = np.searchsorted(thresholds, m.ravel(), side=side)
        counts += np.bincount(r.ravel().astype(np.int64) * k + passed, minlength=n_ids * k)
    return counts.reshape(n_ids, k)


def auc_to_limit(fpr: np.ndarray, y: np.ndarray, limit: float = FPR_LIMIT) -> float:
    """Area under ``y(fpr)`` from 0 to ``limit`` divided by ``limit`` (curve interpolated there).

    ``fpr`` must be non-decreasing and reach ``limit``. Dividing by ``limit`` (not by the last
    FPR below it) keeps a perfect detector at 1.0 and an imperfect one below it.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"limit must be in (0, 1], got {limit}")
    if np.any(np.isnan(y)):
        return float("nan")
    n = int(np.searchsorted(fpr, limit, side="right"))
    x, v = fpr[:n], y[:n]
    if n < fpr.size and x[-1] < limit:
        a, b = n - 1, n
        y_at = y[a] + (y[b] - y[a]) * (limit - fpr[a]) / (fpr[b] - fpr[a])
        x, v = np.append(x, limit), np.append(v, y_at)
    return _trapezoid(x, v) / limit


def aupro_error_bound(curve: ProCurve, limit: float = FPR_LIMIT) -> float:
    """Worst-case gap between the area of a sub-sampled PRO curve and the exact one.

    Between two consecutive points of a sub-sampled monotone curve, the exact curve stays in
    the rectangle they span; the trapezoid is the rectangle's midpoint, so each full interval
    errs by at most ``dFPR * dPRO / 2``, the interval cut at ``limit`` by ``dFPR_cut * dPRO``.
    The sum, divided by ``limit``, bounds ``|aupro(bins=N) - aupro(bins=None)|``.
    """
    fpr, pro = curve.fpr, curve.pro
    lo, hi = fpr[:-1], fpr[1:]
    d_pro = np.diff(pro)
    full = hi <= limit
    cut = (lo < limit) & (hi > limit)
    bound = np.sum((hi - lo)[full] * d_pro[full]) / 2 + np.sum((limit - lo)[cut] * d_pro[cut])
    return float(bound / limit)


def aupro(
    masks: np.ndarray, maps: np.ndarray, fpr_limit: float = FPR_LIMIT, bins: int | None = None
) -> float:
    """Standard normalised AUPRO: area under PRO(FPR) up to ``fpr_limit``, divided by it.

    NaN when the category has no ground-truth region or no negative pixel.
    """
    c = pro_curve(masks, maps, bins=bins)
    return auc_to_limit(c.fpr, c.pro, fpr_limit)


def aupro_paper(
    masks: np.ndarray,
    maps: np.ndarray,
    steps: int = PAPER_PRO_STEPS,
    fpr_limit: float = FPR_LIMIT,
) -> float:
    """AUPRO as the MetaUAS evaluation code computes it (see the module docstring).

    Thresholds ``numpy.arange(min, max, (max - min) / steps)``, a pixel counts when its score is
    strictly above the threshold; points with FPR < ``fpr_limit`` are kept and their FPRs
    rescaled to [0, 1] by their own min and max before the trapezoid. Vectorised: one
    histogram per image of how many thresholds each pixel exceeds, no loop over thresholds.
    NaN where the MetaUAS code fails (fewer than two distinct kept FPRs, e.g. a binary map).
    """
    masks, maps = _check_maps(masks, maps)
    regions, areas = region_labels(masks)
    lo, hi = float(maps.min()), float(maps.max())
    if areas.size < 2 or areas[0] == 0 or hi <= lo:
        return float("nan")
    thresholds = np.arange(lo, hi, (hi - lo) / steps)
    counts = _threshold_counts(maps, regions, areas.size, thresholds, side="left")
    # positives at threshold k = pixels above more than k thresholds, k ascending
    above = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]
    fprs = above[0] / areas[0]
    pros = (above[1:] / areas[1:, None]).mean(axis=0)
    keep = fprs < fpr_limit
    f, p = fprs[keep], pros[keep]
    if f.size < 2 or f.max() == f.min():
        return float("nan")
    f = (f - f.min()) / (f.max() - f.min())
    return abs(_trapezoid(f, p))


def minmax_normalize(maps: np.ndarray) -> np.ndarray:
    """Rescale a stack of maps jointly to [0, 1] (the paper does this per category).

    A constant stack maps to zeros. Returns float32 like the paper's torch code.
    """
    maps = np.asarray(maps, dtype=np.float32)
    lo, hi = maps.min(), maps.max()
    if hi <= lo:
        return np.zeros_like(maps)
    return (maps - lo) / (hi - lo)


def image_scores(maps: np.ndarray, mode: str = "max", topk_frac: float = 0.01) -> np.ndarray:
    """One anomaly score per map: its maximum, or the mean of its top ``topk_frac`` pixels.

    Args:
        maps: (N, H, W).
        mode: ``"max"`` or ``"topk"``; with ``"topk"``, k = round(topk_frac * H * W), at least 1.
        topk_frac: fraction of pixels averaged by ``"topk"``.
    """
    flat = np.asarray(maps).reshape(len(maps), -1)
    if mode == "max":
        return flat.max(axis=1).astype(np.float64)
    if mode == "topk":
        if not 0.0 < topk_frac <= 1.0:
            raise ValueError(f"topk_frac must be in (0, 1], got {topk_frac}")
        k = max(1, int(round(topk_frac * flat.shape[1])))
        top = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k :]
        return top.mean(axis=1, dtype=np.float64)
    raise ValueError(f"image score mode must be one of {IMAGE_SCORES}, got {mode!r}")


def evaluate_category(
    maps: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    convention: str = "standard",
    image_score: str = "max",
    topk_frac: float = 0.01,
) -> CategoryMetrics:
    """All seven metrics of one category under one convention.

    Args:
        maps: float (N, H, W) anomaly maps, higher = more anomalous.
        masks: bool (N, H, W) ground truth (all False for normal images).
        labels: (N,) image labels, 1 = anomalous.
        convention: ``"standard"`` or ``"paper"`` (module docstring).
        image_score: ``"max"`` or ``"topk"`` (:func:`image_scores`).
        topk_frac: used by ``"topk"``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    masks, maps = _check_maps(masks, maps)
    labels = np.asarray(labels).astype(bool)
    if convention == "paper":
        maps = minmax_normalize(maps)
    scores = image_scores(maps, image_score, topk_frac)
    img = classification_metrics(labels, scores)

    # one sort serves P-ROC, P-PR, P-F1max and the standard PRO: region id 0 = negative pixel
    regions, areas = region_labels(masks)
    sorted_scores, sorted_regions = _sorted_desc(maps, regions)
    pix = _curve_from_sorted(sorted_scores, sorted_regions > 0)
    p_roc = _roc_from_curve(pix)
    if convention == "paper":
        p_pro = aupro_paper(masks, maps)
    elif areas.size < 2 or areas[0] == 0:
        p_pro = float("nan")
    else:
        c = _pro_from_sorted(sorted_scores, sorted_regions, areas)
        p_pro = auc_to_limit(c.fpr, c.pro, FPR_LIMIT)
    del sorted_scores, sorted_regions

    values = {
        "I-ROC": img["roc"],
        "I-PR": img["ap"],
        "I-F1max": img["f1max"],
        "P-ROC": p_roc,
        "P-PR": _ap_from_curve(pix),
        "P-F1max": _f1max_from_curve(pix),
        "P-PRO": p_pro,
    }
    notes: list[str] = []
    if convention == "paper":
        for name in ("I-ROC", "P-ROC"):
            if values[name] < 0.5:
                notes.append(f"{name} {values[name]:.3f} < 0.5 reported as 1 - AUC (paper code)")
                values[name] = 1.0 - values[name]
    return CategoryMetrics(values, scores, notes)
