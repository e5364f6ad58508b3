"""Object edits: appearance / disappearance by pasting or inpainting, and exchange.

Each edit is a registered pure function ``fn(inputs, rng, params) -> EditResult`` built from the
helpers in ``paste.py``, ``inpaint.py`` and ``common.py``. The base image is always finalised as
the prompt, so it stays bit-exact; the disappearance/appearance-by-inpainting variants swap the
roles afterwards (see ``common.finish``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.edits.base import EditInputs, EditResult, Inpainter, register_edit
from synth.edits.common import (
    check_between,
    check_choice,
    check_positive,
    check_range,
    dilate,
    finish,
    ignore_of,
    pick_subset,
    randint,
    uniform,
    union_mask,
    usable_instances,
)
from synth.edits.inpaint import OpenCVInpainter
from synth.edits.paste import (
    bbox,
    blend_feather,
    blend_poisson,
    crop_instance,
    feather_alpha,
    feather_margin,
    place_mask,
    sample_position,
    scale_patch,
)
from synth.errors import SkipSample
from synth.sources.base import SourceImage

BLENDS = ("feather", "poisson", "random")

_DEFAULT_INPAINTER = OpenCVInpainter()


@dataclass(frozen=True)
class PasteParams:
    """Donor-instance pasting (``appearance_paste`` / ``disappearance_paste``).

    Attributes:
        k_range: how many donor instances to try to paste (inclusive).
        max_paste_area: cap on the total pasted object area, as a fraction of the image.
        scale_range: random scale applied to each instance (relative to its donor size).
        blend: ``"feather"``, ``"poisson"`` or ``"random"`` (one of the two per sample).
        feather_sigma: Gaussian sigma (px) of the feathered alpha.
        poisson_dilate: px the footprint grows by to form the Poisson clone mask.
        avoid_instances: keep pastes off the base's own instances (occlusion is not "new").
        min_instance_area: donor instances smaller than this (px) are never used.
        min_paste_area: a paste shrunk below this many px is dropped.
        placement_tries: shrink-by-0.7 retries when an instance finds no free spot.
    """

    k_range: tuple[int, int] = (1, 3)
    max_paste_area: float = 0.35
    scale_range: tuple[float, float] = (0.5, 1.5)
    blend: str = "random"
    feather_sigma: float = 2.0
    poisson_dilate: int = 3
    avoid_instances: bool = True
    min_instance_area: int = 64
    min_paste_area: int = 64
    placement_tries: int = 4

    def __post_init__(self) -> None:
        check_range("k_range", self.k_range, 1)
        check_between("max_paste_area", self.max_paste_area, 1e-6, 1.0)
        check_range("scale_range", self.scale_range, 1e-3)
        check_choice("blend", self.blend, BLENDS)
        check_positive("feather_sigma", self.feather_sigma, allow_zero=True)
        check_positive("poisson_dilate", self.poisson_dilate, allow_zero=True)
        check_positive("placement_tries", self.placement_tries)


@dataclass(frozen=True)
class RemoveParams:
    """Native-instance removal by inpainting (``disappearance_inpaint`` / ``appearance_inpaint``).

    Attributes:
        k_range: how many instances to remove (inclusive; fewer when the area cap binds).
        max_remove_area: cap on the union area removed, as a fraction of the image.
        min_instance_area: instances smaller than this (px) are never picked.
        dilate: px the removal mask grows by so object edges and shadows go too.
    """

    k_range: tuple[int, int] = (1, 3)
    max_remove_area: float = 0.7
    min_instance_area: int = 64
    dilate: int = 5

    def __post_init__(self) -> None:
        check_range("k_range", self.k_range, 1)
        check_between("max_remove_area", self.max_remove_area, 1e-6, 1.0)
        check_positive("dilate", self.dilate, allow_zero=True)


@dataclass(frozen=True)
class ExchangeParams:
    """Native instance(s) replaced by donor instance(s) (``exchange``).

    Attributes:
        k_range: how many native instances to exchange (inclusive).
        max_remove_area: cap on the union area removed, as a fraction of the image.
        min_instance_area: native and donor instances smaller than this (px) are not used.
        dilate: px the removal mask grows by before inpainting.
        scale_jitter: the donor is scaled to the removed bbox's area times this factor.
        blend: ``"feather"``, ``"poisson"`` or ``"random"``.
        feather_sigma: Gaussian sigma (px) of the feathered alpha.
        poisson_dilate: px the footprint grows by to form the Poisson clone mask.
        prefer_other_category: pick donors of another category when the donor has any.
    """

    k_range: tuple[int, int] = (1, 2)
    max_remove_area: float = 0.5
    min_instance_area: int = 64
    dilate: int = 5
    scale_jitter: tuple[float, float] = (0.8, 1.25)
    blend: str = "random"
    feather_sigma: float = 2.0
    poisson_dilate: int = 3
    prefer_other_category: bool = True

    def __post_init__(self) -> None:
        check_range("k_range", self.k_range, 1)
        check_between("max_remove_area", self.max_remove_area, 1e-6, 1.0)
        check_positive("dilate", self.dilate, allow_zero=True)
        check_range("scale_jitter", self.scale_jitter, 1e-3)
        check_choice("blend", self.blend, BLENDS)
        check_positive("feather_sigma", self.feather_sigma, allow_zero=True)
        check_positive("poisson_dilate", self.poisson_dilate, allow_zero=True)


@dataclass(frozen=True)
class _Prepared:
    """A scaled donor patch with everything both blend modes need."""

    patch: np.ndarray
    footprint: np.ndarray
    alpha: np.ndarray
    clone: np.ndarray
    support: np.ndarray


def _need_donor(inputs: EditInputs, what: str) -> SourceImage:
    if inputs.donor is None:
        raise ValueError(f"{what}: needs inputs.donor")
    if inputs.donor.image.shape != inputs.base.image.shape:
        raise ValueError(
            f"{what}: donor {inputs.donor.image.shape} != base {inputs.base.image.shape}"
        )
    return inputs.donor


def _pick_blend(blend: str, rng: np.random.Generator) -> str:
    if blend == "random":
        return ("feather", "poisson")[int(rng.integers(2))]
    return blend


def _margin(feather_sigma: float, poisson_dilate: int) -> int:
    """Output-px context a patch keeps around its footprint so either blend has room."""
    return max(feather_margin(feather_sigma), int(poisson_dilate) + 2)


def _prepare(
    image: np.ndarray,
    mask: np.ndarray,
    scale: float,
    feather_sigma: float,
    poisson_dilate: int,
    limit: tuple[int, int],
) -> tuple[_Prepared, float] | None:
    """Crop, scale and pre-blend an instance so that its support fits inside ``limit``.

    The context margin and rounding make the patch slightly larger than ``scale`` times the
    bbox, so the scale is reduced until it fits. Returns the patch and the scale really used,
    or None when the instance vanishes first.
    """
    for _ in range(4):
        if scale < 1e-3:
            return None
        margin = math.ceil(_margin(feather_sigma, poisson_dilate) / scale) + 1
        patch, pm = crop_instance(image, mask, margin)
        patch, pm = scale_patch(patch, pm, scale)
        if not pm.any():
            return None
        ph, pw = pm.shape
        if ph <= limit[0] and pw <= limit[1]:
            alpha = feather_alpha(pm, feather_sigma)
            clone = dilate(pm, poisson_dilate)
            return _Prepared(patch, pm, alpha, clone, (alpha > 0) | clone), scale
        scale *= 0.98 * min(limit[0] / ph, limit[1] / pw)
    return None


def _blend(
    canvas: np.ndarray, prep: _Prepared, y: int, x: int, mode: str
) -> tuple[np.ndarray, str]:
    """Composite ``prep`` at ``(y, x)``; Poisson falls back to feathering at degenerate masks."""
    if mode == "poisson":
        out = blend_poisson(canvas, prep.patch, prep.clone, y, x)
        if out is not None:
            return out, "poisson"
    return blend_feather(canvas, prep.patch, prep.alpha, y, x), "feather"


def _paste_donors(
    base: SourceImage, donor: SourceImage, rng: np.random.Generator, p: PasteParams, what: str
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Paste up to k donor instances on ``base``; returns (pasted image, region, info)."""
    H, W = base.image.shape[:2]
    cand = usable_instances(donor, p.min_instance_area)
    if not cand:
        raise SkipSample(f"{what}: donor {donor.key} has no instance >= {p.min_instance_area} px")
    k = randint(rng, p.k_range)
    order = [cand[i] for i in rng.permutation(len(cand))[:k].tolist()]
    mode = _pick_blend(p.blend, rng)
    forbidden = ignore_of(base).copy()
    if p.avoid_instances and base.instances:
        forbidden |= union_mask(base, range(len(base.instances)))
    budget = p.max_paste_area * H * W
    margin = _margin(p.feather_sigma, p.poisson_dilate)
    canvas, region, records = base.image, np.zeros((H, W), bool), []
    for idx in order:
        inst = donor.instances[idx]
        area = int(np.count_nonzero(inst.mask))
        y0, x0, y1, x1 = bbox(inst.mask)
        s = uniform(rng, p.scale_range)
        s = min(s, math.sqrt(max(budget, 0.0) / area))
        s = min(s, (H - 2 * margin) / (y1 - y0), (W - 2 * margin) / (x1 - x0))
        pos = None
        for _ in range(p.placement_tries):
            if s * s * area < p.min_paste_area:
                break
            fitted = _prepare(donor.image, inst.mask, s, p.feather_sigma, p.poisson_dilate, (H, W))
            if fitted is None:
                break
            prep, s = fitted
            pasted = int(np.count_nonzero(prep.footprint))
            if pasted > budget:  # resampling rounds the area up a little; keep the cap strict
                s *= 0.98 * math.sqrt(budget / pasted)
                continue
            pos = sample_position(forbidden, prep.support, rng)
            if pos is not None:
                break
            s *= 0.7
        if pos is None:
            continue
        y, x = pos
        canvas, used = _blend(canvas, prep, y, x, mode)
        support = place_mask((H, W), prep.support, y, x)
        region |= support
        forbidden |= support
        budget -= pasted
        fy0, fx0, fy1, fx1 = bbox(prep.footprint)
        records.append(
            {
                "ann_id": int(inst.ann_id),
                "category": int(inst.category),
                "scale": round(s, 4),
                "box": [y + fy0, x + fx0, fy1 - fy0, fx1 - fx0],
                "area": pasted,
                "blend": used,
            }
        )
    if not records:
        raise SkipSample(f"{what}: no instance of {donor.key} fits on {base.key}")
    info = {
        "donor": donor.key,
        "blend": mode,
        "pasted": records,
        "pasted_area": round(sum(r["area"] for r in records) / (H * W), 5),
    }
    return canvas, region, info


