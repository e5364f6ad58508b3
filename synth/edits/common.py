"""Small helpers every edit shares: input checks, instance picking and the final mask step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from synth.edits.base import EditResult, finalize
from synth.errors import ConfigError, SkipSample
from synth.sources.base import SourceImage


def check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``choices`` (params validation)."""
    if value not in choices:
        raise ConfigError(f"{field}: {value!r} is not one of {list(choices)}")


def check_range(
    field: str, value: Sequence[float], lo: float | None = None, hi: float | None = None
) -> None:
    """Raise ``ConfigError`` unless ``value`` is an ordered pair inside ``[lo, hi]``."""
    if len(value) != 2 or value[0] > value[1]:
        raise ConfigError(f"{field}: expected an ordered pair [min, max], got {list(value)}")
    if (lo is not None and value[0] < lo) or (hi is not None and value[1] > hi):
        raise ConfigError(f"{field}: {list(value)} must lie within [{lo}, {hi}]")


def check_between(field: str, value: float, lo: float, hi: float) -> None:
    """Raise ``ConfigError`` unless ``lo <= value <= hi``."""
    if not lo <= value <= hi:
        raise ConfigError(f"{field}: {value} must lie within [{lo}, {hi}]")


def check_positive(field: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ConfigError`` unless ``value`` is positive (or zero when allowed)."""
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{field}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """One float drawn uniformly from ``[bounds[0], bounds[1])`` as a plain Python float."""
    return float(rng.uniform(bounds[0], bounds[1]))


def randint(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    """One int drawn uniformly from the inclusive range ``[bounds[0], bounds[1]]``."""
    return int(rng.integers(int(bounds[0]), int(bounds[1]) + 1))


def ignore_of(src: SourceImage) -> np.ndarray:
    """The HxW bool ignore mask of ``src`` (all False when it has none)."""
    h, w = src.image.shape[:2]
    if src.ignore is None:
        return np.zeros((h, w), bool)
    if src.ignore.shape != (h, w):
        raise ValueError(f"{src.key}: ignore mask {src.ignore.shape} != image {(h, w)}")
    return src.ignore.astype(bool, copy=False)


def usable_instances(src: SourceImage, min_area: int) -> list[int]:
    """Indices of instances of ``src`` with at least ``min_area`` pixels.

    Instance masks must already be at the image's size: edits never resample them silently.
    """
    h, w = src.image.shape[:2]
    keep = []
    for i, inst in enumerate(src.instances):
        if inst.mask.shape != (h, w):
            raise ValueError(f"{src.key}: instance {i} mask {inst.mask.shape} != image {(h, w)}")
        if int(np.count_nonzero(inst.mask)) >= min_area:
            keep.append(i)
    return keep


def union_mask(src: SourceImage, indices: Sequence[int]) -> np.ndarray:
    """HxW bool union of the instance masks ``indices`` of ``src``."""
    out = np.zeros(src.image.shape[:2], bool)
    for i in indices:
        out |= src.instances[i].mask.astype(bool, copy=False)
    return out


def pick_subset(
    masks: Sequence[np.ndarray], k: int, max_px: float, rng: np.random.Generator
) -> list[int]:
    """Pick up to ``k`` masks in random order whose union stays within ``max_px`` pixels.

    Greedy over a random permutation, so big objects are not always rejected first and the
    union (overlaps counted once) is what is bounded, as a removal budget should be.
    """
    chosen: list[int] = []
    union: np.ndarray | None = None
    for i in rng.permutation(len(masks)).tolist():
        m = masks[i].astype(bool, copy=False)
        cand = m if union is None else union | m
        if np.count_nonzero(cand) <= max_px:
            chosen.append(i)
            union = cand
            if len(chosen) == k:
                break
    return chosen


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """HxW bool ``mask`` grown by ``px`` pixels with an elliptical kernel (new array).

    Only the mask's bounding box plus ``px`` is dilated: nothing outside it can turn on, and
    OpenCV's default border (no growth from outside) matches the zeros around the box, so the
    result is identical to dilating the whole image for a fraction of the cost.
    """
    out = mask.astype(bool)
    if px <= 0:
        return out
    m = out.view(np.uint8)
    x, y, w, h = cv2.boundingRect(m)
    if w == 0:
        return out
    H, W = m.shape
    y0, x0, y1, x1 = max(y - px, 0), max(x - px, 0), min(y + h + px, H), min(x + w + px, W)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    m[y0:y1, x0:x1] = cv2.dilate(np.ascontiguousarray(m[y0:y1, x0:x1]), kernel)
    return out


def masked_copy(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``dst`` with ``src`` written where ``mask`` (HxW bool) is True."""
    out = dst.copy()
    cv2.copyTo(src, mask.astype(np.uint8), out)
    return out


def finish(
    prompt: np.ndarray,
    query: np.ndarray,
    region: np.ndarray,
    *,
    ignore: np.ndarray,
    info: dict[str, Any],
    swap: bool = False,
    what: str = "edit",
) -> EditResult:
    """Run ``finalize`` with ignore regions excluded, refuse no-op edits, optionally swap roles.

    ``prompt`` must be the untouched base image and ``query`` the edited one: ``finalize`` then
    repairs only the edited image. With ``swap`` the roles are exchanged afterwards, so the base
    image stays bit-exact on whichever side it ends up (the diff is symmetric, so the mask is
    still exact).
    """
    # The copy keeps results from aliasing the caller's input arrays.
    res = finalize(prompt.copy(), query, region.astype(bool) & ~ignore, info=info)
    if not res.mask.any():
        raise SkipSample(f"{what}: the edit left no visible change")
    if swap:
        return EditResult(prompt=res.query, query=res.prompt, mask=res.mask, info=res.info)
    return res
