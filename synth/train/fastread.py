"""Decode a local synth store's samples straight from the shard files into the batch buffer.

The store's pixel arrays use the portable Zarr v3 layout written by ``synth.store``: one
``sharding_indexed`` shard per file, inner chunks of one sample, an optional ``transpose``
(format 3's ``images``: prompt and query rows interleaved), ``bytes`` followed by ``blosc``,
``zstd`` or nothing inside, the shard index (offset, length pairs, then a crc32c) at the end
of the file. For a local store in exactly that layout this reader memory-maps each shard file,
looks the sample up in the index and decodes it with one numcodecs call: *into* the caller's
array where the chunk is one field in field order (format 2, ``mask``), else into one reused
chunk buffer from which each role is copied out (about a tenth of the decode's time). No
per-chunk machinery, so decoding runs near the codec's speed (``benchmarks/loader.py``
measures the whole loader). Anything else (remote URLs, other codecs or blosc compressors
numcodecs lacks, other chunking or orders) is declined at ``open`` and the caller falls back
to ``StoreReader`` (tensorstore).

The index checksum is not verified here; a corrupt chunk still fails loudly in the codec, and
an uncompressed chunk of the wrong length is refused.
"""

from __future__ import annotations

import json
import mmap
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.store import (
    IMAGE_STORAGE_ORDER,
    PIXEL_FIELDS,
    SHARD_MISSING,
    field_location,
    shard_index_nbytes,
)


def _inner_codec(codecs: list[dict[str, Any]]) -> str | None:
    """``zstd``, ``blosc`` or ``none`` for an inner chain this reader decodes, else None."""
    names = [c.get("name") for c in codecs]
    if names == ["bytes"]:
        return "none"
    if names == ["bytes", "zstd"]:
        return "zstd"
    if names == ["bytes", "blosc"]:
        from numcodecs import blosc

        cname = codecs[1].get("configuration", {}).get("cname")
        return "blosc" if cname in blosc.list_compressors() else None
    return None


