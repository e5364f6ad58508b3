"""COCO instances JSON as a lazily-decoded image source that scales to train2017.

The JSON (450 MB for train2017) is parsed once into a ``CocoIndex``: flat numpy arrays per image
(id, size, file name, slice of annotations) and per annotation (id, category, crowd flag, bbox,
area, segmentation as compressed RLE bytes in one blob). Masks are decoded only in ``load``, one
image at a time. With ``cache_dir`` the index is written as ``.npy`` files and memory-mapped, so
64 workers on one node share the same pages and a pickled source carries only paths.

Every annotation is validated while indexing; a bad one is excluded and reported in
``problems`` as ``(where, reason)`` (or raised at once with ``strict=True``), so one broken
polygon never takes down a 118k-image build. Crowd regions are never instances: they are merged
into ``SourceImage.ignore``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import fsspec
import numpy as np
from pycocotools import mask as mask_utils

from synth.errors import ConfigError, SourceError
from synth.sources._io import (
    absolute,
    checked_index,
    decode_bgr,
    fingerprint_of,
    join,
    read_bytes,
)
from synth.sources.base import Instance, SourceImage
from synth.sources.filters import check_instance_filters, keep_instances
from synth.sources.resize import check_size, resize_rgb
from synth.sources.rle import sample_rles

INDEX_VERSION = 1
_PREFIX_BYTES = 1 << 20
_MAX_CHECKED_VERTICES = 2000
_PAIRS_PER_CHUNK = 1 << 20
# COCO coordinates carry 2 decimals: a vertex within this many pixels of another edge touches it.
_TOUCH_TOLERANCE = 0.01
_FIX = "fix or drop it"

# pycocotools' decode warns on every call under numpy 2 (its __array__ lacks ``copy``); numpy
# falls back to a copy and the masks are correct, so the message is silenced for that module.
warnings.filterwarnings(
    "ignore",
    message=r"__array__ implementation doesn't accept a copy keyword",
    category=DeprecationWarning,
    module=r"pycocotools",
)


@dataclass(frozen=True, eq=False)
class CocoIndex:
    """The compact, array-only form of a COCO instances file.

    Images are sorted by file name (then id) so that index ``i`` does not depend on the JSON's
    order; annotations of an image are contiguous and sorted by id. ``bboxes`` (x, y, w, h) and
    ``areas`` are measured on the mask itself, not copied from the JSON, so filters agree with
    what ``load`` returns.

    Attributes:
        image_ids: int64 [N] COCO image ids.
        heights: int32 [N] image heights from the JSON.
        widths: int32 [N] image widths from the JSON.
        name_offsets: int64 [N+1] slices of ``names`` (UTF-8 file names).
        names: uint8 blob of concatenated file names.
        ann_offsets: int64 [N+1] slices of the annotation arrays per image.
        ann_ids: int64 [M] annotation ids.
        category_ids: int32 [M].
        iscrowd: bool [M].
        bboxes: float32 [M, 4] mask bounding boxes (x, y, w, h) in pixels.
        areas: int64 [M] mask areas in pixels.
        rle_offsets: int64 [M+1] slices of ``rles``.
        rles: uint8 blob of concatenated compressed-RLE count strings.
        categories: category id -> name.
        problems: (where, reason) for every rejected image or annotation.
        source: the annotation file's base name, used in messages.
        content_hash: sha256 of the annotation file's bytes.
    """

    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    name_offsets: np.ndarray
    names: np.ndarray
    ann_offsets: np.ndarray
    ann_ids: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray
    rle_offsets: np.ndarray
    rles: np.ndarray
    categories: dict[int, str] = field(default_factory=dict)
    problems: tuple[tuple[str, str], ...] = ()
    source: str = ""
    content_hash: str = ""

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_annotations(self) -> int:
        """Number of indexed (valid) annotations, crowd regions included."""
        return len(self.ann_ids)

    def file_name(self, i: int) -> str:
        """The ``file_name`` of image ``i`` as written in the JSON."""
        return bytes(self.names[self.name_offsets[i] : self.name_offsets[i + 1]]).decode()

    def rle(self, j: int, hw: tuple[int, int] | None = None) -> dict[str, Any]:
        """The compressed RLE of annotation ``j``, ready for ``pycocotools.mask.decode``.

        Args:
            j: annotation position in the arrays.
            hw: its image's (height, width) when the caller knows it (saves a search).
        """
        if hw is None:
            i = int(np.searchsorted(self.ann_offsets, j, side="right")) - 1
            hw = (int(self.heights[i]), int(self.widths[i]))
        counts = self.rles[self.rle_offsets[j] : self.rle_offsets[j + 1]].tobytes()
        return {"size": list(hw), "counts": counts}

    def annotation_image(self) -> np.ndarray:
        """int64 [M]: the image position of every annotation (for vectorised filters)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.ann_offsets))

    @classmethod
    def build(cls, ann_file: str | os.PathLike[str], *, strict: bool = False) -> CocoIndex:
        """Parse and validate a COCO instances JSON into an index.

        Args:
            ann_file: local path or fsspec URL of the JSON.
            strict: raise on the first problem instead of excluding the item and listing it.

        Raises:
            SourceError: the file is missing, not JSON, not a COCO instances file, or (with
                ``strict``) holds a malformed image or annotation.
        """
        url = str(ann_file)
        label = posixpath.basename(url.rstrip("/"))
        raw = read_bytes(url)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"{url}: not valid JSON ({exc}); check the file") from None
        _check_is_coco(data, url)
        content_hash = hashlib.sha256(raw).hexdigest()
        del raw
        return _IndexBuilder(label, strict).run(data, content_hash)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index as ``.npy`` arrays plus ``meta.json`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in _ARRAY_FIELDS:
            np.save(out / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        meta = {
            "version": INDEX_VERSION,
            "source": self.source,
            "content_hash": self.content_hash,
            "categories": [[k, v] for k, v in sorted(self.categories.items())],
            "problems": [list(p) for p in self.problems],
        }
        (out / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, mmap: bool = True) -> CocoIndex:
        """Read an index written by ``save``.

        Args:
            directory: the folder ``save`` wrote.
            mmap: memory-map the arrays read-only, so processes on one node share pages.

        Raises:
            SourceError: the folder is missing, incomplete or from another index version.
        """
        src = Path(directory)
        try:
            meta = json.loads((src / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            raise SourceError(
                f"{src}: no readable COCO index (meta.json); the cache dir must be on storage "
                "every worker sees, or delete it to rebuild"
            ) from None
        if meta.get("version") != INDEX_VERSION:
            raise SourceError(
                f"{src}: COCO index version {meta.get('version')} != {INDEX_VERSION}; delete it"
            )
        arrays = {}
        for name in _ARRAY_FIELDS:
            try:
                arrays[name] = np.load(src / f"{name}.npy", mmap_mode="r" if mmap else None)
            except (OSError, ValueError):
                raise SourceError(f"{src}: {name}.npy is missing or damaged; delete it") from None
        return cls(
            **arrays,
            categories={int(k): str(v) for k, v in meta["categories"]},
            problems=tuple((str(w), str(r)) for w, r in meta["problems"]),
            source=str(meta["source"]),
            content_hash=str(meta["content_hash"]),
        )


_ARRAY_FIELDS = tuple(
    f.name
    for f in fields(CocoIndex)
    if f.name not in ("categories", "problems", "source", "content_hash")
)


class CocoSource:
    """Images and instance masks of a COCO instances file, decoded one image per ``load``.

    Args:
        ann_file: local path or fsspec URL of the instances JSON.
        image_root: folder (path or URL) holding the ``file_name`` of every image.
        min_area_frac: smallest usable instance, as a fraction of the image area.
        max_area_frac: largest usable instance, as a fraction of the image area.
        min_side: smallest usable instance bounding-box side, in pixels.
        categories: usable category ids (``None`` = all).
        cache_dir: local folder for the memory-mapped index; strongly advised for large files
            and for clusters (a source without one pickles its whole index).
        strict: raise ``SourceError`` on the first malformed item instead of excluding it.
        name: prefix of the image keys and of messages.

    Raises:
        SourceError: the annotation file cannot be used (see ``CocoIndex.build``).
        ConfigError: a filter value is out of range or names unknown categories.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str],
        image_root: str | os.PathLike[str],
        *,
        min_area_frac: float = 0.0,
        max_area_frac: float = 1.0,
        min_side: int = 0,
        categories: Iterable[int] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        strict: bool = False,
        name: str = "coco",
    ) -> None:
        check_instance_filters(min_area_frac, max_area_frac, min_side)
        self.name = name
        self.ann_file = absolute(str(ann_file))
        self.image_root = absolute(str(image_root))
        self.min_area_frac = float(min_area_frac)
        self.max_area_frac = float(max_area_frac)
        self.min_side = int(min_side)
        self.categories = (
            None if categories is None else tuple(sorted({int(c) for c in categories}))
        )
        self.strict = bool(strict)
        self._cache_path: str | None = None
        if cache_dir is not None:
            self._cache_path = _cached_index_dir(self.ann_file, Path(cache_dir).absolute())
            self._index = CocoIndex.load(self._cache_path, mmap=True)
        else:
            self._index = CocoIndex.build(self.ann_file, strict=self.strict)
        if self.strict and self._index.problems:
            where, reason = self._index.problems[0]
            raise SourceError(f"{where}: {reason}")
        if self.categories is not None:
            unknown = sorted(set(self.categories) - set(self._index.categories))
            if unknown:
                raise ConfigError(
                    f"categories: ids {unknown} are not in {self._index.source} categories; "
                    "use ids from its 'categories' list"
                )
        self._usable: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_usable"] = None
        if self._cache_path is not None:
            state["_index"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._index is None:
            self._index = CocoIndex.load(self._cache_path, mmap=True)

    @property
    def index(self) -> CocoIndex:
        """The underlying array index (read-only when memory-mapped)."""
        return self._index

    @property
    def problems(self) -> tuple[tuple[str, str], ...]:
        """(where, reason) for every image or annotation excluded while indexing."""
        return self._index.problems

    def __len__(self) -> int:
        return len(self._index)

    def image_key(self, index: int) -> str:
        """``"<name>:<file stem>"``, e.g. ``"coco:000000000139"``."""
        stem = posixpath.splitext(posixpath.basename(self._index.file_name(index)))[0]
        return f"{self.name}:{stem}"

    def usable_mask(self) -> np.ndarray:
        """bool [M]: which indexed annotations pass the filters (crowd regions never do)."""
        if self._usable is None:
            idx = self._index
            image_area = idx.heights.astype(np.float64) * idx.widths.astype(np.float64)
            ok = ~np.asarray(idx.iscrowd, bool)
            ok &= keep_instances(
                idx.areas,
                idx.bboxes,
                image_area[idx.annotation_image()],
                min_area_frac=self.min_area_frac,
                max_area_frac=self.max_area_frac,
                min_side=self.min_side,
            )
            if self.categories is not None:
                ok &= np.isin(idx.category_ids, np.asarray(self.categories, np.int64))
            self._usable = ok
        return self._usable

    def instance_counts(self) -> np.ndarray:
        """int32 [N]: usable instances per image, from the index alone (nothing decoded)."""
        csum = np.concatenate([[0], np.cumsum(self.usable_mask(), dtype=np.int64)])
        offsets = np.asarray(self._index.ann_offsets)
        return (csum[offsets[1:]] - csum[offsets[:-1]]).astype(np.int32)

    def fingerprint(self) -> str:
        """Changes with the annotation bytes or the filters (not with file locations)."""
        return fingerprint_of(
            "coco",
            INDEX_VERSION,
            self._index.content_hash,
            self.min_area_frac,
            self.max_area_frac,
            self.min_side,
            self.categories,
        )

    def load(self, index: int) -> SourceImage:
        """Decode image ``index`` with its usable instances and its crowd regions as ``ignore``.

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the image file is missing, undecodable or not the size the JSON says.
        """
        i, bgr = self._read(index)
        idx = self._index
        h, w = bgr.shape[:2]
        start, stop = int(idx.ann_offsets[i]), int(idx.ann_offsets[i + 1])
        usable = self.usable_mask()[start:stop]
        crowd = np.asarray(idx.iscrowd[start:stop], bool)
        instances = []
        picked = [start + int(k) for k in np.flatnonzero(usable)]
        if picked:
            masks = mask_utils.decode([idx.rle(j, (h, w)) for j in picked])
            for k, j in enumerate(picked):
                instances.append(
                    Instance(
                        mask=np.ascontiguousarray(masks[:, :, k], dtype=bool),
                        category=int(idx.category_ids[j]),
                        ann_id=int(idx.ann_ids[j]),
                    )
                )
        ignore = None
        crowd_rles = [idx.rle(start + int(k), (h, w)) for k in np.flatnonzero(crowd)]
        if crowd_rles:
            merged = mask_utils.merge(crowd_rles, intersect=0)
            ignore = np.ascontiguousarray(mask_utils.decode(merged), dtype=bool)
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return SourceImage(
            key=self.image_key(i), image=image, instances=tuple(instances), ignore=ignore
        )

    def load_resized(self, index: int, size: tuple[int, int]) -> SourceImage:
        """``resize_source_image(self.load(index), size)``, without full-resolution masks.

        ``load`` decodes every instance at full resolution only for the resize to keep about
        one pixel in five (640x480 to 256x256). Here the RLEs of the image are decoded together into
        run ends and each mask is sampled at the nearest-neighbour grid inside its box, so the
        cost follows the output size; the image is resized before its BGR-to-RGB swap. The
        result is identical to the resize of ``load``.

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the image file is missing, undecodable or not the size the JSON says,
                or an RLE does not cover the image.
            ValueError: ``size`` is not two positive integers.
        """
        H, W = check_size(size)
        i, bgr = self._read(index)
        idx = self._index
        h, w = bgr.shape[:2]
        image = cv2.cvtColor(resize_rgb(bgr, (H, W)), cv2.COLOR_BGR2RGB)
        start, stop = int(idx.ann_offsets[i]), int(idx.ann_offsets[i + 1])
        usable = np.flatnonzero(self.usable_mask()[start:stop])
        crowd = np.flatnonzero(np.asarray(idx.iscrowd[start:stop], bool))
        wanted = np.concatenate([usable, crowd])
        if wanted.size == 0:
            return SourceImage(key=self.image_key(i), image=image)
        lo, hi = int(idx.rle_offsets[start]), int(idx.rle_offsets[stop])
        masks = sample_rles(
            np.asarray(idx.rles[lo:hi]),
            np.asarray(idx.rle_offsets[start : stop + 1], np.int64) - lo,
            idx.bboxes[start:stop],
            wanted,
            (h, w),
            (H, W),
            ann_ids=idx.ann_ids[start:stop],
            source=idx.source,
        )
        instances = []
        for k, a in enumerate(usable.tolist()):
            if masks[k].any():
                j = start + a
                instances.append(
                    Instance(
                        mask=masks[k],
                        category=int(idx.category_ids[j]),
                        ann_id=int(idx.ann_ids[j]),
                    )
                )
        ignore = np.any(masks[usable.size :], axis=0) if crowd.size else None
        if ignore is not None and not ignore.any():
            ignore = None
        return SourceImage(
            key=self.image_key(i), image=image, instances=tuple(instances), ignore=ignore
        )

    def _read(self, index: int) -> tuple[int, np.ndarray]:
        """The checked position and the decoded BGR pixels of image ``index``."""
        i = checked_index(self.name, index, len(self))
        idx = self._index
        url = join(self.image_root, idx.file_name(i))
        bgr = decode_bgr(read_bytes(url), url)
        h, w = int(idx.heights[i]), int(idx.widths[i])
        if bgr.shape[:2] != (h, w):
            raise SourceError(
                f"{url}: image is {bgr.shape[0]}x{bgr.shape[1]} but {idx.source} says "
                f"{h}x{w}; fix the file or its 'height'/'width'"
            )
        return i, bgr


def find_self_intersection(xy: np.ndarray) -> tuple[float, float] | None:
    """Where two non-adjacent edges of one closed polygon properly cross, or ``None``.

    Args:
        xy: [n, 2] vertex coordinates; the closing edge back to the first vertex is implied.

    Returns:
        The (x, y) of the first crossing found, or ``None``. See ``find_self_intersections``.
    """
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    hit, where = find_self_intersections(pts, np.array([len(pts)]))
    return (float(where[0, 0]), float(where[0, 1])) if hit[0] else None


def find_self_intersections(
    coords: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check many closed polygons for self-intersection at once.

    The pairwise edge test is vectorised over polygons of similar vertex count (padded into
    ``[B, m, m]`` blocks), so checking train2017's ~900k polygons costs a few hundred numpy
    calls rather than one per polygon. Touching edges (a vertex within 0.01 px of the other
    edge, the rounding of COCO coordinates) and collinear ones do not count as crossing;
    consecutive duplicate vertices are ignored; polygons with more than 2000 vertices are not
    checked (the test is quadratic).

    Args:
        coords: [V, 2] float64 vertices of all polygons, concatenated.
        lengths: [P] vertex count of each polygon (sums to V).

    Returns:
        ``(crosses, points)``: bool [P] and float64 [P, 2] (the first crossing, NaN if none).
    """
    lengths = np.asarray(lengths, np.int64)
    num = len(lengths)
    crosses = np.zeros(num, bool)
    points = np.full((num, 2), np.nan)
    if num == 0 or len(coords) == 0:
        return crosses, points
    owner = np.repeat(np.arange(num), lengths)
    starts = np.cumsum(lengths) - lengths
    prev = np.arange(len(coords)) - 1
    nonempty = lengths > 0
    prev[starts[nonempty]] = (starts + lengths - 1)[nonempty]
    keep = np.any(coords != coords[prev], axis=1)
    coords, owner = coords[keep], owner[keep]
    sizes = np.bincount(owner, minlength=num)
    starts = np.cumsum(sizes) - sizes
    todo = np.flatnonzero((sizes >= 4) & (sizes <= _MAX_CHECKED_VERTICES))
    padded = _padded_size(sizes[todo])
    for m in np.unique(padded):
        group = todo[padded == m]
        per_chunk = max(1, _PAIRS_PER_CHUNK // int(m * m))
        for c in range(0, len(group), per_chunk):
            ids = group[c : c + per_chunk]
            hit, where = _crossings_block(coords, starts[ids], sizes[ids], int(m))
            crosses[ids] = hit
            points[ids] = where
    return crosses, points


def _padded_size(n: np.ndarray) -> np.ndarray:
    """Round vertex counts up to a few block sizes (multiples of 8, then ~1.25x steps)."""
    steps = np.unique(
        np.concatenate(
            [np.arange(8, 65, 8), np.ceil(64 * 1.25 ** np.arange(1, 22) / 8) * 8]
        ).astype(np.int64)
    )
    return steps[np.searchsorted(steps, n)]


def _crossings_block(
    coords: np.ndarray, starts: np.ndarray, sizes: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise proper-crossing test for B polygons padded to ``m`` edges.

    ``dist[b, i, j]`` is the signed distance of a vertex of edge ``j`` from the line of edge
    ``i``, written as an outer product. Edges ``i`` and ``j`` cross when each straddles the
    other's line by more than the tolerance; adjacent edges share a vertex at distance 0 and so
    never count, and padded edges have a zero direction so they never straddle anything.
    """
    idx = np.arange(m)
    valid = idx[None] < sizes[:, None]
    local = np.where(valid, idx[None], 0)
    a = coords[starts[:, None] + local]
    b = coords[starts[:, None] + (local + 1) % sizes[:, None]]
    d = b - a
    norm = np.hypot(d[..., 0], d[..., 1])
    inv = np.where(valid & (norm > 0), 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
    ux, uy = (d[..., 0] * inv)[:, :, None], (d[..., 1] * inv)[:, :, None]
    offset = ux * a[:, :, None, 1] - uy * a[:, :, None, 0]
    dist_a = ux * a[:, None, :, 1] - uy * a[:, None, :, 0] - offset
    dist_b = ux * b[:, None, :, 1] - uy * b[:, None, :, 0] - offset
    tol = _TOUCH_TOLERANCE
    straddle = ((dist_a > tol) & (dist_b < -tol)) | ((dist_a < -tol) & (dist_b > tol))
    hit = straddle & straddle.transpose(0, 2, 1)
    flat = hit.reshape(len(sizes), -1)
    found = flat.any(axis=1)
    where = np.full((len(sizes), 2), np.nan)
    rows = np.flatnonzero(found)
    if len(rows):
        r, c = np.divmod(flat[rows].argmax(axis=1), m)
        pi, di, pj, dj = a[rows, r], d[rows, r], a[rows, c], d[rows, c]
        t = _cross(pj - pi, dj) / _cross(di, dj)
        where[rows] = pi + t[:, None] * di
    return found, where


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _check_is_coco(data: object, url: str) -> None:
    if not isinstance(data, dict):
        raise SourceError(f"{url}: not a COCO instances file (top level is not an object)")
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)
    ]
    if missing:
        raise SourceError(
            f"{url}: not a COCO instances file (no {', '.join(repr(k) for k in missing)} list); "
            "pass an instances_*.json"
        )
    anns = data["annotations"]
    if anns and isinstance(anns[0], dict) and "segments_info" in anns[0]:
        raise SourceError(f"{url}: this is a COCO panoptic file; pass an instances_*.json")


@dataclass(slots=True)
class _Pending:
    """One located annotation on its way into the index."""

    aid: int
    ann: dict[str, Any]
    reason: str | None = None
    parts: tuple[int, int] = (0, 0)
    rle: dict[str, Any] | None = None


class _IndexBuilder:
    """Validates and encodes annotations into flat arrays; collects or raises problems.

    Three passes keep the per-annotation Python work small: gather polygon coordinates into
    one flat array (structural checks), test all polygons for self-intersection at once, then
    rasterise to RLE image by image with batched pycocotools calls.
    """

    def __init__(self, label: str, strict: bool) -> None:
        self.label = label
        self.strict = strict
        self.problems: list[tuple[str, str]] = []
        self.flat: list[Any] = []
        self.part_sizes: list[int] = []
        self.part_names: list[str] = []
        self.part_ends: list[int] = []

    def problem(self, where: str, reason: str) -> None:
        where = f"{self.label}: {where}"
        if self.strict:
            raise SourceError(f"{where}: {reason}")
        self.problems.append((where, reason))

    def run(self, data: dict[str, Any], content_hash: str) -> CocoIndex:
        categories = self._categories(data["categories"])
        images = self._images(data["images"])
        position = {iid: p for p, (_, iid, _, _) in enumerate(images)}
        per_image: list[list[_Pending]] = [[] for _ in images]
        seen: set[int] = set()
        for k, ann in enumerate(data["annotations"]):
            found = self._locate(k, ann, position, categories, seen)
            if found is not None:
                per_image[found[0]].append(_Pending(found[1], ann))
        for (file_name, _, h, w), pending in zip(images, per_image, strict=True):
            pending.sort(key=lambda p: p.aid)
            for p in pending:
                self._gather(p, file_name, h, w)
        part_reasons = self._check_parts()

        ann_ids, cat_ids, crowd, bboxes, areas, rle_offsets = [], [], [], [], [], [0]
        ann_offsets, names, name_offsets = [0], bytearray(), [0]
        blob = bytearray()
        for (file_name, _, h, w), pending in zip(images, per_image, strict=True):
            names += file_name.encode()
            name_offsets.append(len(names))
            for p in pending:
                if p.reason is None and p.parts[1] > p.parts[0]:
                    p.reason = next(
                        (part_reasons[q] for q in range(*p.parts) if part_reasons[q]), None
                    )
            kept = [p for p in pending if p.reason is None]
            self._rasterise(kept, h, w)
            for p in pending:
                if p.reason is not None:
                    self.problem(f"annotation {p.aid}", f"{p.reason}; {_FIX}")
            kept = [p for p in kept if p.reason is None]
            if kept:
                rles = [p.rle for p in kept]
                boxes = mask_utils.toBbox(rles).reshape(-1, 4)
                for p, box, area in zip(kept, boxes, mask_utils.area(rles), strict=True):
                    ann_ids.append(p.aid)
                    cat_ids.append(int(p.ann["category_id"]))
                    crowd.append(bool(p.ann.get("iscrowd", 0)))
                    bboxes.append(box)
                    areas.append(int(area))
                    blob += p.rle["counts"]
                    rle_offsets.append(len(blob))
            ann_offsets.append(len(ann_ids))

        return CocoIndex(
            image_ids=np.array([iid for _, iid, _, _ in images], np.int64),
            heights=np.array([h for _, _, h, _ in images], np.int32),
            widths=np.array([w for _, _, _, w in images], np.int32),
            name_offsets=np.array(name_offsets, np.int64),
            names=np.frombuffer(bytes(names), np.uint8).copy(),
            ann_offsets=np.array(ann_offsets, np.int64),
            ann_ids=np.array(ann_ids, np.int64),
            category_ids=np.array(cat_ids, np.int32),
            iscrowd=np.array(crowd, bool),
            bboxes=np.array(bboxes, np.float32).reshape(-1, 4),
            areas=np.array(areas, np.int64),
            rle_offsets=np.array(rle_offsets, np.int64),
            rles=np.frombuffer(bytes(blob), np.uint8).copy(),
            categories=categories,
            problems=tuple(self.problems),
            source=self.label,
            content_hash=content_hash,
        )

    def _categories(self, entries: list[Any]) -> dict[int, str]:
        out: dict[int, str] = {}
        for k, cat in enumerate(entries):
            cid = cat.get("id") if isinstance(cat, dict) else None
            if not _is_int(cid):
                self.problem(f"categories[{k}]", f"missing or non-integer 'id'; {_FIX}")
                continue
            out[int(cid)] = str(cat.get("name", ""))
        return out

    def _images(self, entries: list[Any]) -> list[tuple[str, int, int, int]]:
        out: dict[int, tuple[str, int, int, int]] = {}
        by_name: dict[str, int] = {}
        for k, im in enumerate(entries):
            vals = [im.get(f) for f in ("id", "height", "width")] if isinstance(im, dict) else []
            file_name = im.get("file_name") if isinstance(im, dict) else None
            if (
                len(vals) != 3
                or not all(_is_int(v) for v in vals)
                or not isinstance(file_name, str)
            ):
                self.problem(
                    f"images[{k}]",
                    f"needs integer 'id', 'height', 'width' and a 'file_name'; {_FIX}",
                )
                continue
            iid, h, w = (int(v) for v in vals)
            if h <= 0 or w <= 0:
                self.problem(f"image {iid}", f"size {h}x{w} is not positive; {_FIX}")
            elif iid in out:
                self.problem(f"image {iid}", f"id is used by more than one image; {_FIX}")
            elif file_name in by_name:
                self.problem(
                    f"image {iid}",
                    f"file_name {file_name!r} is also image {by_name[file_name]}; {_FIX}",
                )
            else:
                out[iid] = (file_name, iid, h, w)
                by_name[file_name] = iid
        return sorted(out.values())

    def _locate(
        self,
        k: int,
        ann: Any,
        position: dict[int, int],
        categories: dict[int, str],
        seen: set[int],
    ) -> tuple[int, int] | None:
        aid = ann.get("id") if isinstance(ann, dict) else None
        if not _is_int(aid):
            self.problem(f"annotations[{k}]", f"missing or non-integer 'id'; {_FIX}")
            return None
        aid = int(aid)
        where = f"annotation {aid}"
        if aid in seen:
            self.problem(where, f"id is used by more than one annotation; {_FIX}")
            return None
        seen.add(aid)
        image_id = ann.get("image_id")
        pos = position.get(int(image_id)) if _is_int(image_id) else None
        if pos is None:
            self.problem(where, f"image_id {image_id!r} is not in images; {_FIX}")
            return None
        cid = ann.get("category_id")
        if not _is_int(cid) or int(cid) not in categories:
            self.problem(where, f"category_id {cid!r} is not in categories; {_FIX}")
            return None
        if ann.get("iscrowd", 0) not in (0, 1):
            self.problem(where, f"iscrowd is {ann.get('iscrowd')!r} (need 0 or 1); {_FIX}")
            return None
        return pos, aid

    def _gather(self, p: _Pending, file_name: str, h: int, w: int) -> None:
        """Structural checks; polygon coordinates go to the flat buffer, RLEs are converted."""
        seg = p.ann.get("segmentation")
        if isinstance(seg, dict):
            p.reason, p.rle = _convert_rle(seg, file_name, h, w)
            return
        if not isinstance(seg, list):
            p.reason = "segmentation is missing (need polygons or an RLE)"
            return
        if not seg:
            p.reason = "polygon list is empty"
            return
        for i, part in enumerate(seg):
            name = "polygon" if len(seg) == 1 else f"polygon {i + 1} of {len(seg)}"
            if not isinstance(part, list):
                p.reason = f"{name} is not a list of coordinates"
                return
            if len(part) < 6 or len(part) % 2:
                p.reason = f"{name} has {len(part)} coordinates (need >= 6 and even)"
                return
        first = len(self.part_sizes)
        for i, part in enumerate(seg):
            self.flat.extend(part)
            self.part_sizes.append(len(part))
            self.part_names.append("polygon" if len(seg) == 1 else f"polygon {i + 1} of {len(seg)}")
        p.parts = (first, len(self.part_sizes))

    def _check_parts(self) -> list[str | None]:
        """Numeric, finite and simple-polygon checks over every gathered part at once."""
        sizes = np.array(self.part_sizes, np.int64)
        self.part_ends = np.cumsum(sizes).tolist()
        try:
            coords = np.array(self.flat, np.float64)
        except (TypeError, ValueError):
            coords = (
                np.concatenate(
                    [
                        _as_coordinates(self.flat[s - n : s], n)
                        for s, n in zip(np.cumsum(sizes), sizes, strict=True)
                    ]
                )
                if len(sizes)
                else np.zeros(0)
            )
        coords = coords.reshape(-1, 2)
        finite = np.isfinite(coords).all(axis=1)
        owner = np.repeat(np.arange(len(sizes)), sizes // 2)
        bad = np.zeros(len(sizes), bool)
        np.logical_or.at(bad, owner[~finite], True)
        coords = np.where(finite[:, None], coords, 0.0)
        crosses, points = find_self_intersections(coords, sizes // 2)
        reasons: list[str | None] = [None] * len(sizes)
        for q in np.flatnonzero(bad):
            reasons[q] = f"{self.part_names[q]} has non-numeric or non-finite coordinates"
        for q in np.flatnonzero(crosses & ~bad):
            x, y = points[q]
            reasons[q] = f"{self.part_names[q]} self-intersects near ({x:.1f}, {y:.1f})"
        return reasons

    def _rasterise(self, kept: list[_Pending], h: int, w: int) -> None:
        """Polygon parts of one image to RLE in one pycocotools call; merge multi-part ones."""
        polys = [p for p in kept if p.rle is None]
        if polys:
            ranges = [
                (self.part_ends[q], self.part_sizes[q]) for p in polys for q in range(*p.parts)
            ]
            rles = mask_utils.frPyObjects([self.flat[e - n : e] for e, n in ranges], h, w)
            k = 0
            for p in polys:
                n = p.parts[1] - p.parts[0]
                p.rle = rles[k] if n == 1 else mask_utils.merge(rles[k : k + n])
                k += n
        if kept:
            for p, area in zip(kept, mask_utils.area([p.rle for p in kept]), strict=True):
                if not 0 < area <= h * w:
                    p.reason = f"mask area is {int(area)} pixels (need 1 to {h * w})"


def _as_coordinates(part: list[Any], n: int) -> np.ndarray:
    """One polygon's coordinates as float64, NaN where they are not plain numbers."""
    try:
        arr = np.asarray(part, np.float64)
        if arr.shape == (n,):
            return arr
    except (TypeError, ValueError):
        pass
    return np.full(n, np.nan)


def _convert_rle(
    seg: dict[str, Any], file_name: str, h: int, w: int
) -> tuple[str | None, dict[str, Any] | None]:
    """Validate an RLE segmentation and return ``(reason, compressed RLE)``."""
    size = seg.get("size")
    counts = seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return "RLE has no valid 'size' [height, width]", None
    if [int(v) for v in size] != [h, w]:
        return f"RLE size {list(size)} does not match image {file_name} size [{h}, {w}]", None
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "uncompressed RLE counts must be integers >= 0", None
        total = sum(int(c) for c in counts)
        if total != h * w:
            return f"uncompressed RLE counts sum to {total} (need {h}*{w} = {h * w})", None
        return None, mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii", "replace")
    if isinstance(counts, bytes) and counts:
        return None, {"size": [h, w], "counts": counts}
    return "RLE 'counts' must be a string or a list of integers", None


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _json_key(ann_file: str) -> str:
    """A cheap identity of the JSON: a hash of its first MiB plus its size and mtime.

    Falls back to hashing the whole file when the filesystem reports no size or mtime.
    """
    try:
        fs, path = fsspec.core.url_to_fs(ann_file)
        info = fs.info(path)
    except FileNotFoundError:
        raise SourceError(f"{ann_file}: file not found; check the path") from None
    mtime = next(
        (info[k] for k in ("mtime", "LastModified", "last_modified", "created") if info.get(k)),
        None,
    )
    h = hashlib.sha256(f"coco-index-v{INDEX_VERSION}\0".encode())
    with fs.open(path, "rb") as f:
        h.update(f.read(_PREFIX_BYTES))
        if info.get("size") is None or mtime is None:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        else:
            h.update(f"\0{info['size']}\0{mtime}".encode())
    return h.hexdigest()


def _cached_index_dir(ann_file: str, cache_dir: Path) -> str:
    """Return the cache folder for ``ann_file``, building and publishing it atomically if absent."""
    target = cache_dir / _json_key(ann_file)[:32]
    if (target / "meta.json").is_file():
        return str(target)
    index = CocoIndex.build(ann_file)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        index.save(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
