"""A folder of plain images, with no instances: bases for the local-region edits only.

Real defects sit on surfaces (tiles, fabric, metal) far more often than in scenes, while COCO
gives local edits only scene photos to land on. A texture collection such as DTD listed here
(``kind: plain``, next to the COCO source) lets ``local_texture``/``local_color``/``cutpaste``
edit a surface too; the object edits never draw from it, as it has no instances.
"""

from __future__ import annotations

import numpy as np

from synth.sources._io import (
    IMAGE_EXTS,
    absolute,
    checked_index,
    fingerprint_of,
    join,
    list_images,
    read_rgb,
)
from synth.sources.base import SourceImage


class PlainImages:
    """Every image under ``root`` (recursively, sorted by relative path), without instances.

    Args:
        root: local path or fsspec URL; class sub-folders such as DTD's are fine.
        name: prefix of the image keys (``"<name>:<relative path>"``).

    Raises:
        SourceError: ``root`` is missing or holds no images.
    """

    def __init__(self, root: str, *, name: str = "plain") -> None:
        self.root = absolute(str(root)).rstrip("/")
        self.name = name
        self._files = list_images(self.root, IMAGE_EXTS, "images")

    def __len__(self) -> int:
        return len(self._files)

    def instance_counts(self) -> np.ndarray:
        """All zero: object edits must never pick these images."""
        return np.zeros(len(self), np.int32)

    def fingerprint(self) -> str:
        """Changes when file names or sizes change."""
        return fingerprint_of("plain", self._files)

    def load(self, index: int) -> SourceImage:
        """Decode image ``index``.

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the file is missing or undecodable.
        """
        i = checked_index(self.name, index, len(self))
        rel = self._files[i][0]
        return SourceImage(key=f"{self.name}:{rel}", image=read_rgb(join(self.root, rel)))
