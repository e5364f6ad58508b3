"""A folder of images with instance masks, for data that is not in COCO format.

Two layouts are understood (``layout="auto"`` picks the one present)::

    root/
      images/<name>.<jpg|jpeg|png|bmp|tif|tiff|webp>
      masks/<name>.png            # layout "instance_png": one single-channel PNG per image;
                                  # 0 = background, 1..K = instances, 255 = ignore region

    root/
      images/<name>.<ext>
      masks/<name>/<anything>.png # layout "per_object": one binary PNG per object;
                                  # any non-zero pixel belongs to the object

Masks must have the image's size. Images are listed non-recursively and sorted by name so that
index ``i`` is the same file everywhere; ``<name>`` (the file stem) must be unique. A missing,
unreadable or mis-sized mask raises ``SourceError`` from ``load`` naming the file, so the builder
can skip that image and report it.

``min_area_frac``, ``max_area_frac`` and ``min_side`` drop instances as the COCO source does (area
as a fraction of the image area; smallest side of the instance's bounding box, in pixels). They
are applied in ``load``, as instances are only known once a mask is decoded; an image left
without instances loads like a COCO image without usable ones (object edits skip it and the
builder retries with another image).
"""

from __future__ import annotations

import io
import posixpath
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from synth.errors import ConfigError, SourceError
from synth.sources._io import (
    IMAGE_EXTS,
    absolute,
    checked_index,
    fingerprint_of,
    is_dir,
    join,
    list_dirs,
    list_files,
    read_bytes,
    read_rgb,
)
from synth.sources.base import Instance, SourceImage
from synth.sources.filters import check_instance_filters, keep_instances

Layout = Literal["auto", "instance_png", "per_object"]
IGNORE_ID = 255
_LAYOUTS = ("auto", "instance_png", "per_object")


