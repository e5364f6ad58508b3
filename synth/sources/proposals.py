"""Unsupervised object proposals, so that unlabeled photos can feed object edits.

Over-segment a downscaled copy (Felzenszwalb graph segmentation or SLIC superpixels), keep the
segments that look like objects (medium size, compact: solid and filling their box, not spread
along the image border like sky, floor or walls), fill their holes and upsample them to the
native resolution. Nothing is random, so the same image always gives the same masks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from synth.errors import ConfigError
from synth.sources._io import (
    IMAGE_EXTS,
    absolute,
    checked_index,
    fingerprint_of,
    join,
    list_images,
    read_rgb,
)
from synth.sources.base import Instance, SourceImage

Method = Literal["felzenszwalb", "slic"]
# A candidate overlapping already chosen proposals by more than this share of its area is a
# duplicate (the same object found at another segmentation scale).
_MAX_OVERLAP = 0.3


@dataclass(frozen=True)
class ProposalParams:
    """Settings of ``propose_instances`` (see there); validated on creation."""

    scale: int = 256
    method: Method = "felzenszwalb"
    min_area_frac: float = 0.01
    max_area_frac: float = 0.4
    max_instances: int = 8
    min_solidity: float = 0.5
    min_fill: float = 0.3
    max_border_frac: float = 0.2
    segment_scales: tuple[float, ...] = (100.0, 300.0, 900.0)
    n_segments: int = 48

    @classmethod
    def from_settings(cls, settings: dict[str, object]) -> ProposalParams:
        """Build from manifest keyword settings, naming unknown ones in a ConfigError."""
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown proposal settings {unknown}; use {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**settings)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.method not in ("felzenszwalb", "slic"):
            raise ConfigError(f"method={self.method!r}: use 'felzenszwalb' or 'slic'")
        if self.scale < 16:
            raise ConfigError(f"scale={self.scale}: the working copy needs >= 16 pixels a side")
        if not 0.0 <= self.min_area_frac < self.max_area_frac <= 1.0:
            raise ConfigError(
                f"min_area_frac={self.min_area_frac}, max_area_frac={self.max_area_frac}: "
                "need 0 <= min_area_frac < max_area_frac <= 1"
            )
        if self.max_instances < 1:
            raise ConfigError(f"max_instances={self.max_instances}: must be >= 1")
        for name in ("min_solidity", "min_fill", "max_border_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be in [0, 1]")
        object.__setattr__(self, "segment_scales", tuple(float(v) for v in self.segment_scales))
        if not self.segment_scales or min(self.segment_scales) <= 0:
            raise ConfigError(f"segment_scales={self.segment_scales}: need one or more values > 0")
        if self.n_segments < 2:
            raise ConfigError(f"n_segments={self.n_segments}: must be >= 2")


def propose_instances(
    image: np.ndarray,
    *,
    scale: int = 256,
    method: Method = "felzenszwalb",
    min_area_frac: float = 0.01,
    max_area_frac: float = 0.4,
    max_instances: int = 8,
    min_solidity: float = 0.5,
    min_fill: float = 0.3,
    max_border_frac: float = 0.2,
    segment_scales: tuple[float, ...] = (100.0, 300.0, 900.0),
    n_segments: int = 48,
) -> list[np.ndarray]:
    """Propose object masks for an unlabeled image.

    Args:
        image: HxWx3 uint8 RGB (HxW gray is accepted).
        scale: longest side of the working copy in pixels (segmentation cost grows with it).
        method: ``"felzenszwalb"`` (irregular, edge-following) or ``"slic"`` (compact).
        min_area_frac: smallest proposal, as a fraction of the image.
        max_area_frac: largest proposal; larger segments are usually background.
        max_instances: keep at most this many, the largest solid ones first.
        min_solidity: area / convex-hull area; low values are ragged background pieces.
        min_fill: area / bounding-box area; low values are thin or sprawling segments.
        max_border_frac: drop segments covering more than this fraction of the image border.
        segment_scales: Felzenszwalb ``scale`` values (larger gives bigger segments); the
            segments of every scale compete, so both parts and whole objects can win.
        n_segments: SLIC's approximate number of superpixels.

    Returns:
        HxW bool masks at the input resolution, non-overlapping, best first.
    """
    params = ProposalParams(
        scale=scale,
        method=method,
        min_area_frac=min_area_frac,
        max_area_frac=max_area_frac,
        max_instances=max_instances,
        min_solidity=min_solidity,
        min_fill=min_fill,
        max_border_frac=max_border_frac,
        segment_scales=tuple(segment_scales),
        n_segments=n_segments,
    )
    return propose(image, params)


def propose(image: np.ndarray, p: ProposalParams) -> list[np.ndarray]:
    """``propose_instances`` with its settings as one validated, hashable value."""
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    factor = min(1.0, p.scale / max(h, w))
    small_hw = (max(1, round(h * factor)), max(1, round(w * factor)))
    small = cv2.resize(rgb, small_hw[::-1], interpolation=cv2.INTER_AREA) if factor < 1 else rgb
    candidates = []
    for labels in _segmentations(small, p):
        candidates.extend(_candidates(labels, p))
    candidates.sort(key=lambda c: c[0])

    taken = np.zeros(small_hw, bool)
    out: list[np.ndarray] = []
    for _, small_mask in candidates:
        if len(out) == p.max_instances:
            break
        area = small_mask.sum()
        if (small_mask & taken).sum() > _MAX_OVERLAP * area:
            continue
        small_mask = small_mask & ~taken
        taken |= small_mask
        mask = _upsample(small_mask, (h, w))
        if p.min_area_frac <= mask.mean() <= p.max_area_frac:
            out.append(mask)
    return out


def _segmentations(small: np.ndarray, p: ProposalParams) -> list[np.ndarray]:
    from skimage.segmentation import felzenszwalb, slic

    if p.method == "slic":
        return [slic(small, n_segments=p.n_segments, compactness=10.0, start_label=1)]
    min_size = max(16, int(p.min_area_frac * small.shape[0] * small.shape[1] / 2))
    return [
        felzenszwalb(small, scale=s, sigma=0.8, min_size=min_size) + 1 for s in p.segment_scales
    ]


def _candidates(
    labels: np.ndarray, p: ProposalParams
) -> list[tuple[tuple[float, int], np.ndarray]]:
    """Object-like segments of one label image as ((sort key), hole-filled mask)."""
    from scipy import ndimage
    from skimage.measure import regionprops

    total = labels.size
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    border_frac = np.bincount(border, minlength=labels.max() + 1) / len(border)
    out = []
    for region in regionprops(labels):
        frac = region.area / total
        if not p.min_area_frac <= frac <= p.max_area_frac:
            continue
        if border_frac[region.label] > p.max_border_frac or region.extent < p.min_fill:
            continue
        if region.solidity < p.min_solidity:
            continue
        mask = np.zeros(labels.shape, bool)
        mask[region.slice] = ndimage.binary_fill_holes(labels[region.slice] == region.label)
        if mask.sum() / total > p.max_area_frac:
            continue
        out.append(((-float(region.area * region.solidity), region.label), mask))
    return out


def _upsample(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if mask.shape == hw:
        return mask.copy()
    soft = cv2.resize(mask.astype(np.uint8) * 255, hw[::-1], interpolation=cv2.INTER_LINEAR)
    return soft > 127


def _as_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"need an HxWx3 or HxW uint8 image, got {arr.dtype} {arr.shape}")
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr


class ProposalFolder:
    """A folder of unlabeled images (recursive, sorted) whose instances are proposals.

    Args:
        root: local path or fsspec URL.
        name: prefix of the image keys (``"<name>:<relative path without extension>"``).
        **params: ``ProposalParams`` fields, e.g. ``max_instances=4``.

    Raises:
        SourceError: ``root`` is missing or holds no images.
        ConfigError: a proposal setting is invalid.
    """

    def __init__(self, root: str, *, name: str = "proposals", **params: object) -> None:
        self.params = ProposalParams.from_settings(params)
        self.root = absolute(str(root)).rstrip("/")
        self.name = name
        self._files = list_images(self.root, IMAGE_EXTS, "images")

    def __len__(self) -> int:
        return len(self._files)

    def image_key(self, index: int) -> str:
        """``"<name>:<relative path without extension>"``."""
        rel = self._files[index][0]
        return f"{self.name}:{rel.rsplit('.', 1)[0]}"

    def instance_counts(self) -> None:
        """Unknown until an image is segmented."""
        return None

    def fingerprint(self) -> str:
        """Changes with file names, sizes or proposal settings."""
        return fingerprint_of("proposals", self._files, sorted(asdict(self.params).items()))

    def load(self, index: int) -> SourceImage:
        """Decode image ``index`` and propose its instances (``ann_id`` = rank from 1).

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the file is missing or undecodable.
        """
        i = checked_index(self.name, index, len(self))
        image = read_rgb(join(self.root, self._files[i][0]))
        masks = propose(image, self.params)
        instances = tuple(Instance(mask=m, category=0, ann_id=k) for k, m in enumerate(masks, 1))
        return SourceImage(key=self.image_key(i), image=image, instances=instances)
