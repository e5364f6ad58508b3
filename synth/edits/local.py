"""Local-region edits: DRAEM texture blends, texture-free colour/structure changes, CutPaste.

The Perlin region machinery lives in ``perlin.py``, texture augmentations in ``augment.py``;
the pixel operations here are small pure functions that the registered edits compose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from synth.edits.augment import AUGMENTATIONS, random_augment
from synth.edits.base import EditInputs, EditResult, register_edit
from synth.edits.common import (
    check_between,
    check_choice,
    check_positive,
    check_range,
    finish,
    ignore_of,
    masked_copy,
    randint,
    uniform,
)
from synth.edits.paste import place_mask, sample_position
from synth.edits.perlin import perlin_mask, perlin_noise
from synth.errors import ConfigError, SkipSample

COLOR_OPS = ("hue", "brightness", "blur", "noise", "warp")
CUTPASTE_MODES = ("patch", "scar", "random")


@dataclass(frozen=True)
class PerlinParams:
    """The Perlin region shared by the local edits (DRAEM defaults).

    Attributes:
        scale_exp_range: per-axis lattice scale ``2**e`` with ``e`` drawn from ``[lo, hi)``.
        rotation_range: rotation of the noise field, degrees.
        threshold: noise above this is inside the region.
        min_region_px: smallest acceptable region; smaller draws are retried.
        max_tries: bounded retries before the sample is skipped.
    """

    scale_exp_range: tuple[int, int] = (0, 6)
    rotation_range: tuple[float, float] = (-90.0, 90.0)
    threshold: float = 0.5
    min_region_px: int = 64
    max_tries: int = 8

    def __post_init__(self) -> None:
        check_range("scale_exp_range", self.scale_exp_range, 0, 12)
        check_range("rotation_range", self.rotation_range, -360.0, 360.0)
        check_between("threshold", self.threshold, -1.0, 1.0)
        check_positive("min_region_px", self.min_region_px)
        check_positive("max_tries", self.max_tries)

    def region(
        self, shape: tuple[int, int], rng: np.random.Generator, allowed: np.ndarray
    ) -> tuple[np.ndarray, dict[str, float | int]]:
        """Draw the Perlin region (within ``allowed``) these params describe."""
        return perlin_mask(
            shape,
            rng,
            scale_exp_range=self.scale_exp_range,
            rotation_range=self.rotation_range,
            threshold=self.threshold,
            min_px=self.min_region_px,
            max_tries=self.max_tries,
            allowed=allowed,
        )


@dataclass(frozen=True)
class LocalTextureParams(PerlinParams):
    """DRAEM texture anomaly (``local_texture``); Perlin fields as in ``PerlinParams``.

    Attributes:
        weight_range: texture weight ``w`` in ``img*(1-M) + w*tex*M + (1-w)*img*M``.
        n_augment: how many distinct texture augmentations are chained.
        augmentations: names drawn from (see ``augment.AUGMENTATIONS``).
    """

    weight_range: tuple[float, float] = (0.2, 1.0)
    n_augment: int = 3
    augmentations: tuple[str, ...] = tuple(AUGMENTATIONS)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("weight_range", self.weight_range, 0.0, 1.0)
        check_positive("n_augment", self.n_augment, allow_zero=True)
        for name in self.augmentations:
            check_choice("augmentations", name, tuple(AUGMENTATIONS))


@dataclass(frozen=True)
class LocalColorParams(PerlinParams):
    """Texture-free colour/structure change in a Perlin region (``local_color``).

    Attributes:
        ops: perturbations drawn from (``hue``, ``brightness``, ``blur``, ``noise``, ``warp``).
        n_ops: how many distinct ops are chained (inclusive range).
        hue_shift_range: |hue shift| in degrees (sign random); saturation is scaled too.
        saturation_range: saturation multiplier.
        brightness_range: |brightness shift| in uint8 units (sign random).
        contrast_range: contrast multiplier about the region's mean.
        blur_sigma_range: Gaussian blur sigma, px.
        noise_std_range: additive Gaussian noise std, uint8 units.
        warp_px_range: peak displacement of a smooth local warp, px.
    """

    ops: tuple[str, ...] = COLOR_OPS
    n_ops: tuple[int, int] = (1, 2)
    hue_shift_range: tuple[float, float] = (20.0, 60.0)
    saturation_range: tuple[float, float] = (0.6, 1.5)
    brightness_range: tuple[float, float] = (25.0, 70.0)
    contrast_range: tuple[float, float] = (0.6, 1.4)
    blur_sigma_range: tuple[float, float] = (1.5, 4.0)
    noise_std_range: tuple[float, float] = (8.0, 25.0)
    warp_px_range: tuple[float, float] = (3.0, 10.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ops:
            raise ConfigError("ops: needs at least one of " + str(list(COLOR_OPS)))
        for op in self.ops:
            check_choice("ops", op, COLOR_OPS)
        check_range("n_ops", self.n_ops, 1)
        check_range("hue_shift_range", self.hue_shift_range, 0.0, 180.0)
        check_range("saturation_range", self.saturation_range, 0.0)
        check_range("brightness_range", self.brightness_range, 0.0, 255.0)
        check_range("contrast_range", self.contrast_range, 0.0)
        check_range("blur_sigma_range", self.blur_sigma_range, 0.0)
        check_range("noise_std_range", self.noise_std_range, 0.0)
        check_range("warp_px_range", self.warp_px_range, 0.0)


@dataclass(frozen=True)
class CutPasteParams:
    """CutPaste patch/scar from the same image (``cutpaste``).

    Attributes:
        mode: ``"patch"`` (rectangle), ``"scar"`` (thin rotated strip) or ``"random"``.
        area_range: patch area as a fraction of the image.
        aspect_range: patch height/width ratio, drawn log-uniformly.
        scar_width_range: scar width as a fraction of the shorter image side (>= 2 px).
        scar_length_range: scar length as a fraction of the shorter image side.
        rotation_range: scar rotation, degrees (patches are not rotated, as in CutPaste).
        color_jitter: brightness/contrast/saturation/hue jitter strength (0 disables).
        max_tries: redraws when a paste happens to change nothing visible.
    """

    mode: str = "random"
    area_range: tuple[float, float] = (0.02, 0.15)
    aspect_range: tuple[float, float] = (0.3, 3.3)
    scar_width_range: tuple[float, float] = (0.008, 0.0625)
    scar_length_range: tuple[float, float] = (0.04, 0.1)
    rotation_range: tuple[float, float] = (-45.0, 45.0)
    color_jitter: float = 0.1
    max_tries: int = 8

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, CUTPASTE_MODES)
        check_range("area_range", self.area_range, 1e-4, 0.5)
        check_range("aspect_range", self.aspect_range, 1e-2)
        check_range("scar_width_range", self.scar_width_range, 0.0, 1.0)
        check_range("scar_length_range", self.scar_length_range, 0.0, 1.0)
        check_range("rotation_range", self.rotation_range, -360.0, 360.0)
        check_between("color_jitter", self.color_jitter, 0.0, 1.0)
        check_positive("max_tries", self.max_tries)


def blend_texture(
    image: np.ndarray, texture: np.ndarray, mask: np.ndarray, weight: float
) -> np.ndarray:
    """DRAEM blend ``img*(1-M) + w*tex*M + (1-w)*img*M`` with a binary ``mask``."""
    mixed = cv2.addWeighted(texture, float(weight), image, 1.0 - float(weight), 0.0)
    return masked_copy(image, mixed, mask)


def shift_hue(image: np.ndarray, degrees: float, saturation: float) -> np.ndarray:
    """Rotate hue by ``degrees`` and scale saturation (HSV lookup tables)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    ramp = np.arange(256)
    lut_h = ((ramp + round(degrees / 2.0)) % 180).astype(np.uint8)
    lut_s = np.clip(np.rint(ramp * saturation), 0, 255).astype(np.uint8)
    table = np.stack([lut_h, lut_s, ramp.astype(np.uint8)], axis=1).reshape(256, 1, 3)
    return cv2.cvtColor(cv2.LUT(hsv, table), cv2.COLOR_HSV2RGB)


