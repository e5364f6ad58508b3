"""SA-1B-format tars as an image source: pixels and masks read from the tars by byte offset.

SA-1B ships about 1,000 tars of about 11k ``<stem>.jpg`` + ``<stem>.json`` pairs each, with
about 100 class-agnostic masks per image as compressed COCO RLE. Nothing is extracted: every
tar gets a compact index in ``cache_dir`` (``synth.index``; built by one cluster task per tar
during ``synth build``), and ``load`` reads one image's JPEG and JSON by byte range, from a
local disk or any fsspec filesystem (``s3://...``).

What a process holds is per tar, not per image: the tar list, each tar's image and eligible
counts, and the indexes of the last few tars it loaded from (a least-recently-used set of
``_OPEN_TARS``). Sampling asks which images hold usable masks through ``eligible_items`` and
walks the tars one at a time through ``group_sizes`` (``synth.sample``), so a shard loads the
indexes of the few tars it draws from.
"""

from __future__ import annotations

import json
import posixpath
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import cv2
import fsspec
import numpy as np
from pycocotools import mask as mask_utils

from synth.errors import SourceError
from synth.index.cache import exists, index_url
from synth.index.groups import GroupedEligible
from synth.index.select import MaskFilter
from synth.index.tar_index import TarIndex
from synth.index.tarset import TarSet, index_tar, load_index
from synth.sources._io import checked_index, decode_bgr, fingerprint_of
from synth.sources.base import Instance, SourceImage
from synth.sources.resize import check_size, resize_rgb
from synth.sources.rle import check_cover, rle_run_ends, sample_rles

#: Tar indexes a process keeps open; a shard's pool spans one or two tars.
_OPEN_TARS = 8


