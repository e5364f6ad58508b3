"""DRAEM-style texture augmentations: small pure functions ``aug(img, rng) -> new img``.

The list mirrors DRAEM's imgaug pool (gamma contrast, brightness, sharpness, hue/saturation,
solarize, posterize, invert, autocontrast, equalize, rotate) plus flips, written with OpenCV
lookup tables so that three of them cost well under a millisecond at 256x256.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_RAMP = np.arange(256, dtype=np.float32)


def _lut3(img: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Apply one 256-entry table per channel (``luts`` is 3x256)."""
    table = np.clip(np.rint(luts), 0, 255).astype(np.uint8).T.reshape(256, 1, 3)
    return cv2.LUT(img, np.ascontiguousarray(table))


def gamma_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gamma in [0.5, 2] (imgaug ``GammaContrast(per_channel=True)``)."""
    gammas = rng.uniform(0.5, 2.0, 3)
    return _lut3(img, 255.0 * (_RAMP[None, :] / 255.0) ** gammas[:, None])


def brightness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiply by [0.8, 1.2] and add [-30, 30] (``MultiplyAndAddToBrightness``)."""
    mul, add = rng.uniform(0.8, 1.2), rng.uniform(-30.0, 30.0)
    return _lut3(img, np.repeat((_RAMP * mul + add)[None, :], 3, axis=0))


def sharpness(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PIL ``ImageEnhance.Sharpness`` with factor in [0, 2]: blend with PIL's SMOOTH kernel."""
    factor = rng.uniform(0.0, 2.0)
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 5.0
    smooth = cv2.filter2D(img, -1, kernel / 13.0, borderType=cv2.BORDER_REPLICATE)
    return cv2.addWeighted(img, factor, smooth, 1.0 - factor, 0.0)


def hue_saturation(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift hue by up to +-50 deg and saturation by up to +-50 (``AddToHueAndSaturation``)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    dh, ds = int(rng.integers(-25, 26)), int(rng.integers(-50, 51))
    lut_h = ((np.arange(256) + dh) % 180).astype(np.uint8)
    lut_s = np.clip(np.arange(256) + ds, 0, 255).astype(np.uint8)
    ident = np.arange(256, dtype=np.uint8)
    table = np.stack([lut_h, lut_s, ident], axis=1).reshape(256, 1, 3)
    return cv2.cvtColor(cv2.LUT(hsv, table), cv2.COLOR_HSV2RGB)


def solarize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Invert values above a threshold in [32, 128] (``Solarize``)."""
    t = int(rng.integers(32, 129))
    lut = _RAMP.copy()
    lut[t:] = 255.0 - lut[t:]
    return _lut3(img, np.repeat(lut[None, :], 3, axis=0))


def posterize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep 1..7 most significant bits (``Posterize``)."""
    bits = int(rng.integers(1, 8))
    return img & np.uint8((0xFF << (8 - bits)) & 0xFF)


def invert(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photographic negative (``Invert``); ``rng`` is unused but kept for a uniform signature."""
    return cv2.bitwise_not(img)


def autocontrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stretch each channel to the full [0, 255] range (``pillike.Autocontrast``)."""
    extrema = [cv2.minMaxLoc(np.ascontiguousarray(c))[:2] for c in cv2.split(img)]
    lo, hi = np.array(extrema, np.float32).T
    scale = 255.0 / np.maximum(hi - lo, 1.0)
    return _lut3(img, (_RAMP[None, :] - lo[:, None]) * scale[:, None])


def equalize(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel histogram equalisation (``pillike.Equalize``)."""
    return cv2.merge([cv2.equalizeHist(np.ascontiguousarray(c)) for c in cv2.split(img)])


def rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by [-45, 45] degrees with reflected borders so no black corners appear."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(rng.uniform(-45, 45)), 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)


def flip(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal, vertical or both flips."""
    return cv2.flip(img, int(rng.integers(-1, 2)))


AUGMENTATIONS: dict[str, Augment] = {
    "gamma_contrast": gamma_contrast,
    "brightness": brightness,
    "sharpness": sharpness,
    "hue_saturation": hue_saturation,
    "solarize": solarize,
    "posterize": posterize,
    "invert": invert,
    "autocontrast": autocontrast,
    "equalize": equalize,
    "rotate": rotate,
    "flip": flip,
}


def random_augment(
    img: np.ndarray, rng: np.random.Generator, n: int, names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Apply ``n`` distinct augmentations drawn from ``names`` in random order.

    Returns the new image and the names applied (for ``info``).
    """
    pool = list(names) if names is not None else list(AUGMENTATIONS)
    n = min(max(0, int(n)), len(pool))
    chosen = [pool[i] for i in rng.choice(len(pool), size=n, replace=False).tolist()]
    out = img
    for name in chosen:
        out = AUGMENTATIONS[name](out, rng)
    if out is img:
        out = img.copy()
    return out, chosen
