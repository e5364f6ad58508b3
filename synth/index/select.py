"""Which indexed masks a tar-sharded source uses: filters and a per-image cap, from the index alone.

SA-1B has about 100 masks per image, from whole scenes down to a button. The filters mean what
the COCO source's mean (area as a fraction of the image; the smaller side of the mask's box, in
pixels) plus SAM's two scores. Then at most ``max_masks`` masks per image are kept: those with
the highest ``predicted_iou`` (ties: higher ``stability_score``, larger area, earlier in the
JSON). Quality first rather than size first, because the largest SA-1B masks are mostly
background regions (sky, floor, walls), which make poor objects to remove, paste or exchange,
while the size window is already the area filters' job. Kept masks stay in JSON order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from synth.errors import ConfigError
from synth.index.tar_index import TarIndex
from synth.sources.filters import check_instance_filters, keep_instances


@dataclass(frozen=True)
class MaskFilter:
    """The mask filters and cap of a tar-sharded source (see the module docstring).

    Raises:
        ConfigError: a value out of range, naming the field.
    """

    min_area_frac: float = 0.0
    max_area_frac: float = 1.0
    min_side: int = 0
    min_predicted_iou: float = 0.0
    min_stability_score: float = 0.0
    max_masks: int = 32

    def __post_init__(self) -> None:
        # One type per field, so that ``0`` and ``0.0`` from two YAML files name one summary.
        for name in ("min_area_frac", "max_area_frac", "min_predicted_iou", "min_stability_score"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ConfigError(f"{name}={v!r}: must be a number")
            object.__setattr__(self, name, float(v))
        for name in ("min_side", "max_masks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"{name}={v!r}: must be a whole number")
            object.__setattr__(self, name, int(v))
        check_instance_filters(self.min_area_frac, self.max_area_frac, self.min_side)
        for name in ("min_predicted_iou", "min_stability_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be in [0, 1]")
        if self.max_masks < 1:
            raise ConfigError(f"max_masks={self.max_masks}: must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def usable(self, idx: TarIndex, image: int | None = None) -> np.ndarray:
        """bool [M] (or over the masks of ``image``): which masks pass the filters, before the
        cap."""
        if image is None:
            sl = slice(0, idx.num_masks)
            area = (idx.heights.astype(np.float64) * idx.widths)[idx.mask_image()]
        else:
            sl = idx.masks(image)
            area = float(idx.heights[image]) * float(idx.widths[image])
        ok = keep_instances(
            idx.areas[sl],
            idx.bboxes[sl],
            area,
            min_area_frac=self.min_area_frac,
            max_area_frac=self.max_area_frac,
            min_side=self.min_side,
        )
        if self.min_predicted_iou > 0:
            ok &= idx.predicted_iou[sl] >= self.min_predicted_iou
        if self.min_stability_score > 0:
            ok &= idx.stability_score[sl] >= self.min_stability_score
        return ok

    def counts(self, idx: TarIndex) -> np.ndarray:
        """int32 [N]: the masks each image of ``idx`` offers after filters and cap."""
        csum = np.concatenate([[0], np.cumsum(self.usable(idx), dtype=np.int64)])
        offsets = np.asarray(idx.mask_offsets)
        per_image = csum[offsets[1:]] - csum[offsets[:-1]]
        return np.minimum(per_image, self.max_masks).astype(np.int32)

    def picked(self, idx: TarIndex, i: int) -> np.ndarray:
        """int64: the masks of image ``i`` to use, as positions in the mask arrays, JSON order."""
        sl = idx.masks(i)
        ok = np.flatnonzero(self.usable(idx, i))
        if ok.size > self.max_masks:
            j = sl.start + ok
            order = np.lexsort(
                (ok, -idx.areas[j].astype(np.int64), -idx.stability_score[j], -idx.predicted_iou[j])
            )
            ok = np.sort(ok[order[: self.max_masks]])
        return sl.start + ok