class FolderSource:
    """Images plus instance masks from a folder (see the module docstring for the layouts).

    Args:
        root: local path or fsspec URL holding ``images/`` and ``masks/``.
        layout: ``"instance_png"``, ``"per_object"`` or ``"auto"`` (detect from ``masks/``).
        min_area_frac: smallest usable instance, as a fraction of the image area.
        max_area_frac: largest usable instance, as a fraction of the image area.
        min_side: smallest usable instance bounding-box side, in pixels.
        name: prefix of the image keys (``"<name>:<stem>"``).

    Raises:
        SourceError: ``images/`` or ``masks/`` is missing, ``masks/`` mixes both layouts, or
            two images share a stem.
        ConfigError: ``layout`` is not one of the names above, or a filter value is out of
            range.
    """

    def __init__(
        self,
        root: str,
        *,
        layout: Layout = "auto",
        min_area_frac: float = 0.0,
        max_area_frac: float = 1.0,
        min_side: int = 0,
        name: str = "folder",
    ) -> None:
        if layout not in _LAYOUTS:
            raise ConfigError(f"layout={layout!r}: use one of {', '.join(_LAYOUTS)}")
        check_instance_filters(min_area_frac, max_area_frac, min_side)
        self.min_area_frac = float(min_area_frac)
        self.max_area_frac = float(max_area_frac)
        self.min_side = int(min_side)
        self.root = absolute(str(root)).rstrip("/")
        self.name = name
        images_dir, masks_dir = join(self.root, "images"), join(self.root, "masks")
        for d in (images_dir, masks_dir):
            if not is_dir(d):
                raise SourceError(
                    f"{d}: directory not found; a folder source needs images/ and masks/"
                )
        self._images = list_files(images_dir, IMAGE_EXTS, recursive=False)
        if not self._images:
            raise SourceError(f"{images_dir}: no images ({', '.join(IMAGE_EXTS)}); add some")
        stems: dict[str, str] = {}
        for rel, _ in self._images:
            stem = posixpath.splitext(rel)[0]
            if stem in stems:
                raise SourceError(
                    f"{images_dir}: {stems[stem]} and {rel} share the name {stem!r}; rename one"
                )
            stems[stem] = rel
        self._stems = tuple(stems)
        flat = list_files(masks_dir, (".png",), recursive=False)
        subdirs = list_dirs(masks_dir)
        if layout == "auto":
            if flat and subdirs:
                raise SourceError(
                    f"{masks_dir}: holds both <name>.png files and <name>/ folders; keep one "
                    "layout or pass layout="
                )
            layout = "per_object" if subdirs else "instance_png"
        self.layout: Layout = layout
        self._object_masks: dict[str, tuple[str, ...]] = {}
        self._flat_masks = {posixpath.splitext(rel)[0]: rel for rel, _ in flat}
        self._mask_files: tuple[tuple[str, int], ...] = tuple(flat)
        if layout == "per_object":
            for stem in subdirs:
                files = list_files(join(masks_dir, stem), (".png",), recursive=False)
                self._object_masks[stem] = tuple(rel for rel, _ in files)

    def __len__(self) -> int:
        return len(self._images)

    def image_key(self, index: int) -> str:
        """``"<name>:<image stem>"``."""
        return f"{self.name}:{self._stems[index]}"

    def instance_counts(self) -> np.ndarray | None:
        """Mask files per image (``per_object``); ``None`` for ``instance_png`` (needs decoding).

        With instance filters set this is an upper bound: which masks pass is only known once
        they are decoded, so an image whose masks all fail loads without instances.
        """
        if self.layout != "per_object":
            return None
        return np.array([len(self._object_masks.get(s, ())) for s in self._stems], np.int32)

    def fingerprint(self) -> str:
        """Changes when file names, file sizes, the layout or the instance filters change.

        Filters at their defaults are left out, so stores built before they existed keep
        their fingerprint.
        """
        parts: list[object] = [
            "folder",
            self.layout,
            self._images,
            self._mask_files,
            sorted(self._object_masks.items()),
        ]
        if self._filtered:
            parts.append(("filters", self.min_area_frac, self.max_area_frac, self.min_side))
        return fingerprint_of(*parts)

    @property
    def _filtered(self) -> bool:
        return (self.min_area_frac, self.max_area_frac, self.min_side) != (0.0, 1.0, 0)

    def _usable(self, mask: np.ndarray) -> bool:
        """Whether ``mask`` passes the area and side filters (as ``CocoSource.usable_mask``)."""
        if not self._filtered:
            return True
        h, w = mask.shape
        box = np.zeros(4, np.int64)  # (x, y, w, h); an empty mask keeps sides 0
        if self.min_side > 0:
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size:
                box[:] = (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
        return bool(
            keep_instances(
                float(np.count_nonzero(mask)),
                box,
                float(h) * float(w),
                min_area_frac=self.min_area_frac,
                max_area_frac=self.max_area_frac,
                min_side=self.min_side,
            )
        )

    def load(self, index: int) -> SourceImage:
        """Decode image ``index`` and its masks; instances failing the filters are left out.

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the image or a mask is missing, unreadable, not single-channel, the
                wrong size, or (``per_object``) empty.
        """
        i = checked_index(self.name, index, len(self))
        rel, _ = self._images[i]
        stem = self._stems[i]
        image = read_rgb(join(join(self.root, "images"), rel))
        shape = image.shape[:2]
        if self.layout == "instance_png":
            instances, ignore = self._instance_png(stem, shape)
        else:
            instances, ignore = self._per_object(stem, shape), None
        return SourceImage(key=self.image_key(i), image=image, instances=instances, ignore=ignore)

    def _instance_png(
        self, stem: str, shape: tuple[int, int]
    ) -> tuple[tuple[Instance, ...], np.ndarray | None]:
        if stem not in self._flat_masks:
            url = join(join(self.root, "masks"), f"{stem}.png")
            raise SourceError(f"{url}: mask missing for image {stem!r}; add it")
        ids = _read_mask(join(join(self.root, "masks"), self._flat_masks[stem]), shape)
        ignore = ids == IGNORE_ID
        labels = np.unique(ids)
        instances = tuple(
            inst
            for inst in (
                Instance(mask=ids == k, category=0, ann_id=int(k))
                for k in labels
                if k not in (0, IGNORE_ID)
            )
            if self._usable(inst.mask)
        )
        return instances, (ignore if ignore.any() else None)

    def _per_object(self, stem: str, shape: tuple[int, int]) -> tuple[Instance, ...]:
        if stem not in self._object_masks:
            raise SourceError(
                f"{join(join(self.root, 'masks'), stem)}/: mask folder missing for image {stem!r}; "
                "add it (it may be empty)"
            )
        out = []
        for k, rel in enumerate(self._object_masks[stem], start=1):
            url = join(join(join(self.root, "masks"), stem), rel)
            mask = _read_mask(url, shape) != 0
            if not mask.any():
                raise SourceError(f"{url}: mask is empty; delete it or draw the object")
            if self._usable(mask):
                out.append(Instance(mask=mask, category=0, ann_id=k))
        return tuple(out)


def _read_mask(url: str, shape: tuple[int, int]) -> np.ndarray:
    """Read a single-channel mask PNG as integer ids (palette PNGs give their indices)."""
    data = read_bytes(url)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise SourceError(
                    f"{url}: mask has mode {im.mode} (need a single-channel or palette PNG); "
                    "save instance ids as 8- or 16-bit gray"
                )
            ids = np.array(im)
    except (UnidentifiedImageError, OSError, ValueError):
        raise SourceError(f"{url}: cannot decode mask (corrupt or not a PNG); replace it") from None
    if ids.shape != shape:
        raise SourceError(
            f"{url}: mask is {ids.shape[0]}x{ids.shape[1]} but its image is "
            f"{shape[0]}x{shape[1]}; resize or re-export it"
        )
    return ids.astype(np.int32) if ids.dtype == bool else ids
