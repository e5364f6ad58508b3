"""Instance crop / scale / place / blend helpers: arrays in, new arrays out.

A pasted object is a ``patch`` (hxwx3 uint8) with its footprint ``pmask`` (hxw bool); blending
turns the footprint into a ``support``: every pixel the paste may touch. Placement tests the
support, not the bare footprint, against forbidden pixels, so feathered or Poisson-blended edges
never spill onto regions that must stay untouched.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Alpha below this changes no uint8 pixel after rounding, so it is cut to keep supports tight.
ALPHA_EPS = 1.0 / 512.0


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` (end-exclusive) of the True pixels of ``mask``.

    Raises:
        ValueError: ``mask`` is empty.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("bbox of an empty mask")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_instance(
    image: np.ndarray, mask: np.ndarray, margin: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the bbox of ``mask`` plus ``margin`` px of context from ``image``.

    Context beyond the image border is replicated, so a feathered edge near the border still
    has colour to fade from; the returned footprint is False on the margin.
    """
    y0, x0, y1, x1 = bbox(mask)
    h, w = mask.shape
    ty0, tx0, ty1, tx1 = y0 - margin, x0 - margin, y1 + margin, x1 + margin
    cy0, cx0, cy1, cx1 = max(ty0, 0), max(tx0, 0), min(ty1, h), min(tx1, w)
    pad = (cy0 - ty0, ty1 - cy1, cx0 - tx0, tx1 - cx1)
    patch = cv2.copyMakeBorder(
        np.ascontiguousarray(image[cy0:cy1, cx0:cx1]), *pad, cv2.BORDER_REPLICATE
    )
    pm = np.zeros((ty1 - ty0, tx1 - tx0), bool)
    pm[margin : margin + y1 - y0, margin : margin + x1 - x0] = mask[y0:y1, x0:x1]
    return patch, pm


def scale_patch(
    patch: np.ndarray, pmask: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``patch`` and its footprint by ``scale`` (area filter when shrinking)."""
    h, w = pmask.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return patch.copy(), pmask.copy()
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    out = cv2.resize(patch, (nw, nh), interpolation=interp)
    m = cv2.resize(pmask.astype(np.float32), (nw, nh), interpolation=interp) > 0.5
    return out, m


def feather_alpha(pmask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-feathered float32 alpha of a footprint; exactly 0 where no pixel can change."""
    a = pmask.astype(np.float32)
    if sigma > 0:
        a = cv2.GaussianBlur(a, (0, 0), float(sigma), borderType=cv2.BORDER_CONSTANT)
        a[a < ALPHA_EPS] = 0.0
    return a


def feather_margin(sigma: float) -> int:
    """Context margin (px) a footprint needs around it for a ``sigma`` feather."""
    return int(math.ceil(3.0 * sigma)) + 1 if sigma > 0 else 0


def valid_positions(forbidden: np.ndarray, support: np.ndarray) -> np.ndarray:
    """HxW-grid bool map of top-left corners where ``support`` fits and avoids ``forbidden``.

    The map has shape ``(H - h + 1, W - w + 1)`` (empty when the support does not fit). One
    cross-correlation counts forbidden pixels under every placement at once.
    """
    (H, W), (h, w) = forbidden.shape, support.shape
    if h > H or w > W or h == 0 or w == 0:
        return np.zeros((0, 0), bool)
    if not forbidden.any():
        return np.ones((H - h + 1, W - w + 1), bool)
    hits = cv2.matchTemplate(forbidden.astype(np.float32), support.astype(np.float32), cv2.TM_CCORR)
    return hits < 0.5


def sample_position(
    forbidden: np.ndarray, support: np.ndarray, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A uniformly drawn valid top-left ``(y, x)`` for ``support``, or None when none exists."""
    ok = valid_positions(forbidden, support)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    y, x = divmod(int(idx[rng.integers(idx.size)]), ok.shape[1])
    return y, x


def place_mask(shape: tuple[int, int], small: np.ndarray, y: int, x: int) -> np.ndarray:
    """A full ``shape`` bool canvas with ``small`` written at top-left ``(y, x)``."""
    out = np.zeros(shape, bool)
    h, w = small.shape
    out[y : y + h, x : x + w] = small
    return out


def blend_feather(
    canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, y: int, x: int
) -> np.ndarray:
    """Alpha-composite ``patch`` onto a copy of ``canvas`` at top-left ``(y, x)``."""
    out = canvas.copy()
    h, w = alpha.shape
    roi = out[y : y + h, x : x + w].astype(np.float32)
    a = alpha[..., None]
    mixed = patch.astype(np.float32) * a + roi * (1.0 - a)
    out[y : y + h, x : x + w] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def blend_poisson(
    canvas: np.ndarray, patch: np.ndarray, clone: np.ndarray, y: int, x: int
) -> np.ndarray | None:
    """Poisson-blend (``cv2.seamlessClone``) ``patch`` inside ``clone`` at ``(y, x)``.

    ``seamlessClone`` zeroes the outer 1-px ring of its mask and centres the mask's bounding
    box on the given point; it throws when that box leaves the destination. Passing
    full-size source and mask with the point at the box centre makes source and destination
    boxes coincide, so no offset or border error can occur. Returns None when the mask is too
    small or touches only the border ring, and the caller falls back to feathering.
    """
    H, W = canvas.shape[:2]
    h, w = clone.shape
    src = canvas.copy()
    src[y : y + h, x : x + w] = patch
    m = np.zeros((H, W), np.uint8)
    m[y : y + h, x : x + w] = clone.astype(np.uint8) * 255
    m[0, :] = m[-1, :] = 0
    m[:, 0] = m[:, -1] = 0
    bx, by, bw, bh = cv2.boundingRect(m)
    if bw < 3 or bh < 3:
        return None
    try:
        return cv2.seamlessClone(src, canvas, m, (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)
    except cv2.error:
        return None
