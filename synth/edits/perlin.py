"""Vectorised 2-D Perlin noise and DRAEM-style Perlin region masks."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from synth.edits.base import remove_specks
from synth.errors import SkipSample


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(
    shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Gradient noise of ``shape`` with ``res`` lattice periods along (rows, cols).

    Unlike DRAEM's generator the shape need not be a multiple of ``res`` (outputs may be
    non-square, e.g. 96x128), so lattice coordinates are fractional. Values lie in [-1, 1]
    (the 2-D Perlin maximum is sqrt(0.5) for unit gradients, hence the sqrt(2) gain).

    >>> perlin_noise((4, 6), (1, 2), np.random.default_rng(0)).shape
    (4, 6)
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.uniform(0.0, 2.0 * np.pi, (ry + 1, rx + 1))
    grads = (np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32))
    # Integer cell index per row/column; cells are contiguous runs of pixels.
    y0, x0 = np.arange(h) * ry // h, np.arange(w) * rx // w
    nx = np.bincount(x0, minlength=rx)
    fy = (np.arange(h) * (ry / h) - y0).astype(np.float32)[:, None]
    fx = (np.arange(w) * (rx / w) - x0).astype(np.float32)[None, :]

    def corner(dy: int, dx: int, out: np.ndarray) -> None:
        # The dot product g . (fy - dy, fx - dx) per pixel. Its y term varies along rows and
        # cell columns only, its x term along columns and cell rows only: multiply at those
        # sizes, then expand into ``out`` (the same float32 products and sum as expanding
        # first). Writing into the caller's buffer matters: each fresh 256 KiB temporary
        # costs ~0.1 ms of page faults, more than the arithmetic.
        gy = grads[0][dy : dy + ry, dx : dx + rx][y0]
        gy *= fy - dy
        gx = np.repeat(grads[1][dy : dy + ry, dx : dx + rx], nx, 1)
        gx *= fx - dx
        np.take(gx, y0, axis=0, out=out, mode="clip")  # "clip": no buffered copy; y0 valid
        if w % rx == 0:
            cells = out.reshape(h, rx, w // rx)
            np.add(cells, gy[:, :, None], out=cells)
        else:
            out += np.repeat(gy, nx, 1)

    uy, ux = _fade(fy), _fade(fx)
    top, right, bottom = (np.empty((h, w), np.float32) for _ in range(3))
    corner(0, 0, top)
    corner(0, 1, right)
    right -= top
    right *= ux
    top += right
    corner(1, 0, bottom)
    corner(1, 1, right)
    right -= bottom
    right *= ux
    bottom += right
    bottom -= top
    bottom *= uy
    top += bottom
    top *= np.float32(np.sqrt(2.0))
    return np.clip(top, -1.0, 1.0, out=top)


def rotate_noise(noise: np.ndarray, angle: float) -> np.ndarray:
    """``noise`` rotated by ``angle`` degrees about its centre, zero-filled, same shape.

    Zero fill matches DRAEM's imgaug ``Affine(rotate=...)``: corners fall below any positive
    threshold, so rotation never invents region there.
    """
    h, w = noise.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), 1.0)
    return cv2.warpAffine(
        noise, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def drop_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without 8-connected components smaller than ``min_px`` pixels (new array)."""
    return remove_specks(mask, min_px)


def sample_perlin(
    shape: tuple[int, int],
    rng: np.random.Generator,
    scale_exp_range: Sequence[int] = (0, 6),
    rotation_range: Sequence[float] = (-90.0, 90.0),
) -> tuple[np.ndarray, dict[str, float | int]]:
    """One rotated Perlin field with per-axis scale ``2**e``, ``e`` in ``[lo, hi)``.

    Returns the field and the drawn parameters (for ``info``).
    """
    lo, hi = int(scale_exp_range[0]), int(scale_exp_range[1])
    ey, ex = (int(v) for v in rng.integers(lo, max(hi, lo + 1), size=2))
    angle = float(rng.uniform(rotation_range[0], rotation_range[1]))
    noise = rotate_noise(perlin_noise(shape, (2**ey, 2**ex), rng), angle)
    return noise, {"scale_y": 2**ey, "scale_x": 2**ex, "angle": round(angle, 3)}


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale_exp_range: Sequence[int] = (0, 6),
    rotation_range: Sequence[float] = (-90.0, 90.0),
    threshold: float = 0.5,
    min_px: int = 64,
    max_tries: int = 8,
    allowed: np.ndarray | None = None,
    min_component: int = 16,
) -> tuple[np.ndarray, dict[str, float | int]]:
    """A thresholded Perlin region with at least ``min_px`` pixels (inside ``allowed``).

    Low-frequency fields often stay below the threshold everywhere, so the draw is retried a
    bounded number of times; after that the sample is skipped rather than looping forever.
    Specks under ``min_component`` px are dropped first: ``finalize`` would drop them anyway,
    and a region made only of specks must count as empty.

    Raises:
        SkipSample: no draw produced a large enough region.
    """
    for attempt in range(max(1, max_tries)):
        noise, meta = sample_perlin(shape, rng, scale_exp_range, rotation_range)
        mask = noise > threshold
        if allowed is not None:
            mask &= allowed
        mask = drop_specks(mask, min_component)
        if np.count_nonzero(mask) >= min_px:
            return mask, {**meta, "tries": attempt + 1}
    raise SkipSample(f"perlin mask: no region of >= {min_px} px after {max_tries} tries")
