"""A folder of texture images (e.g. DTD) for local-region edits."""

from __future__ import annotations

import numpy as np

from synth.sources._io import absolute, checked_index, fingerprint_of, join, list_images, read_rgb

TEXTURE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class TextureFolder:
    """Every image under ``root`` (recursively, sorted by relative path) as an RGB texture.

    Args:
        root: local path or fsspec URL; class sub-folders such as DTD's are fine.
        name: label used in keys and messages.

    Raises:
        SourceError: ``root`` is missing or holds no images.
    """

    def __init__(self, root: str, *, name: str = "textures") -> None:
        self.root = absolute(str(root)).rstrip("/")
        self.name = name
        self._files = list_images(self.root, TEXTURE_EXTS, "texture images")

    def __len__(self) -> int:
        return len(self._files)

    def path(self, index: int) -> str:
        """The relative path of texture ``index``."""
        return self._files[index][0]

    def load(self, index: int) -> np.ndarray:
        """Decode texture ``index`` as HxWx3 uint8 RGB.

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the file is missing or undecodable.
        """
        i = checked_index(self.name, index, len(self))
        return read_rgb(join(self.root, self._files[i][0]))

    def fingerprint(self) -> str:
        """Changes when file names or sizes change."""
        return fingerprint_of("textures", self._files)
