"""Object-removal backends implementing the ``Inpainter`` protocol, and their factory.

Backends are keyed by a short ``kind``; heavy ones (the TorchScript and ONNX models of
``inpaint_torch.py``) import their dependencies only when they first run, so that the OpenCV
path never pays for them.
"""

from __future__ import annotations

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
    """

    def __init__(self, method: str = "telea", radius: int = 5) -> None:
        if method not in _METHODS:
            raise ConfigError(f"inpainter.method: {method!r} is not one of {sorted(_METHODS)}")
        if int(radius) < 1:
            raise ConfigError(f"inpainter.radius: must be >= 1, got {radius}")
        self.method = method
        self.radius = int(radius)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return a new image with ``mask`` (HxW bool) filled from its surroundings.

        Only the hole's bounding box plus ``radius + 2`` px is handed to OpenCV: both methods
        read known pixels within ``radius`` of the hole only, so the result is identical and
        the whole-image set-up cost (about 1 ms at 256x256) is saved for small objects.
        """
        m = mask.astype(np.uint8)
        out = image.copy()
        x, y, w, h = cv2.boundingRect(m)
        if w == 0:
            return out
        pad, (H, W) = self.radius + 2, m.shape
        y0, x0, y1, x1 = max(y - pad, 0), max(x - pad, 0), min(y + h + pad, H), min(x + w + pad, W)
        out[y0:y1, x0:x1] = cv2.inpaint(
            np.ascontiguousarray(image[y0:y1, x0:x1]),
            np.ascontiguousarray(m[y0:y1, x0:x1]),
            self.radius,
            _METHODS[self.method],
        )
        return out

    def __repr__(self) -> str:
        return f"OpenCVInpainter(method={self.method!r}, radius={self.radius})"


#: kind -> constructor taking the spec's remaining keys as keyword arguments. The learned
#: backends import torch / onnxruntime only when they first run (``inpaint_torch.py``).
INPAINTERS: dict[str, Callable[..., Inpainter]] = {
    "opencv": OpenCVInpainter,
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