def _sharding_config(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The inner configuration if ``meta`` is the layout this reader understands, else None."""
    codecs = meta.get("codecs", [])
    if meta.get("data_type") != "uint8" or len(codecs) != 1:
        return None
    if codecs[0].get("name") != "sharding_indexed":
        return None
    cfg = codecs[0].get("configuration", {})
    index = cfg.get("index_codecs", [])
    index_ok = [c.get("name") for c in index] == ["bytes", "crc32c"] and index[0].get(
        "configuration", {}
    ).get("endian", "little") == "little"
    key = meta.get("chunk_key_encoding", {})
    if (
        _inner_codec(_without_transpose(cfg.get("codecs", []))) is None
        or _order(cfg.get("codecs", []), len(meta["shape"])) is None
        or not index_ok
        or cfg.get("index_location", "end") != "end"
        or key.get("name") != "default"
        or key.get("configuration", {}).get("separator", "/") != "/"
    ):
        return None
    shape = meta["shape"]
    inner_shape = cfg.get("chunk_shape")
    if inner_shape != [1, *shape[1:]]:
        return None
    return cfg


def _without_transpose(codecs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return codecs[1:] if codecs and codecs[0].get("name") == "transpose" else codecs


def _order(codecs: list[dict[str, Any]], ndim: int) -> tuple[int, ...] | None:
    """The storage order of a chunk: identity, or ``IMAGE_STORAGE_ORDER`` (None: other)."""
    if not codecs or codecs[0].get("name") != "transpose":
        return tuple(range(ndim))
    order = tuple(codecs[0].get("configuration", {}).get("order", ()))
    return order if order == IMAGE_STORAGE_ORDER else None


@dataclass(frozen=True)
class _ArrayInfo:
    shard: int
    tail: tuple[int, ...]
    fill: int
    key_tail: str
    codec: str
    order: tuple[int, ...]

    @property
    def transposed(self) -> bool:
        return self.order != tuple(range(len(self.order)))


class LocalShardReader:
    """Per-sample decode of pixel fields of a local store (see the module docstring).

    Create with ``LocalShardReader.open``; instances pickle without their open files and
    reopen lazily, so they can be handed to DataLoader workers.
    """

    def __init__(
        self,
        root: str,
        arrays: dict[str, _ArrayInfo],
        fields: dict[str, tuple[str, int | None]],
        max_open: int = 64,
    ):
        self.root = root
        self.arrays = arrays
        self.fields = fields
        self.max_open = max_open
        self._maps: OrderedDict[tuple[str, int], tuple[Any, np.ndarray | None]] = OrderedDict()
        self._scratch: dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    @classmethod
    def open(cls, url: str, fields: Sequence[str] = PIXEL_FIELDS) -> LocalShardReader | None:
        """A reader of pixel ``fields`` at ``url``; None where the fast path does not apply."""
        if "://" in url and not url.startswith("file://"):
            return None
        root = url.removeprefix("file://")
        try:
            with open(os.path.join(root, "zarr.json")) as f:
                version = json.load(f)["attributes"]["synth"]["format_version"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        located = {f: field_location(version, f) for f in fields}
        arrays = {}
        for name in dict.fromkeys(a for a, _ in located.values()):
            try:
                with open(os.path.join(root, name, "zarr.json")) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                return None
            cfg = _sharding_config(meta)
            if cfg is None:
                return None
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
            if meta["chunk_grid"]["configuration"]["chunk_shape"][1:] != meta["shape"][1:]:
                return None
            arrays[name] = _ArrayInfo(
                shard=int(shard),
                tail=tuple(meta["shape"][1:]),
                fill=int(meta.get("fill_value") or 0),
                key_tail="/0" * (len(meta["shape"]) - 1),
                codec=_inner_codec(_without_transpose(cfg["codecs"])),
                order=_order(cfg["codecs"], len(meta["shape"])),
            )
        return cls(root, arrays, located)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()
        state["_scratch"] = {}
        return state

    def _shard(self, name: str, shard: int) -> tuple[Any, np.ndarray | None]:
        if self._pid != os.getpid():
            self._maps, self._pid = OrderedDict(), os.getpid()
        key = (name, shard)
        hit = self._maps.get(key)
        if hit is not None:
            self._maps.move_to_end(key)
            return hit
        info = self.arrays[name]
        path = os.path.join(self.root, name, "c", str(shard) + info.key_tail)
        try:
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:  # a shard of fill values only is never written
            mm, index = None, None
        else:
            n = info.shard
            offset = len(mm) - shard_index_nbytes(n)
            index = np.frombuffer(mm, dtype="<u8", count=2 * n, offset=offset)
            index = index.reshape(n, 2).copy()  # no buffer export: the map can close
        self._maps[key] = (mm, index)
        while len(self._maps) > self.max_open:
            old_mm, _ = self._maps.popitem(last=False)[1]
            if old_mm is not None:
                old_mm.close()
        return mm, index

    def read_into(self, indices: np.ndarray, outs: Mapping[str, np.ndarray]) -> None:
        """Decode samples ``indices`` of each field of ``outs`` into ``outs[field][0..len)``.

        Every output is C-contiguous with one sample per row; fields that share an array
        (``prompt`` and ``query`` of format 3) are decoded once per sample.
        """
        by_array: dict[str, list[tuple[np.ndarray, int | None]]] = {}
        for field, out in outs.items():
            name, role = self.fields[field]
            by_array.setdefault(name, []).append((out, role))
        for name, targets in by_array.items():
            self._read_array(name, indices, targets)

    def _read_array(
        self, name: str, indices: np.ndarray, targets: list[tuple[np.ndarray, int | None]]
    ) -> None:
        info = self.arrays[name]
        codec = _decoder(info.codec)
        S = info.shard
        direct = not info.transposed and len(targets) == 1 and targets[0][1] is None
        chunk_out, view = None, None
        if not direct:
            chunk_out = self._scratch.get(name)
            if chunk_out is None:
                storage = tuple((1, *info.tail)[k] for k in info.order)
                chunk_out = self._scratch[name] = np.empty(storage, np.uint8)
            view = chunk_out.transpose(np.argsort(info.order))[0]  # (role, y, x, channel)
        for j, i in enumerate(indices.tolist()):
            mm, index = self._shard(name, i // S)
            entry = index[i % S] if index is not None else None
            if entry is None or entry[0] == SHARD_MISSING:
                for out, _ in targets:
                    out[j] = info.fill
                continue
            dest = targets[0][0][j] if direct else chunk_out
            offset, length = int(entry[0]), int(entry[1])
            # Released at once: an evicted shard's map cannot close while a view of it lives.
            with memoryview(mm)[offset : offset + length] as chunk:
                if codec is not None:
                    codec.decode(chunk, out=dest)
                elif length == dest.nbytes:
                    np.copyto(dest, np.frombuffer(chunk, np.uint8).reshape(dest.shape))
                else:
                    raise ValueError(
                        f"{self.root}/{name}: sample {i} holds {length} bytes, want {dest.nbytes}"
                    )
            if not direct:
                for out, role in targets:
                    np.copyto(out[j], view if role is None else view[role])


def _decoder(kind: str) -> Any:
    """A numcodecs codec that decodes chunks of ``kind`` (None: the chunk is the raw bytes)."""
    if kind == "zstd":
        from numcodecs import Zstd

        return Zstd()
    if kind == "blosc":
        from numcodecs import Blosc, blosc

        # One core per loader worker: no blosc thread pool (zarr-python sets the same on import).
        blosc.use_threads = False
        return Blosc()
    return None
