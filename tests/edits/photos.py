"""Real-photo inputs for the edit tests: skimage photos with hand-made instance masks."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from skimage import data

from synth.edits import EditInputs
from synth.sources.base import Instance, SourceImage

#: (height, width, base photo, donor photo, texture): a small non-square and a square case.
CASES = [(96, 128, "chelsea", "rocket", "grass"), (256, 256, "astronaut", "coffee", "brick")]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
TEXTURES = ("brick", "grass", "gravel")


@lru_cache(maxsize=32)
def _photo(name: str, h: int, w: int) -> np.ndarray:
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    out.setflags(write=False)
    return out


def photo(name: str, h: int, w: int) -> np.ndarray:
    """A writable copy of skimage photo/texture ``name`` resized to ``h`` x ``w``."""
    return _photo(name, h, w).copy()


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """HxW bool ellipse; centre and radii are fractions of the image size."""
    m = np.zeros((h, w), np.uint8)
    center = (round(cx * w), round(cy * h))
    axes = (max(2, round(rx * w)), max(2, round(ry * h)))
    cv2.ellipse(m, center, axes, 0, 0, 360, 1, -1)
    return m.astype(bool)


def rect(h: int, w: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """HxW bool rectangle given by fractions of the image size."""
    m = np.zeros((h, w), bool)
    m[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = True
    return m


def horse(h: int, w: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """HxW bool with skimage's horse silhouette squeezed into the given fractional box."""
    sil = (~data.horse()).astype(np.float32)
    by0, bx0, by1, bx1 = round(y0 * h), round(x0 * w), round(y1 * h), round(x1 * w)
    small = cv2.resize(sil, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA) > 0.5
    m = np.zeros((h, w), bool)
    m[by0:by1, bx0:bx1] = small
    return m


def make_base(h: int, w: int, name: str = "astronaut", *, crowd: bool = True) -> SourceImage:
    """A base image with three instances (ellipse, rectangle, horse) and a crowd region."""
    inst = (
        Instance(ellipse(h, w, 0.3, 0.3, 0.15, 0.12), category=1, ann_id=11),
        Instance(rect(h, w, 0.6, 0.1, 0.85, 0.35), category=2, ann_id=12),
        Instance(horse(h, w, 0.55, 0.55, 0.8, 0.8), category=3, ann_id=13),
    )
    ignore = rect(h, w, 0.0, 0.75, 0.25, 1.0) if crowd else None
    return SourceImage(
        key=f"samples:{name}", image=photo(name, h, w), instances=inst, ignore=ignore
    )


def make_donor(h: int, w: int, name: str = "coffee") -> SourceImage:
    """A donor image with two instances of other categories."""
    inst = (
        Instance(ellipse(h, w, 0.45, 0.5, 0.2, 0.18), category=4, ann_id=21),
        Instance(horse(h, w, 0.1, 0.05, 0.4, 0.4), category=3, ann_id=22),
    )
    return SourceImage(key=f"samples:{name}", image=photo(name, h, w), instances=inst)


def make_inputs(
    h: int,
    w: int,
    base: str = "astronaut",
    donor: str = "coffee",
    texture: str = "brick",
    crowd: bool = True,
) -> EditInputs:
    """Complete inputs for any edit kind at output size ``h`` x ``w``."""
    return EditInputs(
        base=make_base(h, w, base, crowd=crowd),
        donor=make_donor(h, w, donor),
        texture=photo(texture, h, w),
    )