class Sa1bSource:
    """Images and SAM masks of SA-1B-format tars (see the module docstring).

    Args:
        tars: a tar, a glob (``/data/sa1b/sa_*.tar``, ``s3://bucket/sa1b/*.tar``) or a list of
            either; tars are used in URL order.
        cache_dir: folder or fsspec URL for the per-tar indexes; every worker must see it.
        min_area_frac, max_area_frac: usable mask area, as a fraction of the image area.
        min_side: smallest usable mask bounding-box side, in pixels.
        min_predicted_iou, min_stability_score: smallest usable SAM scores.
        max_masks: masks kept per image, highest ``predicted_iou`` first
            (``synth.index.select``).
        strict: raise ``SourceError`` if any tar had a problem instead of listing it.
        name: prefix of the image keys and of messages.

    Raises:
        ConfigError: a filter value out of range, or ``tars`` not a string or list.
        SourceError: a named tar is missing, a glob matches nothing, a tar cannot be read, or
            (with ``strict``) a tar holds a problem.
    """

    def __init__(
        self,
        tars: str | Sequence[str],
        cache_dir: str,
        *,
        min_area_frac: float = 0.0,
        max_area_frac: float = 1.0,
        min_side: int = 0,
        min_predicted_iou: float = 0.0,
        min_stability_score: float = 0.0,
        max_masks: int = 32,
        strict: bool = False,
        name: str = "sa1b",
    ) -> None:
        self.name = name
        self.strict = bool(strict)
        self.filters = MaskFilter(
            min_area_frac,
            max_area_frac,
            min_side,
            min_predicted_iou,
            min_stability_score,
            max_masks,
        )
        self._set = TarSet.resolve(tars, str(cache_dir), self.filters)
        counts = self._set.counts()
        self._starts = np.concatenate([[0], np.cumsum([c.images for c in counts])]).astype(np.int64)
        self._eligible_counts = np.array([c.eligible for c in counts], np.int64)
        self.problems: tuple[tuple[str, str], ...] = tuple(p for c in counts for p in c.problems)
        if self.strict and self.problems:
            where, reason = self.problems[0]
            raise SourceError(f"{where}: {reason}")
        self._open: OrderedDict[int, tuple[TarIndex, np.ndarray]] = OrderedDict()

    @classmethod
    def index_plan(
        cls,
        tars: str | Sequence[str],
        cache_dir: str,
        *,
        strict: bool = False,
        name: str = "sa1b",
        **filters: Any,
    ) -> TarSet | None:
        """The tars to index before this source opens with one read (None: none left).

        ``synth build`` runs them as tasks on its cluster (``synth.index.cluster``); ``strict``
        and ``name`` shape the source, not its index.
        """
        del strict, name
        tar_set = TarSet.resolve(tars, str(cache_dir), MaskFilter(**filters))
        return None if tar_set.has_summary() else tar_set

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def tar_set(self) -> TarSet:
        """The tars, their stamps, the cache and the filters."""
        return self._set

    def index_record(self) -> dict[str, Any]:
        """What a store records about this source's indexes (provenance)."""
        return {
            "kind": "tar-index",
            "cache_dir": self._set.cache_dir,
            "summary": self._set.summary_url,
            "tars": [[r.name, r.key] for r in self._set.refs],
        }

    def image_key(self, index: int) -> str:
        """``"<name>:<stem>"``, e.g. ``"sa1b:sa_223750"``."""
        t, j, (idx, _) = self._where(index)
        return f"{self.name}:{posixpath.basename(idx.stem(j))}"

    def group_sizes(self) -> np.ndarray:
        """int64 [T]: images per tar, in order; sampling walks one tar at a time."""
        return np.diff(self._starts)

    def eligible_items(self) -> GroupedEligible:
        """The images with a usable mask, known per tar without loading any index."""
        return GroupedEligible(self._starts, self._eligible_counts, self._eligible_of)

    def instance_counts(self) -> np.ndarray:
        """int32 [N]: usable masks per image. Loads every tar's index in turn: for tests and
        small sets; sampling uses ``eligible_items``."""
        parts = [self.filters.counts(self._index(t)[0]) for t in range(len(self._set.refs))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def fingerprint(self) -> str:
        """Changes with any tar's name, size or stamp, their order, or the filters."""
        return fingerprint_of("sa1b", self._set.fingerprint)

    def load(self, index: int) -> SourceImage:
        """Decode image ``index`` with its usable masks at full resolution.

        Raises:
            IndexError: ``index`` is out of range.
            SourceError: the image or JSON is unreadable, undecodable, or disagrees with the
                index (the tar changed since it was indexed).
        """
        t, j, (idx, _) = self._where(index)
        bgr = self._image(t, j, idx)
        picked = self.filters.picked(idx, j)
        rles, ids = self._rles(t, j, idx, picked)
        instances = []
        if rles:
            _check_cover(rles, ids, bgr.shape[:2], self._member(t, idx, j, "json"))
            masks = mask_utils.decode(rles)
            for k, aid in enumerate(ids):
                mask = np.ascontiguousarray(masks[:, :, k], dtype=bool)
                instances.append(Instance(mask=mask, ann_id=aid))
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return SourceImage(key=self.image_key(index), image=image, instances=tuple(instances))

    def load_resized(self, index: int, size: tuple[int, int]) -> SourceImage:
        """``resize_source_image(self.load(index), size)``, without full-resolution masks.

        The masks are sampled from their RLEs at the output grid, as the COCO source does:
        SA-1B's 1500x2250 images would otherwise decode 3.4 MB per mask to keep 2%.

        Raises:
            IndexError, SourceError: as ``load``.
            ValueError: ``size`` is not two positive integers.
        """
        H, W = check_size(size)
        t, j, (idx, _) = self._where(index)
        bgr = self._image(t, j, idx)
        h, w = bgr.shape[:2]
        image = cv2.cvtColor(resize_rgb(bgr, (H, W)), cv2.COLOR_BGR2RGB)
        picked = self.filters.picked(idx, j)
        rles, ids = self._rles(t, j, idx, picked)
        key = self.image_key(index)
        if not rles:
            return SourceImage(key=key, image=image)
        chars, offsets = _joined(rles)
        masks = sample_rles(
            chars,
            offsets,
            idx.bboxes[picked],
            np.arange(len(rles)),
            (h, w),
            (H, W),
            ann_ids=ids,
            source=self._member(t, idx, j, "json"),
        )
        instances = tuple(
            Instance(mask=masks[k], ann_id=aid) for k, aid in enumerate(ids) if masks[k].any()
        )
        return SourceImage(key=key, image=image, instances=instances)

    def _where(self, index: int) -> tuple[int, int, tuple[TarIndex, np.ndarray]]:
        """(tar, position in the tar, its open index) of global image ``index``."""
        i = checked_index(self.name, index, len(self))
        t = int(np.searchsorted(self._starts, i, side="right")) - 1
        return t, i - int(self._starts[t]), self._index(t)

    def _index(self, t: int) -> tuple[TarIndex, np.ndarray]:
        """Tar ``t``'s index and its eligible image positions, opened once and kept a while."""
        if t in self._open:
            self._open.move_to_end(t)
            return self._open[t]
        ref = self._set.refs[t]
        if not exists(index_url(self._set.cache_dir, ref)):  # removed from the cache since
            index_tar(ref, self._set.cache_dir, self.filters)  # it was counted: index it again
        idx = load_index(self._set.cache_dir, ref)
        entry = (idx, np.flatnonzero(self.filters.counts(idx)))
        self._open[t] = entry
        if len(self._open) > _OPEN_TARS:
            self._open.popitem(last=False)
        return entry

    def _eligible_of(self, t: int) -> np.ndarray:
        return self._index(t)[1]

    def _member(self, t: int, idx: TarIndex, j: int, what: str) -> str:
        return f"{self._set.refs[t].url}: {idx.stem(j)}.{what}"

    def _bytes(self, t: int, offset: int, size: int, where: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(self._set.refs[t].url)
        try:
            data = fs.cat_file(path, start=offset, end=offset + size)
        except FileNotFoundError:
            raise SourceError(f"{where}: the tar is gone; check the path") from None
        except OSError as exc:
            raise SourceError(f"{where}: cannot read ({exc}); check the path and access") from None
        if len(data) != size:
            raise SourceError(f"{where}: cut short; the tar changed since it was indexed")
        return data

    def _image(self, t: int, j: int, idx: TarIndex) -> np.ndarray:
        where = self._member(t, idx, j, "jpg")
        raw = self._bytes(t, int(idx.jpg_offsets[j]), int(idx.jpg_sizes[j]), where)
        bgr = decode_bgr(raw, where)
        h, w = int(idx.heights[j]), int(idx.widths[j])
        if bgr.shape[:2] != (h, w):
            raise SourceError(
                f"{where}: image is {bgr.shape[0]}x{bgr.shape[1]} but its JSON says {h}x{w}; "
                "fix the image or its JSON"
            )
        return bgr

    def _rles(
        self, t: int, j: int, idx: TarIndex, picked: np.ndarray
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """The compressed RLEs and annotation ids of masks ``picked`` of image ``j``."""
        if picked.size == 0:
            return [], []
        where = self._member(t, idx, j, "json")
        raw = self._bytes(t, int(idx.json_offsets[j]), int(idx.json_sizes[j]), where)
        h, w = int(idx.heights[j]), int(idx.widths[j])
        try:
            anns = json.loads(raw)["annotations"]
            rles, ids = [], []
            for p in idx.positions[picked].tolist():
                ann = anns[p]
                counts = ann["segmentation"]["counts"]
                rles.append({"size": [h, w], "counts": counts.encode("ascii", "replace")})
                aid = ann.get("id", p)
                ids.append(int(aid) if isinstance(aid, int) else p)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise SourceError(
                f"{where}: no longer matches its index; the tar changed since it was indexed"
            ) from None
        return rles, ids


def _check_cover(
    rles: list[dict[str, Any]], ids: list[int], hw: tuple[int, int], where: str
) -> None:
    """Refuse RLEs that do not cover the image exactly (decoding them would overrun); a
    string too broken to decode counts as covering -1 pixels."""
    try:
        ends, first = rle_run_ends(*_joined(rles))
        totals = ends[first[1:] - 1]
    except (IndexError, ValueError):
        totals = np.full(len(rles), -1, np.int64)
    check_cover(totals, hw, ids, where)


def _joined(rles: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The RLEs' count strings as one uint8 blob and int64 [k+1] offsets (``rle_run_ends``)."""
    counts = [r["counts"] for r in rles]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in counts])]).astype(np.int64)
    return np.frombuffer(b"".join(counts), np.uint8), offsets