def _remove(
    base: SourceImage,
    inpainter: Inpainter | None,
    rng: np.random.Generator,
    p: RemoveParams | ExchangeParams,
    what: str,
) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, Any]]:
    """Inpaint a random subset of instances; returns (image, hole, instance indices, info)."""
    H, W = base.image.shape[:2]
    cand = usable_instances(base, p.min_instance_area)
    if not cand:
        raise SkipSample(f"{what}: {base.key} has no instance >= {p.min_instance_area} px")
    k = randint(rng, p.k_range)
    masks = [base.instances[i].mask for i in cand]
    chosen = pick_subset(masks, k, p.max_remove_area * H * W, rng)
    if not chosen:
        raise SkipSample(f"{what}: every instance of {base.key} exceeds max_remove_area")
    ids = [cand[i] for i in chosen]
    hole = dilate(union_mask(base, ids), p.dilate) & ~ignore_of(base)
    inpainter = inpainter if inpainter is not None else _DEFAULT_INPAINTER
    out = np.asarray(inpainter(base.image, hole))
    if out.shape != base.image.shape or out.dtype != np.uint8:
        raise ValueError(f"{what}: inpainter returned {out.shape} {out.dtype}, not HxWx3 uint8")
    info = {
        "removed": [int(base.instances[i].ann_id) for i in ids],
        "removed_categories": [int(base.instances[i].category) for i in ids],
        "removed_area": round(float(np.count_nonzero(hole)) / (H * W), 5),
        "inpainter": repr(inpainter),
    }
    return out, hole, ids, info


