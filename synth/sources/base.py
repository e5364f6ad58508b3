"""The types every source yields: one image with its instance masks, loaded lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Instance:
    """One object of an image.

    Attributes:
        mask: HxW bool footprint at the image's native resolution.
        category: category id (0 when unknown, e.g. unsupervised proposals).
        ann_id: the annotation id in its source (or a running number).
    """

    mask: np.ndarray
    category: int = 0
    ann_id: int = 0

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class SourceImage:
    """An RGB image, its usable instances and the regions that must stay untouched.

    Attributes:
        key: stable, human-readable id ("coco:000000000139", "samples:astronaut").
        image: HxWx3 uint8 RGB.
        instances: objects an edit may remove, exchange or donate (crowd regions excluded).
        ignore: HxW bool of regions that are not clean background (COCO ``iscrowd``); edits
            never paste onto them and never pick them as objects. ``None`` when there are none.
    """

    key: str
    image: np.ndarray
    instances: tuple[Instance, ...] = ()
    ignore: np.ndarray | None = field(default=None)


@runtime_checkable
class ImageSource(Protocol):
    """A lazily-read collection of ``SourceImage``.

    Implementations hold only a compact index in memory and decode one image per ``load``.
    ``load`` raises ``SourceError`` with a one-line message for an unreadable/corrupt item.
    """

    name: str

    def __len__(self) -> int: ...

    def load(self, index: int) -> SourceImage: ...

    def instance_counts(self) -> np.ndarray | None:
        """Usable instances per image (int32, len == len(self)), or None when unknown
        until the image is loaded (e.g. unsupervised proposals)."""
        ...

    def fingerprint(self) -> str:
        """A short hash that changes when the underlying data or filters change."""
        ...


@runtime_checkable
class TextureSource(Protocol):
    """A lazily-read collection of RGB texture images (DTD-style)."""

    name: str

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray: ...

    def fingerprint(self) -> str: ...
