"""The instance filters shared by the COCO, folder and tar-sharded sources.

An instance is usable when its area, as a fraction of the image area, lies in
``[min_area_frac, max_area_frac]`` (both ends included) and, with ``min_side > 0``, the smaller
side of its bounding box is at least ``min_side`` pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synth.errors import ConfigError


def check_instance_filters(min_area_frac: Any, max_area_frac: Any, min_side: Any) -> None:
    """Raise ``ConfigError`` unless ``0 <= min_area_frac <= max_area_frac <= 1`` and
    ``min_side >= 0``; the message shows the values as given."""
    if not 0.0 <= min_area_frac <= max_area_frac <= 1.0:
        raise ConfigError(
            f"min_area_frac={min_area_frac}, max_area_frac={max_area_frac}: "
            "need 0 <= min_area_frac <= max_area_frac <= 1"
        )
    if min_side < 0:
        raise ConfigError(f"min_side={min_side}: must be >= 0 pixels")


def keep_instances(
    areas: Any,
    boxes: Any,
    image_area: Any,
    *,
    min_area_frac: float,
    max_area_frac: float,
    min_side: int,
) -> Any:
    """Which instances pass the filters: bool array (or a single bool for scalar inputs).

    Args:
        areas: instance areas in pixels, [M] or a scalar.
        boxes: [..., 4] ``(x, y, width, height)`` boxes matching ``areas``; read only when
            ``min_side > 0`` (``None`` is fine otherwise).
        image_area: the area of each instance's image, broadcastable to ``areas``.
    """
    frac = areas / image_area
    ok = (frac >= min_area_frac) & (frac <= max_area_frac)
    if min_side > 0:
        ok &= np.minimum(boxes[..., 2], boxes[..., 3]) >= min_side
    return ok