@register_edit("appearance_paste", PasteParams, needs_donor=True)
def appearance_paste(
    inputs: EditInputs, rng: np.random.Generator, params: PasteParams
) -> EditResult:
    """Donor instances appear: prompt = base, query = base with pasted instances."""
    donor = _need_donor(inputs, "appearance_paste")
    query, region, info = _paste_donors(inputs.base, donor, rng, params, "appearance_paste")
    return finish(
        inputs.base.image,
        query,
        region,
        ignore=ignore_of(inputs.base),
        info=info,
        what="appearance_paste",
    )


@register_edit("disappearance_paste", PasteParams, needs_donor=True, prompt_is_base=False)
def disappearance_paste(
    inputs: EditInputs, rng: np.random.Generator, params: PasteParams
) -> EditResult:
    """Pasted instances disappear: prompt = base with pastes, query = base."""
    donor = _need_donor(inputs, "disappearance_paste")
    pasted, region, info = _paste_donors(inputs.base, donor, rng, params, "disappearance_paste")
    return finish(
        inputs.base.image,
        pasted,
        region,
        ignore=ignore_of(inputs.base),
        info=info,
        swap=True,
        what="disappearance_paste",
    )


@register_edit("disappearance_inpaint", RemoveParams, needs_instances=True)
def disappearance_inpaint(
    inputs: EditInputs, rng: np.random.Generator, params: RemoveParams
) -> EditResult:
    """Native instances disappear: prompt = base, query = base with them inpainted away."""
    base = inputs.base
    out, hole, _, info = _remove(base, inputs.inpainter, rng, params, "disappearance_inpaint")
    return finish(
        base.image, out, hole, ignore=ignore_of(base), info=info, what="disappearance_inpaint"
    )


