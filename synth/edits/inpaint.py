"""Object-removal backends implementing the ``Inpainter`` protocol, and their factory.

Backends are keyed by a short ``kind``; heavy ones (the TorchScript and ONNX models of
``inpaint_torch.py``) import their dependencies only when they first run, so that the OpenCV
path never pays for them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from synth.edits.base import Inpainter
from synth.edits.inpaint_torch import OnnxInpainter, TorchScriptInpainter
from synth.errors import ConfigError

_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


class OpenCVInpainter:
    """``cv2.inpaint`` with a fixed method and radius; only holds its arguments.

    Args:
        method: ``"telea"`` (fast marching) or ``"ns"`` (Navier-Stokes).
        radius: neighbourhood radius in pixels.
        half_scale_above: holes with more pixels than this are filled at half resolution
            (``None``: never). Both methods cost about hole area x radius^2: on COCO objects at
            256x256 a 1-4k pixel hole takes 10-20 ms at full resolution, a 16k+ one 165 ms,
            and 7-15x less at half scale. The half-scale fill differs from the full-resolution
            one by a median 29-31 dB PSNR in every hole-size band, as much as OpenCV's two
            methods differ from each other (28-33 dB). Holes up to the 1024 px default (1.6%
            of 256x256), whose fill is cheap and thin, stay at full resolution.
    """

    def __init__(
        self, method: str = "telea", radius: int = 5, half_scale_above: int | None = 1024
    ) -> None:
        if method not in _METHODS:
            raise ConfigError(f"inpainter.method: {method!r} is not one of {sorted(_METHODS)}")
        if int(radius) < 1:
            raise ConfigError(f"inpainter.radius: must be >= 1, got {radius}")
        if half_scale_above is not None and int(half_scale_above) < 0:
            raise ConfigError(
                f"inpainter.half_scale_above: must be >= 0 pixels or null, got {half_scale_above}"
            )
        self.method = method
        self.radius = int(radius)
        self.half_scale_above = None if half_scale_above is None else int(half_scale_above)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return a new image with ``mask`` (HxW bool) filled from its surroundings.

        Only the hole's bounding box plus the read-radius margin is handed to OpenCV: both
        methods read known pixels within ``radius`` of the hole only, so the result is identical
        and the whole-image set-up cost (about 1 ms at 256x256) is saved for small objects.
        Pixels outside ``mask`` are never changed, at either scale.
        """
        m = mask.view(np.uint8) if mask.dtype == bool else (mask != 0).view(np.uint8)
        out = image.copy()
        x, y, w, h = cv2.boundingRect(m)
        if w == 0:
            return out
        half = self.half_scale_above is not None and cv2.countNonZero(m) > self.half_scale_above
        small_radius = max(1, self.radius // 2)
        pad = 2 * (small_radius + 2) if half else self.radius + 2
        H, W = m.shape
        y0, x0, y1, x1 = max(y - pad, 0), max(x - pad, 0), min(y + h + pad, H), min(x + w + pad, W)
        crop, hole = image[y0:y1, x0:x1], np.ascontiguousarray(m[y0:y1, x0:x1])
        if half:
            out[y0:y1, x0:x1] = self._fill_half(crop, hole, small_radius)
        else:
            out[y0:y1, x0:x1] = cv2.inpaint(
                np.ascontiguousarray(crop), hole, self.radius, _METHODS[self.method]
            )
        return out

    def _fill_half(self, crop: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
        """Inpaint a 2x2-averaged copy, upsample the fill and write it into the hole only.

        A half-scale pixel counts as hole when any of its four pixels is, so the known pixels
        the fill is drawn from hold no hole colour. Odd sides are padded by edge replication.
        """
        h, w = hole.shape
        eh, ew = h % 2, w % 2
        even = cv2.copyMakeBorder(crop, 0, eh, 0, ew, cv2.BORDER_REPLICATE)
        even_hole = cv2.copyMakeBorder(hole, 0, eh, 0, ew, cv2.BORDER_CONSTANT, value=0)
        size = ((w + ew) // 2, (h + eh) // 2)
        small = cv2.resize(even, size, interpolation=cv2.INTER_AREA)
        small_hole = cv2.resize(even_hole * 255, size, interpolation=cv2.INTER_AREA)
        filled = cv2.inpaint(small, small_hole, radius, _METHODS[self.method])
        up = cv2.resize(filled, (w + ew, h + eh), interpolation=cv2.INTER_LINEAR)
        result = np.array(crop)
        cv2.copyTo(up[:h, :w], hole, result)
        return result

    def __repr__(self) -> str:
        return (
            f"OpenCVInpainter(method={self.method!r}, radius={self.radius}, "
            f"half_scale_above={self.half_scale_above})"
        )


class PatchMatchInpainter:
    """Exemplar fill (PatchMatch, Barnes et al. 2009) from the ``patchmatch-cython`` package.

    OpenCV's diffusion methods leave smooth smears in large holes: a cue a change model can
    learn in place of the change itself. PatchMatch copies real patches of the same image into
    the hole, coarse to fine, so the fill carries the surrounding texture. It costs about
    0.1-0.9 s per hole at 256x256 (1-33% of the image) against milliseconds for Telea.

    The package's random search is seeded from a hash of the image and the hole, so the same
    inputs give the same bytes with no generator to thread through the edit; pixels outside
    the hole are never changed.

    Args:
        patch_size: side of the compared patches in pixels (odd).
        em_loops: expectation-maximisation loops per pyramid level.
    """

    def __init__(self, patch_size: int = 7, em_loops: int = 1) -> None:
        if int(patch_size) < 3 or int(patch_size) % 2 == 0:
            raise ConfigError(f"inpainter.patch_size: use an odd size >= 3, got {patch_size}")
        if int(em_loops) < 1:
            raise ConfigError(f"inpainter.em_loops: must be >= 1, got {em_loops}")
        self.patch_size = int(patch_size)
        self.em_loops = int(em_loops)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return a new image with ``mask`` (HxW bool) filled by patches of ``image``."""
        try:
            import patchmatch_cython
        except ImportError:
            raise ConfigError(
                "inpainter.kind patchmatch needs the patchmatch-cython package: "
                "pip install patchmatch-cython (or pip install 'synth[patchmatch]')"
            ) from None
        hole = np.ascontiguousarray(mask != 0)
        if not hole.any():
            return image.copy()
        seed = zlib.crc32(hole.tobytes(), zlib.crc32(np.ascontiguousarray(image).tobytes()))
        filled = patchmatch_cython.inpaint_pyramid(
            np.ascontiguousarray(image),
            hole,
            patch_size=self.patch_size,
            seed=seed & 0x7FFFFFFF,
            em_loops=self.em_loops,
        )
        out = image.copy()
        out[hole] = filled[hole]
        return out

    def __repr__(self) -> str:
        return f"PatchMatchInpainter(patch_size={self.patch_size}, em_loops={self.em_loops})"


#: kind -> constructor taking the spec's remaining keys as keyword arguments. The learned
#: backends import torch / onnxruntime only when they first run (``inpaint_torch.py``).
INPAINTERS: dict[str, Callable[..., Inpainter]] = {
    "opencv": OpenCVInpainter,
    "patchmatch": PatchMatchInpainter,
    "torchscript": TorchScriptInpainter,
    "onnx": OnnxInpainter,
}


def create_inpainter(spec: dict[str, Any] | None) -> Inpainter:
    """Build an inpainter from ``{"kind": ..., **kwargs}`` (None means OpenCV defaults).

    Raises:
        ConfigError: unknown ``kind`` or arguments the backend does not accept.
    """
    spec = dict(spec or {})
    kind = spec.pop("kind", "opencv")
    if kind not in INPAINTERS:
        raise ConfigError(f"inpainter.kind: unknown {kind!r}; known: {sorted(INPAINTERS)}")
    try:
        return INPAINTERS[kind](**spec)
    except TypeError as exc:
        raise ConfigError(f"inpainter ({kind}): bad arguments {sorted(spec)}: {exc}") from None