def shift_brightness(
    image: np.ndarray, add: float, contrast: float, mask: np.ndarray
) -> np.ndarray:
    """``(img - mean) * contrast + mean + add``, with the mean taken inside ``mask``."""
    mean = float(np.mean(cv2.mean(image, mask.astype(np.uint8))[:3])) if mask.any() else 127.5
    ramp = np.arange(256, dtype=np.float32) * contrast + (mean * (1.0 - contrast) + add)
    return cv2.LUT(image, np.clip(np.rint(ramp), 0, 255).astype(np.uint8))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` px."""
    return cv2.GaussianBlur(image, (0, 0), float(sigma))


def add_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of ``std`` uint8 units, independent per channel."""
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(std)
    noise += image
    np.rint(noise, out=noise)
    return np.clip(noise, 0, 255, out=noise).astype(np.uint8)


def smooth_warp(image: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
    """Displace pixels along a smooth Perlin flow of peak ``px`` pixels (a local dent/bulge)."""
    h, w = image.shape[:2]
    res = (max(1, h // 32), max(1, w // 32))
    map_x = perlin_noise((h, w), res, rng)
    map_x *= np.float32(px)
    map_x += np.arange(w, dtype=np.float32)[None, :]
    map_y = perlin_noise((h, w), res, rng)
    map_y *= np.float32(px)
    map_y += np.arange(h, dtype=np.float32)[:, None]
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision-style ColorJitter: brightness/contrast/saturation in 1 +- s, hue +- s/2 turn."""
    if strength <= 0:
        return image.copy()
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, 3)
    hue_deg = float(rng.uniform(-strength, strength)) * 180.0
    out = image.astype(np.float32) * b
    out = (out - out.mean()) * c + out.mean()
    gray = out.mean(axis=2, keepdims=True)
    out = np.clip((out - gray) * s + gray, 0, 255).astype(np.uint8)
    return shift_hue(out, hue_deg, 1.0)


def rotate_patch(
    patch: np.ndarray, mask: np.ndarray, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``patch`` and its footprint by ``angle`` degrees onto an enlarged canvas."""
    h, w = mask.shape
    rad = math.radians(angle)
    nh = int(math.ceil(abs(h * math.cos(rad)) + abs(w * math.sin(rad))))
    nw = int(math.ceil(abs(w * math.cos(rad)) + abs(h * math.sin(rad))))
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angle), 1.0)
    m[0, 2] += (nw - w) / 2.0
    m[1, 2] += (nh - h) / 2.0
    out = cv2.warpAffine(patch, m, (nw, nh), borderMode=cv2.BORDER_REPLICATE)
    mk = cv2.warpAffine(mask.astype(np.float32), m, (nw, nh)) > 0.5
    return out, mk


def _texture_of(inputs: EditInputs) -> np.ndarray:
    tex = inputs.texture
    if tex is None:
        raise ValueError("local_texture: needs inputs.texture")
    if tex.shape != inputs.base.image.shape or tex.dtype != np.uint8:
        raise ValueError(
            f"local_texture: texture {tex.shape} {tex.dtype} != base {inputs.base.image.shape}"
        )
    return tex


@register_edit("local_texture", LocalTextureParams, needs_texture=True)
def local_texture(
    inputs: EditInputs, rng: np.random.Generator, params: LocalTextureParams
) -> EditResult:
    """DRAEM anomaly: an augmented texture blended into a thresholded, rotated Perlin region."""
    base, p = inputs.base, params
    tex = _texture_of(inputs)
    ignore = ignore_of(base)
    mask, meta = p.region(base.image.shape[:2], rng, ~ignore)
    tex_aug, names = random_augment(tex, rng, p.n_augment, p.augmentations)
    weight = uniform(rng, p.weight_range)
    query = blend_texture(base.image, tex_aug, mask, weight)
    info = {**meta, "weight": round(weight, 4), "augmentations": names}
    return finish(base.image, query, mask, ignore=ignore, info=info, what="local_texture")


def _apply_color_op(
    op: str, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, p: LocalColorParams
) -> tuple[np.ndarray, dict[str, float]]:
    sign = 1.0 if rng.integers(2) else -1.0
    if op == "hue":
        deg, sat = sign * uniform(rng, p.hue_shift_range), uniform(rng, p.saturation_range)
        return shift_hue(image, deg, sat), {"degrees": round(deg, 3), "saturation": round(sat, 3)}
    if op == "brightness":
        add, con = sign * uniform(rng, p.brightness_range), uniform(rng, p.contrast_range)
        out = shift_brightness(image, add, con, mask)
        return out, {"add": round(add, 3), "contrast": round(con, 3)}
    if op == "blur":
        sigma = uniform(rng, p.blur_sigma_range)
        return gaussian_blur(image, sigma), {"sigma": round(sigma, 3)}
    if op == "noise":
        std = uniform(rng, p.noise_std_range)
        return add_noise(image, std, rng), {"std": round(std, 3)}
    px = uniform(rng, p.warp_px_range)
    return smooth_warp(image, px, rng), {"px": round(px, 3)}


@register_edit("local_color", LocalColorParams)
def local_color(
    inputs: EditInputs, rng: np.random.Generator, params: LocalColorParams
) -> EditResult:
    """Texture-free anomaly: chained colour/structure perturbations inside a Perlin region."""
    base, p = inputs.base, params
    ignore = ignore_of(base)
    mask, meta = p.region(base.image.shape[:2], rng, ~ignore)
    n = min(randint(rng, p.n_ops), len(p.ops))
    ops = [p.ops[i] for i in rng.choice(len(p.ops), size=n, replace=False).tolist()]
    changed, applied = base.image, []
    for op in ops:
        changed, args = _apply_color_op(op, changed, mask, rng, p)
        applied.append({"op": op, **args})
    query = masked_copy(base.image, changed, mask)
    info = {**meta, "ops": applied}
    return finish(base.image, query, mask, ignore=ignore, info=info, what="local_color")


def _cut_shape(
    H: int, W: int, mode: str, rng: np.random.Generator, p: CutPasteParams
) -> tuple[int, int, float]:
    """(height, width, rotation) of the piece to cut, all fitting inside the image."""
    if mode == "patch":
        area = uniform(rng, p.area_range) * H * W
        aspect = math.exp(uniform(rng, (math.log(p.aspect_range[0]), math.log(p.aspect_range[1]))))
        ph = int(np.clip(round(math.sqrt(area * aspect)), 2, H - 1))
        pw = int(np.clip(round(math.sqrt(area / aspect)), 2, W - 1))
        return ph, pw, 0.0
    side = min(H, W)
    width = max(2, round(uniform(rng, p.scar_width_range) * side))
    length = max(width + 1, round(uniform(rng, p.scar_length_range) * side))
    angle = uniform(rng, p.rotation_range)
    diag = math.hypot(width, length)
    if diag >= side - 1:
        k = (side - 2) / diag
        width, length = max(2, int(width * k)), max(3, int(length * k))
    return length, width, angle


@register_edit("cutpaste", CutPasteParams)
def cutpaste(inputs: EditInputs, rng: np.random.Generator, params: CutPasteParams) -> EditResult:
    """CutPaste: a colour-jittered patch or rotated scar moved elsewhere in the same image."""
    base, p = inputs.base, params
    img = base.image
    H, W = img.shape[:2]
    ignore = ignore_of(base)
    for attempt in range(p.max_tries):
        mode = p.mode if p.mode != "random" else ("patch", "scar")[int(rng.integers(2))]
        ph, pw, angle = _cut_shape(H, W, mode, rng, p)
        sy, sx = int(rng.integers(0, H - ph + 1)), int(rng.integers(0, W - pw + 1))
        piece = color_jitter(img[sy : sy + ph, sx : sx + pw], p.color_jitter, rng)
        footprint = np.ones((ph, pw), bool)
        if mode == "scar":
            piece, footprint = rotate_patch(piece, footprint, angle)
        pos = sample_position(ignore, footprint, rng)
        if pos is None:
            continue
        y, x = pos
        region = place_mask((H, W), footprint, y, x)
        query = img.copy()
        fh, fw = footprint.shape
        roi = query[y : y + fh, x : x + fw]
        roi[footprint] = piece[footprint]
        info = {
            "mode": mode,
            "source": [sy, sx],
            "target": [y, x],
            "size": [ph, pw],
            "angle": round(angle, 3),
            "tries": attempt + 1,
        }
        try:
            return finish(img, query, region, ignore=ignore, info=info, what="cutpaste")
        except SkipSample:
            continue
    raise SkipSample(f"cutpaste: no visible patch on {base.key} after {p.max_tries} tries")
