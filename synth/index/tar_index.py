"""The index of one tar of SA-1B-format pairs: where every image and JSON is, and every mask's
box, area and scores. No mask is decoded, and no compressed RLE is copied.

A tar holds ``<stem>.jpg`` and ``<stem>.json`` pairs; the JSON has an ``image`` object
(``width``, ``height``, ``file_name``) and an ``annotations`` list whose entries hold a
compressed COCO RLE (``segmentation``: ``size``, ``counts``), ``bbox``, ``area``,
``predicted_iou`` and ``stability_score``. Building the index reads the tar once (the JSONs in
full, the images not at all) and keeps, per image, the byte ranges of both members and its
size, and per mask its position in ``annotations``, its box and area measured on the RLE itself
(as the COCO index does, so filters agree with the masks ``load`` returns) and both scores:
24 bytes per mask, about a fifth of a percent of SA-1B's JSON bytes.

Nothing a tar holds is fatal: a cut-short tar keeps its complete members, a JSON without its
image, an image without its JSON, an unparsable JSON and a malformed or mis-sized RLE are left
out and listed as ``problems`` ``(where, reason)``, as the COCO index lists its rejections.

The file is one blob: ``SYNTHTIX``, a version, a JSON header (tar, key, problems, and the dtype,
shape and offset of every array) and the arrays, 64-byte aligned, so a local index is
memory-mapped and a worker pages in only the images it loads.
"""

from __future__ import annotations

import json
import math
import posixpath
import struct
from dataclasses import dataclass, fields
from typing import Any, BinaryIO

import fsspec
import numpy as np

from synth.errors import SourceError
from synth.index.cache import INDEX_VERSION, TarRef
from synth.index.tar_members import Member, list_members
from synth.sources._io import IMAGE_EXTS

_MAGIC = b"SYNTHTIX"
_HEAD = struct.Struct("<8sII")  # magic, version, header length
_ALIGN = 64
_FIX = "fix or drop it"
#: JPEG's own limit; boxes are stored as uint16.
_MAX_SIDE = 65535
#: Sequential reads of a remote tar: large blocks, read ahead.
_BLOCK = 16 << 20


