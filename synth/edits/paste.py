"""Instance crop / scale / place / blend helpers: arrays in, new arrays out.

A pasted object is a ``patch`` (hxwx3 uint8) with its footprint ``pmask`` (hxw bool); blending
turns the footprint into a ``support``: every pixel the paste may touch. Placement tests the
support, not the bare footprint, against forbidden pixels, so feathered or Poisson-blended edges
never spill onto regions that must stay untouched.
"""

from __future__ import annotations

import math
from functools import lru_cache

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


#: Supports with at most this many pixels are tested by dilation (cost ~1 us per support
#: pixel at 256x256) rather than by the FFT correlation (~0.5 ms whatever the support).
DILATE_MAX_PX = 256


def valid_positions(forbidden: np.ndarray, support: np.ndarray) -> np.ndarray:
    """HxW-grid bool map of top-left corners where ``support`` fits and avoids ``forbidden``.

    The map has shape ``(H - h + 1, W - w + 1)`` (empty when the support does not fit). One
    cross-correlation counts forbidden pixels under every placement at once; the two cheaper
    exact forms below give the same map for full rectangles (box sums of an integral image)
    and for small supports (a dilation of ``forbidden`` by the support anchored at its corner:
    the max over the support's pixels, which is 0 exactly where the count is). Both need bool
    inputs, as every caller passes.
    """
    (H, W), (h, w) = forbidden.shape, support.shape
    if h > H or w > W or h == 0 or w == 0:
        return np.zeros((0, 0), bool)
    if not forbidden.any():
        return np.ones((H - h + 1, W - w + 1), bool)
    if forbidden.dtype == bool and support.dtype == bool:
        f8, n = forbidden.view(np.uint8), np.count_nonzero(support)
        if n == h * w:
            s = cv2.integral(f8)
            return (s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]) == 0
        if 0 < n <= DILATE_MAX_PX:
            placed = cv2.dilate(f8, support.view(np.uint8), anchor=(0, 0))
            return placed[: H - h + 1, : W - w + 1] == 0
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
    """Poisson-blend ``patch`` inside ``clone`` at ``(y, x)``, as ``cv2.seamlessClone`` does.

    The blend is OpenCV's ``NORMAL_CLONE`` with source and destination boxes coinciding: the
    outer 1-px ring of the image is cut from the mask, the mask's bounding box is the solve
    domain, and ``poisson_clone`` reproduces the solve there (see its docstring). Returns None
    when the mask is too small or touches only the border ring, and the caller falls back to
    feathering.
    """
    H, W = canvas.shape[:2]
    h, w = clone.shape
    m = np.zeros((H, W), bool)
    m[y : y + h, x : x + w] = clone
    m[0, :] = m[-1, :] = False
    m[:, 0] = m[:, -1] = False
    bx, by, bw, bh = cv2.boundingRect(m.view(np.uint8))
    if bw < 3 or bh < 3:
        return None
    # Box in patch coordinates: the mask is only nonzero inside the patch, so the box is too.
    py, px = by - y, bx - x
    out = canvas.copy()
    roi = (slice(by, by + bh), slice(bx, bx + bw))
    out[roi] = poisson_clone(canvas[roi], patch[py : py + bh, px : px + bw], m[roi])
    return out


@lru_cache(maxsize=64)
def _sine_basis(n: int) -> np.ndarray:
    """The n x n type-I DST matrix ``sin(pi (j+1) (k+1) / (n+1))`` (float64, read-only).

    Phases are reduced exactly in integers before the table lookup. Cached because a paste's
    solve box sides repeat across objects and retries; 64 entries hold at most 32 MB at 256 px.
    """
    k = np.arange(1, n + 1, dtype=np.int32)
    table = np.sin(np.pi * np.arange(2 * n + 2) / (n + 1))
    out = np.take(table, np.outer(k, k) % np.int32(2 * n + 2))
    out.setflags(write=False)
    return out


#: Three 3x3 erosions (OpenCV's mask shrink before cloning) in one pass.
_KERNEL_7 = np.ones((7, 7), np.uint8)


def poisson_clone(dest: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``cv2.seamlessClone(..., NORMAL_CLONE)`` over its solve box, ~5x faster.

    ``dest``/``src`` are the hxwx3 uint8 destination and source over the box, ``mask`` the hxw
    bool mask whose bounding box it is. OpenCV's solve, reproduced step by step: the guidance
    field is the source gradient where the mask eroded by 7x7 (three 3x3 passes, zero outside
    the box) is set and the destination gradient elsewhere; its divergence minus the Laplacian
    of the box's ring is inverted in the type-I DST basis (Dirichlet ring = ``dest``); inner
    values are clipped to [0, 255] and truncated, not rounded. Up to the transform everything
    is exact integer arithmetic, so only rounding inside the transform differs: about 0.5% of
    the channel values in the box come out 1 apart from OpenCV's float32 FFT solve. The DST is
    applied as matrix products (BLAS) instead of OpenCV's per-channel complex DFTs of twice the
    size, whose prime-length factors made a ~100 px object cost ~5 ms.

    The products are float64 so that a store's bytes do not depend on the CPU: BLAS picks its
    kernels (summation order, FMA) by CPU type, and in float32 about 1 channel value in 2*10^4
    lands on the other side of a truncation from a float64 solve's: about every other paste.
    In float64 the output equals a float64 FFT solve's, and it is no slower (dgemm).
    """
    h, w = mask.shape
    m8 = np.asarray(mask, bool).view(np.uint8)
    inside = cv2.erode(m8, _KERNEL_7, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    inside = inside.astype(np.float32)[..., None]
    # The guidance divergence is the destination's Laplacian plus the divergence of the masked
    # source-minus-destination gradient (the same integers OpenCV sums). The destination's
    # Laplacian minus the ring's is the Laplacian of the destination with its ring zeroed.
    inner = np.zeros(dest.shape, np.float32)
    inner[1:-1, 1:-1] = dest[1:-1, 1:-1]
    rhs = cv2.Laplacian(inner, cv2.CV_32F)[1:-1, 1:-1]
    diff = cv2.subtract(src, dest, dtype=cv2.CV_32F)
    gx = diff[:, 1:] - diff[:, :-1]
    gx *= inside[:, :-1]
    gy = diff[1:] - diff[:-1]
    gy *= inside[:-1]
    rhs += gx[1:-1, 1:]
    rhs -= gx[1:-1, :-1]
    rhs += gy[1:, 1:-1]
    rhs -= gy[:-1, 1:-1]
    # Solve in the type-I DST basis: u = S_h (S_h rhs S_w / eigenvalues) S_w / ((h-1)(w-1)).
    sy, sx = _sine_basis(h - 2), _sine_basis(w - 2)
    lam_y = 2.0 * np.cos(np.pi * np.arange(1, h - 1) / (h - 1)) - 2.0
    lam_x = 2.0 * np.cos(np.pi * np.arange(1, w - 1) / (w - 1)) - 2.0
    scale = (4.0 / ((h - 1) * (w - 1))) / (lam_y[:, None] + lam_x[None, :])
    coef = sy @ np.ascontiguousarray(rhs.transpose(2, 0, 1), dtype=np.float64) @ sx
    coef *= scale
    u = (sy @ coef @ sx).transpose(1, 2, 0)
    out = dest.copy()
    out[1:-1, 1:-1] = np.clip(u, 0.0, 255.0).astype(np.uint8)  # truncates, as OpenCV
    return out
