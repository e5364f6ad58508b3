"""Resize a ``SourceImage`` and its masks together, keeping masks exact (nearest neighbour)."""

from __future__ import annotations

import cv2
import numpy as np

from synth.sources.base import Instance, SourceImage


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC image to ``size`` = (height, width).

    Uses area averaging when both sides shrink (no aliasing) and bilinear otherwise. Returns the
    input itself when the size already matches; never modifies it.

    Raises:
        ValueError: ``size`` is not two positive integers.
    """
    h, w = check_size(size)
    if image.shape[:2] == (h, w):
        return image
    shrink = h <= image.shape[0] and w <= image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape((h, w) + image.shape[2:])


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxW bool mask to ``size`` = (height, width) with nearest neighbour."""
    h, w = check_size(size)
    if mask.shape == (h, w):
        return mask
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(bool).view(np.uint8)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST).view(bool)


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of every output index when ``src`` samples are resized to ``dst``.

    The exact formula of OpenCV's ``INTER_NEAREST`` (``floor(i * (1 / (dst / src)))`` in
    double precision, clamped), so masks sampled with these indices equal ``resize_mask``'s.
    """
    step = 1.0 / (dst / src)
    return np.minimum(np.floor(np.arange(dst) * step).astype(np.intp), src - 1)


def resize_source_image(src: SourceImage, size: tuple[int, int]) -> SourceImage:
    """Resize an image, its instance masks and its ignore region to ``size`` = (height, width).

    Non-square sizes are allowed (the aspect ratio is not preserved). Instances whose mask
    vanishes at the new size are dropped, so every returned instance has at least one pixel.

    Raises:
        ValueError: ``size`` is not two positive integers.
    """
    h, w = check_size(size)
    if src.image.shape[:2] == (h, w):
        return src
    instances = []
    for inst in src.instances:
        mask = resize_mask(inst.mask, (h, w))
        if mask.any():
            instances.append(Instance(mask=mask, category=inst.category, ann_id=inst.ann_id))
    ignore = None if src.ignore is None else resize_mask(src.ignore, (h, w))
    if ignore is not None and not ignore.any():
        ignore = None
    return SourceImage(
        key=src.key,
        image=resize_rgb(src.image, (h, w)),
        instances=tuple(instances),
        ignore=ignore,
    )


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as (height, width) ints; ValueError unless two positive integers."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size={size!r}: need (height, width)") from None
    if h <= 0 or w <= 0 or (h, w) != tuple(size):
        raise ValueError(f"size={size!r}: need two positive integers (height, width)")
    return h, w