@dataclass(frozen=True, eq=False)
class TarIndex:
    """The compact, array-only index of one tar.

    Images are sorted by member path so that position ``i`` does not depend on the order the
    tar was written in; the masks of an image are contiguous, in ``annotations`` order.

    Attributes:
        tar: the tar's base name (messages, problem lists).
        key: the cache key of the tar version this index was built from.
        names: uint8 blob of the image members' paths without extension.
        name_offsets: int64 [N+1] slices of ``names``.
        jpg_offsets, jpg_sizes: int64 [N] byte range of each image member in the tar.
        json_offsets, json_sizes: int64 [N] byte range of each JSON member in the tar.
        heights, widths: int32 [N] image size as its JSON gives it.
        mask_offsets: int64 [N+1] slices of the mask arrays per image.
        positions: uint32 [M] each mask's position in its JSON's ``annotations``.
        bboxes: uint16 [M, 4] mask bounding boxes (x, y, w, h) in pixels.
        areas: uint32 [M] mask areas in pixels.
        predicted_iou, stability_score: float32 [M] SAM's two quality scores.
        problems: (where, reason) for every member or annotation left out.
    """

    tar: str
    key: str
    names: np.ndarray
    name_offsets: np.ndarray
    jpg_offsets: np.ndarray
    jpg_sizes: np.ndarray
    json_offsets: np.ndarray
    json_sizes: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    mask_offsets: np.ndarray
    positions: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    problems: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.heights)

    @property
    def num_masks(self) -> int:
        return len(self.positions)

    def stem(self, i: int) -> str:
        """Image ``i``'s member path without extension, e.g. ``sa_223750``."""
        return bytes(self.names[self.name_offsets[i] : self.name_offsets[i + 1]]).decode()

    def masks(self, i: int) -> slice:
        """The slice of the mask arrays that belongs to image ``i``."""
        return slice(int(self.mask_offsets[i]), int(self.mask_offsets[i + 1]))

    def mask_image(self) -> np.ndarray:
        """int64 [M]: the image position of every mask (for vectorised filters)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.mask_offsets))

    def to_bytes(self) -> bytes:
        """The index as one file (see the module docstring)."""
        layout, parts, pos = {}, [], 0
        for name in _ARRAYS:
            arr = np.ascontiguousarray(getattr(self, name))
            layout[name] = [arr.dtype.str, list(arr.shape), pos]
            parts.append(arr.tobytes())
            pos += _aligned(arr.nbytes)
        header = json.dumps(
            {
                "tar": self.tar,
                "key": self.key,
                "problems": [list(p) for p in self.problems],
                "arrays": layout,
            }
        ).encode()
        head = _HEAD.pack(_MAGIC, INDEX_VERSION, len(header)) + header
        out = bytearray(head + bytes(_aligned(len(head)) - len(head)))
        for blob in parts:
            out += blob + bytes(_aligned(len(blob)) - len(blob))
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf: np.ndarray, where: str) -> TarIndex:
        """Read an index written by ``to_bytes`` from a uint8 array (memory-mapped or not).

        Raises:
            SourceError: not an index of this version, or cut short (names ``where``).
        """
        damaged = SourceError(f"{where}: damaged or foreign tar index; delete it to rebuild")
        if buf.size < _HEAD.size:
            raise damaged
        magic, version, n = _HEAD.unpack(bytes(buf[: _HEAD.size]))
        if magic != _MAGIC:
            raise damaged
        if version != INDEX_VERSION:
            raise SourceError(f"{where}: tar index version {version} != {INDEX_VERSION}; delete it")
        try:
            header = json.loads(bytes(buf[_HEAD.size : _HEAD.size + n]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise damaged from None
        start = _aligned(_HEAD.size + n)
        arrays = {}
        for name in _ARRAYS:
            dtype, shape, off = header["arrays"][name]
            dtype = np.dtype(dtype)
            nbytes = dtype.itemsize * math.prod(shape)
            lo = start + off
            if lo + nbytes > buf.size:
                raise damaged
            arrays[name] = buf[lo : lo + nbytes].view(dtype).reshape(shape)
        return cls(
            tar=str(header["tar"]),
            key=str(header["key"]),
            problems=tuple((str(w), str(r)) for w, r in header["problems"]),
            **arrays,
        )


_ARRAYS = tuple(f.name for f in fields(TarIndex) if f.name not in ("tar", "key", "problems"))


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def build_index(ref: TarRef) -> TarIndex:
    """Read the tar ``ref`` once and index its pairs (see the module docstring).

    Raises:
        SourceError: the tar cannot be opened or read (missing, permissions, network). Damage
            inside it is listed in ``problems`` instead.
    """
    builder = _Builder(ref.name)
    try:
        fs, path = fsspec.core.url_to_fs(ref.url)
        size = int(fs.size(path))
        with fs.open(path, "rb", block_size=_BLOCK, cache_type="readahead") as f:
            listing = list_members(f, size, builder.read_json)
    except FileNotFoundError:
        raise SourceError(f"{ref.url}: tar not found; check the path") from None
    except OSError as exc:
        raise SourceError(f"{ref.url}: cannot read ({exc}); check the path and access") from None
    if listing.damage is not None:
        builder.problem("", f"{listing.damage}; its complete members are used, fetch it again")
    return builder.finish(ref, listing.members)


@dataclass
class _Parsed:
    """The usable masks of one JSON, as small arrays."""

    member: Member
    height: int
    width: int
    positions: np.ndarray
    bboxes: np.ndarray
    areas: np.ndarray
    ious: np.ndarray
    stabilities: np.ndarray


class _Builder:
    """Collects parsed JSONs while the tar is walked, then pairs them with their images."""

    def __init__(self, tar: str) -> None:
        self.tar = tar
        self.problems: list[tuple[str, str]] = []
        self.jsons: dict[str, _Parsed | None] = {}

    def problem(self, where: str, reason: str) -> None:
        self.problems.append((f"{self.tar}: {where}" if where else self.tar, reason))

    def read_json(self, member: Member, reader: BinaryIO) -> None:
        stem, ext = posixpath.splitext(member.name)
        if ext.lower() != ".json":
            return
        if stem in self.jsons:
            self.problem(member.name, "appears twice in the tar; the last copy is used")
        self.jsons[stem] = self._parse(member, reader.read())

    def _parse(self, member: Member, raw: bytes) -> _Parsed | None:
        where = member.name
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self.problem(where, f"not valid JSON ({exc}); {_FIX}")
            return None
        image = data.get("image") if isinstance(data, dict) else None
        h = image.get("height") if isinstance(image, dict) else None
        w = image.get("width") if isinstance(image, dict) else None
        if not (_is_int(h) and _is_int(w) and 0 < h <= _MAX_SIDE and 0 < w <= _MAX_SIDE):
            self.problem(
                where, f"needs 'image' with integer 'width' and 'height' in 1..{_MAX_SIDE}; {_FIX}"
            )
            return None
        anns = data.get("annotations")
        if not isinstance(anns, list):
            self.problem(where, f"needs an 'annotations' list; {_FIX}")
            return None
        kept, labels, rles, ious, stabs = [], [], [], [], []
        for k, ann in enumerate(anns):
            reason, rle, scores = _check_annotation(ann, h, w)
            aid = ann.get("id") if isinstance(ann, dict) else None
            label = f"{where}: " + (f"annotation {aid}" if _is_int(aid) else f"annotations[{k}]")
            if reason is not None:
                self.problem(label, f"{reason}; {_FIX}")
                continue
            kept.append(k)
            labels.append(label)
            rles.append(rle)
            ious.append(scores[0])
            stabs.append(scores[1])
        malformed = _malformed(rles)
        for k in np.flatnonzero(malformed):
            self.problem(labels[k], f"RLE 'counts' is not a compressed COCO RLE string; {_FIX}")
        areas, boxes = _measure([r for r, bad in zip(rles, malformed, strict=True) if not bad])
        areas = _spread(areas, ~malformed)
        boxes = _spread(boxes, ~malformed)
        for k in np.flatnonzero((areas == 0) & ~malformed):
            self.problem(labels[k], f"mask is empty; {_FIX}")
        ok = areas > 0
        return _Parsed(
            member=member,
            height=int(h),
            width=int(w),
            positions=np.asarray(kept, np.uint32)[ok],
            bboxes=boxes[ok],
            areas=areas[ok],
            ious=np.asarray(ious, np.float32)[ok],
            stabilities=np.asarray(stabs, np.float32)[ok],
        )

    def finish(self, ref: TarRef, members: tuple[Member, ...]) -> TarIndex:
        images: dict[str, Member] = {}
        for m in members:
            stem, ext = posixpath.splitext(m.name)
            if ext.lower() == ".json":
                continue
            if ext.lower() not in IMAGE_EXTS:
                self.problem(m.name, "is neither an image nor an image's JSON; it is not used")
            elif stem in images:
                self.problem(m.name, "a second image with this stem; the last one is used")
                images[stem] = m
            else:
                images[stem] = m
        for stem in sorted(set(self.jsons) - set(images)):
            self.problem(f"{stem}.json", f"has no image ({stem}.jpg) in the tar; add it or drop it")
        for stem in sorted(set(images) - set(self.jsons)):
            self.problem(
                images[stem].name, f"has no JSON ({stem}.json) in the tar; add it or drop it"
            )
        pairs = [(s, images[s], self.jsons[s]) for s in sorted(set(images) & set(self.jsons))]
        pairs = [(s, m, p) for s, m, p in pairs if p is not None]
        names = [s.encode() for s, _, _ in pairs]
        parsed = [p for _, _, p in pairs]
        counts = [len(p.positions) for p in parsed]

        def cat(attr: str, dtype: Any, tail: tuple[int, ...] = ()) -> np.ndarray:
            parts = [getattr(p, attr) for p in parsed]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *tail), dtype)

        return TarIndex(
            tar=ref.name,
            key=ref.key,
            names=np.frombuffer(b"".join(names), np.uint8).copy(),
            name_offsets=np.concatenate([[0], np.cumsum([len(n) for n in names])]).astype(np.int64),
            jpg_offsets=np.array([m.offset for _, m, _ in pairs], np.int64),
            jpg_sizes=np.array([m.size for _, m, _ in pairs], np.int64),
            json_offsets=np.array([p.member.offset for p in parsed], np.int64),
            json_sizes=np.array([p.member.size for p in parsed], np.int64),
            heights=np.array([p.height for p in parsed], np.int32),
            widths=np.array([p.width for p in parsed], np.int32),
            mask_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            positions=cat("positions", np.uint32),
            bboxes=cat("bboxes", np.uint16, (4,)),
            areas=cat("areas", np.uint32),
            predicted_iou=cat("ious", np.float32),
            stability_score=cat("stabilities", np.float32),
            problems=tuple(self.problems),
        )


def _check_annotation(
    ann: Any, h: int, w: int
) -> tuple[str | None, dict[str, Any] | None, tuple[float, float]]:
    """``(reason, compressed RLE, (predicted_iou, stability_score))`` of one annotation."""
    if not isinstance(ann, dict):
        return "is not an object", None, (0.0, 0.0)
    seg = ann.get("segmentation")
    if not isinstance(seg, dict):
        return "segmentation is missing (need a compressed RLE)", None, (0.0, 0.0)
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return "RLE has no valid 'size' [height, width]", None, (0.0, 0.0)
    if [int(v) for v in size] != [h, w]:
        return f"RLE size {list(size)} does not match the image's [{h}, {w}]", None, (0.0, 0.0)
    if not isinstance(counts, str) or not counts:
        return "RLE 'counts' must be a non-empty compressed string", None, (0.0, 0.0)
    scores = []
    for field in ("predicted_iou", "stability_score"):
        v = ann.get(field)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return f"'{field}' is missing or not a finite number", None, (0.0, 0.0)
        scores.append(float(v))
    rle = {"size": [h, w], "counts": counts.encode("ascii", "replace")}
    return None, rle, (scores[0], scores[1])


def _malformed(rles: list[dict[str, Any]]) -> np.ndarray:
    """bool per RLE: counts outside COCO's alphabet ('0'..'o') or ending mid-number.

    Checked once here, for a whole image at a time, so that decoding at load time never meets
    a string that runs into the next one.
    """
    if not rles:
        return np.zeros(0, bool)
    lengths = np.array([len(r["counts"]) for r in rles], np.int64)
    chars = np.frombuffer(b"".join(r["counts"] for r in rles), np.uint8)
    ends = np.cumsum(lengths)
    outside = ((chars < 48) | (chars > 111)).astype(np.int64)
    bad = np.add.reduceat(outside, ends - lengths) > 0
    return bad | (((chars[ends - 1].astype(np.int64) - 48) & 0x20) != 0)


def _spread(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``values`` placed at the True positions of ``where``, zeros elsewhere."""
    out = np.zeros((where.size, *values.shape[1:]), values.dtype)
    out[where] = values
    return out


def _measure(rles: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Areas (uint32) and boxes (uint16 [k, 4]) measured on compressed RLEs, without decoding."""
    if not rles:
        return np.zeros(0, np.uint32), np.zeros((0, 4), np.uint16)
    from pycocotools import mask as mask_utils

    areas = np.asarray(mask_utils.area(rles), np.int64)
    boxes = np.asarray(mask_utils.toBbox(rles), np.float64).reshape(-1, 4)
    return areas.clip(0).astype(np.uint32), boxes.round().clip(0, _MAX_SIDE).astype(np.uint16)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
