"""Decode a local synth store's samples straight from the shard files into the batch buffer.

The store's pixel arrays use the portable Zarr v3 layout written by ``synth.store``: one
``sharding_indexed`` shard per file, inner chunks of one sample, ``bytes`` followed by ``blosc``,
``zstd`` or nothing inside, the shard index (offset, length pairs, then a crc32c) at the end of
the file. For a local store in exactly that layout this reader memory-maps each shard file,
looks the sample up in the index and decodes it *into* the caller's array (one numcodecs call,
or one copy for uncompressed chunks): no intermediate buffer and no per-chunk machinery, so
decoding runs at the codec's speed (``benchmarks/loader.py`` measures the whole loader).
Anything else (remote URLs, other codecs or blosc compressors numcodecs lacks, other chunking)
is declined at ``open`` and the caller falls back to ``StoreReader`` (tensorstore).

The index checksum is not verified here; a corrupt chunk still fails loudly in the codec, and
an uncompressed chunk of the wrong length is refused.
"""

from __future__ import annotations

import json
import mmap
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from synth.store import SHARD_MISSING, shard_index_nbytes


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
        _inner_codec(cfg.get("codecs", [])) is None
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


class LocalShardReader:
    """Per-sample decode of selected arrays of a local store (see the module docstring).

    Create with ``LocalShardReader.open``; instances pickle without their open files and
    reopen lazily, so they can be handed to DataLoader workers.
    """

    def __init__(self, root: str, arrays: dict[str, dict[str, Any]], max_open: int = 64):
        self.root = root
        self.arrays = arrays
        self.max_open = max_open
        self._maps: OrderedDict[tuple[str, int], tuple[Any, np.ndarray | None]] = OrderedDict()
        self._pid = os.getpid()

    @classmethod
    def open(cls, url: str, names: tuple[str, ...]) -> LocalShardReader | None:
        """A reader of arrays ``names`` at ``url``; None where the fast path does not apply."""
        if "://" in url and not url.startswith("file://"):
            return None
        root = url.removeprefix("file://")
        arrays = {}
        for name in names:
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
            arrays[name] = {
                "shard": int(shard),
                "tail": tuple(meta["shape"][1:]),
                "fill": int(meta.get("fill_value") or 0),
                "key_tail": "/0" * (len(meta["shape"]) - 1),
                "codec": _inner_codec(cfg["codecs"]),
            }
        return cls(root, arrays)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = OrderedDict()
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
        path = os.path.join(self.root, name, "c", str(shard) + info["key_tail"])
        try:
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:  # a shard of fill values only is never written
            mm, index = None, None
        else:
            n = info["shard"]
            offset = len(mm) - shard_index_nbytes(n)
            index = np.frombuffer(mm, dtype="<u8", count=2 * n, offset=offset)
            index = index.reshape(n, 2).copy()  # no buffer export: the map can close
        self._maps[key] = (mm, index)
        while len(self._maps) > self.max_open:
            old_mm, _ = self._maps.popitem(last=False)[1]
            if old_mm is not None:
                old_mm.close()
        return mm, index

    def read_into(self, name: str, indices: np.ndarray, out: np.ndarray) -> None:
        """Decode samples ``indices`` of array ``name`` into ``out[0..len)`` (C-contiguous)."""
        info = self.arrays[name]
        codec = _decoder(info["codec"])
        S = info["shard"]
        for j, i in enumerate(indices.tolist()):
            mm, index = self._shard(name, i // S)
            entry = index[i % S] if index is not None else None
            if entry is None or entry[0] == SHARD_MISSING:
                out[j] = info["fill"]
                continue
            offset, length = int(entry[0]), int(entry[1])
            # Released at once: an evicted shard's map cannot close while a view of it lives.
            with memoryview(mm)[offset : offset + length] as chunk:
                if codec is not None:
                    codec.decode(chunk, out=out[j])
                elif length == out[j].nbytes:
                    np.copyto(out[j], np.frombuffer(chunk, np.uint8).reshape(out[j].shape))
                else:
                    raise ValueError(
                        f"{self.root}/{name}: sample {i} holds {length} bytes, want {out[j].nbytes}"
                    )


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