@register_edit("appearance_inpaint", RemoveParams, needs_instances=True, prompt_is_base=False)
def appearance_inpaint(
    inputs: EditInputs, rng: np.random.Generator, params: RemoveParams
) -> EditResult:
    """Native instances appear: prompt = base with them inpainted away, query = base."""
    base = inputs.base
    out, hole, _, info = _remove(base, inputs.inpainter, rng, params, "appearance_inpaint")
    return finish(
        base.image,
        out,
        hole,
        ignore=ignore_of(base),
        info=info,
        swap=True,
        what="appearance_inpaint",
    )


@register_edit("exchange", ExchangeParams, needs_instances=True, needs_donor=True)
def exchange(inputs: EditInputs, rng: np.random.Generator, params: ExchangeParams) -> EditResult:
    """Native instances replaced: inpaint them, paste donor instances over their boxes."""
    base, p = inputs.base, params
    donor = _need_donor(inputs, "exchange")
    H, W = base.image.shape[:2]
    dcand = usable_instances(donor, p.min_instance_area)
    if not dcand:
        raise SkipSample(f"exchange: donor {donor.key} has no instance >= {p.min_instance_area} px")
    canvas, hole, ids, info = _remove(base, inputs.inpainter, rng, p, "exchange")
    mode = _pick_blend(p.blend, rng)
    margin = _margin(p.feather_sigma, p.poisson_dilate)
    region, records = hole.copy(), []
    for i in ids:
        native = base.instances[i]
        ny0, nx0, ny1, nx1 = bbox(native.mask)
        pool = dcand
        if p.prefer_other_category:
            other = [j for j in dcand if donor.instances[j].category != native.category]
            pool = other or dcand
        d = donor.instances[pool[int(rng.integers(len(pool)))]]
        dy0, dx0, dy1, dx1 = bbox(d.mask)
        s = math.sqrt((ny1 - ny0) * (nx1 - nx0) / ((dy1 - dy0) * (dx1 - dx0)))
        s *= uniform(rng, p.scale_jitter)
        s = min(s, (H - 2 * margin) / (dy1 - dy0), (W - 2 * margin) / (dx1 - dx0))
        fitted = _prepare(donor.image, d.mask, s, p.feather_sigma, p.poisson_dilate, (H, W))
        if fitted is None:
            continue
        prep, s = fitted
        ph, pw = prep.support.shape
        y = int(np.clip(round((ny0 + ny1) / 2 - ph / 2), 0, H - ph))
        x = int(np.clip(round((nx0 + nx1) / 2 - pw / 2), 0, W - pw))
        canvas, used = _blend(canvas, prep, y, x, mode)
        region |= place_mask((H, W), prep.support, y, x)
        records.append(
            {
                "replaces": int(native.ann_id),
                "ann_id": int(d.ann_id),
                "category": int(d.category),
                "scale": round(s, 4),
                "blend": used,
            }
        )
    if not records:
        raise SkipSample(f"exchange: no instance of {donor.key} fits on {base.key}")
    info.update({"donor": donor.key, "blend": mode, "pasted": records})
    return finish(base.image, canvas, region, ignore=ignore_of(base), info=info, what="exchange")
