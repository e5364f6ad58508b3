"""The one Zarr v3 store layout: the builder writes through it and the loader reads through it.

Layout (format version 2, documented in ``docs/store-format.md``)::

    STORE/zarr.json            group; attributes["synth"] holds layout + provenance
    STORE/prompt               uint8 (N, H, W, 3)  chunk (1, H, W, 3)  shard (S, H, W, 3)
    STORE/query                uint8 (N, H, W, 3)  chunk (1, H, W, 3)  shard (S, H, W, 3)
    STORE/mask                 uint8 (N, H, W)     chunk (1, H, W)     shard (S, H, W)
    STORE/meta/<field>         per-sample metadata, (N,) or (N, 4), one chunk per shard
    STORE/_synth/shards/NNNNNN.json   completion record of shard NNNNNN (written last)
    STORE/_synth/runs/*.json          per-run logs (timings); not part of the content

Codecs are portable (``bytes`` + one of ``blosc`` lz4, ``zstd`` or nothing, inside
``sharding_indexed``) so tensorstore and any Zarr v3 reader open the arrays without synth. One
task writes one whole shard of every array, once; a shard counts as present only when its
completion record exists. ``write_shard`` encodes the objects itself (``shard_objects``,
``encode_shard``) to the bytes zarr-python would write, without zarr-python's per-array and
per-chunk overhead, and falls back to zarr-python for a store in any other layout.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.errors import SynthError

FORMAT_VERSION = 2
#: Versions this synth reads: 1 is version 2 with ``layout.zstd_level`` instead of ``layout.codec``.
READABLE_FORMATS = (1, 2)
IMAGE_ARRAYS = ("prompt", "query")
PIXEL_ARRAYS = ("prompt", "query", "mask")
#: name -> (dtype, trailing shape, fill value) of the per-sample metadata arrays.
META_FIELDS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "kind": ("int8", (), -1),
    "seed": ("uint64", (), 0),
    "attempt": ("int16", (), -1),
    "base_source": ("int16", (), -1),
    "base_index": ("int64", (), -1),
    "donor_source": ("int16", (), -1),
    "donor_index": ("int64", (), -1),
    "texture_source": ("int16", (), -1),
    "texture_index": ("int64", (), -1),
    "mask_area": ("int32", (), -1),
    "bbox": ("int32", (4,), -1),
}
#: Every array of a store, as paths under its root, in the order ``write_shard`` writes them.
ARRAY_NAMES = (*PIXEL_ARRAYS, *(f"meta/{m}" for m in META_FIELDS))
MARKER_DIR = "_synth/shards"
RUNS_DIR = "_synth/runs"

#: Offset and length of an inner chunk missing from a shard (all fill value, never stored).
SHARD_MISSING = 2**64 - 1
#: Bytes per inner chunk in a shard index: (offset, nbytes) as little-endian uint64.
SHARD_INDEX_ENTRY_NBYTES = 16
#: Bytes of the crc32c that follows the index at the end of a shard.
SHARD_CHECKSUM_NBYTES = 4

#: Lossless chunk codecs a store may use: name -> (lowest level, highest level, default level).
#: ``blosc-lz4`` is the default: it decodes about 3x faster than zstd-3 for a 1.14-1.24x larger
#: store of real photos, and the loader pays decode every epoch (``docs/store-format.md``).
CODECS: dict[str, tuple[int, int, int]] = {
    "blosc-lz4": (1, 9, 9),
    "zstd": (0, 22, 3),
    "none": (0, 0, 0),
}
DEFAULT_CODEC = "blosc-lz4"


@dataclass(frozen=True)
class Codec:
    """The lossless compressor of every array's chunks: a ``CODECS`` name and its level."""

    name: str = DEFAULT_CODEC
    level: int = CODECS[DEFAULT_CODEC][2]

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise SynthError(f"codec {self.name!r}: use one of {', '.join(CODECS)}")
        lo, hi, _ = CODECS[self.name]
        if isinstance(self.level, bool) or not isinstance(self.level, int):
            raise SynthError(f"codec {self.name} level {self.level!r}: not an integer")
        if not lo <= self.level <= hi:
            raise SynthError(f"codec {self.name} level {self.level}: outside {lo}..{hi}")

    @classmethod
    def of(cls, name: str, level: int | None = None) -> Codec:
        """``name`` at ``level``, or at the codec's default level when ``level`` is None."""
        if name not in CODECS:
            raise SynthError(f"codec {name!r}: use one of {', '.join(CODECS)}")
        return cls(name, CODECS[name][2] if level is None else level)

    def zarr_compressors(self, dtype: str) -> tuple[Any, ...]:
        """The Zarr v3 codecs after ``bytes``: portable ones that tensorstore also decodes."""
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.name == "zstd":
            return (ZstdCodec(level=self.level),)
        if self.name == "blosc-lz4":
            # No shuffle: byte shuffle is a no-op on uint8 pixels; bitshuffle halves decode speed.
            typesize = np.dtype(dtype).itemsize
            return (
                BloscCodec(
                    cname="lz4",
                    clevel=self.level,
                    shuffle="noshuffle",
                    typesize=typesize,
                    blocksize=0,
                ),
            )
        return ()

    def numcodecs(self, typesize: int = 1) -> Any:
        """The numcodecs codec that makes the same chunk bytes (None for ``none``).

        ``typesize`` is the array's item size: zarr passes it to blosc, whose output depends on it.
        """
        import numcodecs

        if self.name == "zstd":
            return numcodecs.Zstd(level=self.level, checksum=False)
        if self.name == "blosc-lz4":
            return numcodecs.Blosc(
                cname="lz4",
                clevel=self.level,
                shuffle=numcodecs.Blosc.NOSHUFFLE,
                blocksize=0,
                typesize=typesize,
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level}

    def __str__(self) -> str:
        return self.name if self.name == "none" else f"{self.name}-{self.level}"


@dataclass(frozen=True)
class Layout:
    """Shape of a store: N samples of H x W, grouped into shards of S samples, and its codec."""

    n: int
    height: int
    width: int
    shard_size: int
    codec: Codec = Codec()

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Sample index range [start, stop) of ``shard``."""
        if not 0 <= shard < self.n_shards:
            raise IndexError(f"shard {shard} out of range [0, {self.n_shards})")
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "height": self.height,
            "width": self.width,
            "shard_size": self.shard_size,
            "codec": self.codec.to_dict(),
        }


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec filesystem and root path of a store URL (local path or remote)."""
    import fsspec

    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


def _zarr_store(url: str, storage_options: Mapping[str, Any] | None, read_only: bool):
    import zarr.storage

    if "://" in url and not url.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(
            url, storage_options=dict(storage_options or {}), read_only=read_only
        )
    path = url.removeprefix("file://")
    return zarr.storage.LocalStore(path, read_only=read_only)


def create_store(
    url: str,
    layout: Layout,
    attrs: Mapping[str, Any],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Create an empty store (all arrays, no shards) at ``url``, replacing anything there."""
    import zarr

    fs, root = filesystem(url, storage_options)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    store = _zarr_store(url, storage_options, read_only=False)
    group = zarr.open_group(store=store, mode="w", zarr_format=3)
    H, W, S, N = layout.height, layout.width, layout.shard_size, layout.n
    for name in PIXEL_ARRAYS:
        tail = (H, W, 3) if name in IMAGE_ARRAYS else (H, W)
        group.create_array(
            name,
            shape=(N, *tail),
            dtype="uint8",
            chunks=(1, *tail),
            shards=(S, *tail),
            compressors=layout.codec.zarr_compressors("uint8"),
            fill_value=0,
            dimension_names=("sample", "y", "x", "channel")[: 1 + len(tail)],
        )
    meta = group.create_group("meta")
    for name, (dtype, tail, fill) in META_FIELDS.items():
        meta.create_array(
            name,
            shape=(N, *tail),
            dtype=dtype,
            chunks=(S, *tail),
            compressors=layout.codec.zarr_compressors(dtype),
            fill_value=fill,
        )
    group.attrs["synth"] = {
        "format_version": FORMAT_VERSION,
        "layout": layout.to_dict(),
        **dict(attrs),
    }


def read_attrs(url: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``synth`` attributes of a store; SynthError if ``url`` is not a synth store."""
    import zarr

    try:
        group = zarr.open_group(
            store=_zarr_store(url, storage_options, read_only=True), mode="r", zarr_format=3
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SynthError(
            f"{url}: not a Zarr v3 store ({e.__class__.__name__}); check the path"
        ) from e
    attrs = dict(group.attrs).get("synth")
    if not attrs:
        raise SynthError(f"{url}: a Zarr group without 'synth' attributes; not a synth store")
    if attrs.get("format_version") not in READABLE_FORMATS:
        raise SynthError(
            f"{url}: store format {attrs.get('format_version')} but this synth reads "
            f"{', '.join(map(str, READABLE_FORMATS))}; rebuild the store or use a matching synth "
            "version"
        )
    return attrs


def layout_of(attrs: Mapping[str, Any]) -> Layout:
    """The store's ``Layout``; format 1 stores (``zstd_level``, no ``codec``) read as zstd."""
    d = dict(attrs["layout"])
    if "zstd_level" in d:
        d["codec"] = {"name": "zstd", "level": d.pop("zstd_level")}
    return Layout(**{**d, "codec": Codec(**d["codec"])})


def update_attrs(
    url: str, values: Mapping[str, Any], *, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Merge ``values`` into the store's ``synth`` attributes."""
    import zarr

    group = zarr.open_group(
        store=_zarr_store(url, storage_options, read_only=False), mode="r+", zarr_format=3
    )
    attrs = dict(group.attrs["synth"])
    attrs.update(values)
    group.attrs["synth"] = attrs


def write_shard(
    url: str,
    shard: int,
    arrays: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write every array's slice of ``shard`` whole, then its completion record.

    ``arrays`` holds ``prompt``, ``query``, ``mask`` and every ``META_FIELDS`` name, each with
    exactly the shard's number of samples. Writing the record last makes a shard count only
    once all its bytes are in place; a rerun simply rewrites the same bytes.

    The objects are encoded here (``shard_objects``), byte for byte what zarr-python writes,
    each written once and atomically; a store whose array metadata is not the layout
    ``create_store`` makes is written through zarr-python instead.
    """
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    group = json.loads(fs.cat_file(f"{root}/zarr.json"))
    layout = layout_of(group["attributes"]["synth"])
    start, stop = layout.shard_range(shard)
    for name in ARRAY_NAMES:
        n = len(arrays[name.removeprefix("meta/")])
        if n != stop - start:
            raise ValueError(f"shard {shard}: {name} has {n} samples, want {stop - start}")
    mismatch = _layout_mismatch(fs, root, layout)
    if mismatch is None:
        objects = shard_objects(layout, shard, arrays)
        _put_objects(fs, {f"{root}/{k}": v for k, v in objects.items() if v is not None})
        for key in (k for k, v in objects.items() if v is None):
            _delete_object(fs, f"{root}/{key}")
    else:
        warnings.warn(
            f"{url}: {mismatch}; writing through zarr-python (slower)", RuntimeWarning, stacklevel=2
        )
        _write_shard_zarr(url, shard, arrays, storage_options=storage_options)
    _put_json(fs, f"{root}/{MARKER_DIR}/{shard:06d}.json", record)


def _write_shard_zarr(
    url: str,
    shard: int,
    arrays: Mapping[str, np.ndarray],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write every array's slice of ``shard`` through zarr-python (any array metadata)."""
    import zarr

    store = _zarr_store(url, storage_options, read_only=False)
    group = zarr.open_group(store=store, mode="r+", zarr_format=3)
    start, stop = layout_of(group.attrs["synth"]).shard_range(shard)
    for name in ARRAY_NAMES:
        group[name][start:stop] = arrays[name.removeprefix("meta/")]


def shard_objects(
    layout: Layout, shard: int, arrays: Mapping[str, np.ndarray]
) -> dict[str, bytes | None]:
    """The object of every array for ``shard``: store key -> bytes, None where zarr stores none.

    Follows zarr's ``write_empty_chunks=False``: an inner chunk (sample) of fill values only is
    left out of its shard, and a shard or metadata chunk of fill values only is no object at all
    (None: an object left at that key by an earlier write must go). The last metadata chunk of a
    store whose ``n`` is not a multiple of ``shard_size`` is padded with the fill value.
    """
    start, stop = layout.shard_range(shard)
    S, n = layout.shard_size, stop - start
    out: dict[str, bytes | None] = {}
    for name in ARRAY_NAMES:
        dtype, tail, fill = _array_spec(layout, name)
        data = np.asarray(arrays[name.removeprefix("meta/")])
        if data.dtype != dtype:
            data = data.astype(dtype)  # zarr-python casts the same way
        if data.shape != (n, *tail):
            raise ValueError(f"shard {shard}: {name} has shape {data.shape}, want {(n, *tail)}")
        encode = chunk_encoder(layout.codec, dtype)
        key = f"{name}/c/{shard}" + "/0" * len(tail)
        if name in PIXEL_ARRAYS:  # fill value 0
            present = data.reshape(n, -1).any(axis=1)
            chunks = [encode(data[i]) if present[i] else None for i in range(n)]
            out[key] = encode_shard(chunks + [None] * (S - n))
        else:
            chunk = np.full((S, *tail), fill, dtype=dtype)
            chunk[:n] = data
            out[key] = None if np.all(chunk == fill) else encode(chunk)
    return out


def chunk_encoder(codec: Codec, dtype: str | np.dtype) -> Callable[[np.ndarray], bytes]:
    """Encoder of one chunk of ``dtype``: ``bytes`` (little endian, C order), then ``codec``."""
    dt = np.dtype(dtype)
    compressor = codec.numcodecs(dt.itemsize)
    if codec.name == "blosc-lz4":
        from numcodecs import blosc

        blosc.use_threads = False  # as zarr-python sets on import; one core per task
    le = dt.newbyteorder("<")

    def encode(chunk: np.ndarray) -> bytes:
        raw = np.ascontiguousarray(chunk, dtype=le).reshape(-1).view(np.uint8)
        return raw.tobytes() if compressor is None else bytes(compressor.encode(raw))

    return encode


def encode_shard(chunks: Sequence[bytes | None]) -> bytes | None:
    """A ``sharding_indexed`` object (index at the end) of its encoded inner chunks, in order.

    ``chunks[i]`` is inner chunk i, None where it is missing. Chunks follow each other in order
    (zarr's Morton order, which for a chunk grid of (S, 1, ...) is this order), then the index
    of (offset, nbytes) little-endian uint64 pairs (``SHARD_MISSING`` twice for a missing chunk),
    then the index's crc32c. None when every chunk is missing: zarr writes no such shard.
    """
    import google_crc32c

    index = np.full((len(chunks), 2), SHARD_MISSING, dtype="<u8")
    parts: list[bytes] = []
    offset = 0
    for i, chunk in enumerate(chunks):
        if chunk:
            index[i] = offset, len(chunk)
            parts.append(chunk)
            offset += len(chunk)
    if not parts:
        return None
    index_bytes = index.tobytes()
    checksum = google_crc32c.value(index_bytes).to_bytes(SHARD_CHECKSUM_NBYTES, "little")
    return b"".join([*parts, index_bytes, checksum])


def shard_index_nbytes(n_chunks: int) -> int:
    """Length of the index (and its checksum) that ends a shard of ``n_chunks`` inner chunks."""
    return SHARD_INDEX_ENTRY_NBYTES * n_chunks + SHARD_CHECKSUM_NBYTES


def _array_spec(layout: Layout, name: str) -> tuple[str, tuple[int, ...], int]:
    """(dtype, trailing shape, fill value) of array ``name`` of a store of ``layout``."""
    if name in PIXEL_ARRAYS:
        hw = (layout.height, layout.width)
        return "uint8", (*hw, 3) if name in IMAGE_ARRAYS else hw, 0
    return META_FIELDS[name.removeprefix("meta/")]


def _expected_metadata(layout: Layout, name: str) -> dict[str, Any]:
    """The ``zarr.json`` fields that decide the bytes of array ``name``, as ``create_store`` writes
    them (``bytes`` codecs with their ``endian`` spelled out, see ``_normalized``)."""
    dtype, tail, fill = _array_spec(layout, name)
    codecs = [_bytes_codec(), *_compressor_json(layout.codec, dtype)]
    chunks = [layout.shard_size, *tail]
    if name in PIXEL_ARRAYS:
        sharding = {
            "chunk_shape": [1, *tail],
            "codecs": codecs,
            "index_codecs": [_bytes_codec(), {"name": "crc32c"}],
            "index_location": "end",
        }
        codecs = [{"name": "sharding_indexed", "configuration": sharding}]
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [layout.n, *tail],
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "storage_transformers": [],
    }


def _bytes_codec() -> dict[str, Any]:
    return {"name": "bytes", "configuration": {"endian": "little"}}


def _compressor_json(codec: Codec, dtype: str) -> list[dict[str, Any]]:
    """The codecs after ``bytes`` that ``Codec.zarr_compressors`` puts in ``zarr.json``."""
    if codec.name == "zstd":
        return [{"name": "zstd", "configuration": {"level": codec.level, "checksum": False}}]
    if codec.name == "blosc-lz4":
        config = {"typesize": np.dtype(dtype).itemsize, "cname": "lz4", "clevel": codec.level}
        config.update(shuffle="noshuffle", blocksize=0)
        return [{"name": "blosc", "configuration": config}]
    return []


def _normalized(meta: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``meta`` restricted to ``keys``, ``bytes`` codecs without ``endian`` read as little endian
    (zarr-python omits it for one-byte types) and absent ``storage_transformers`` as none."""

    def codecs(chain: Any) -> Any:
        if not isinstance(chain, list):
            return chain
        out = []
        for c in chain:
            if isinstance(c, dict) and c.get("name") == "bytes":
                c = {**c, "configuration": {"endian": "little", **c.get("configuration", {})}}
            elif isinstance(c, dict) and c.get("name") == "sharding_indexed":
                cfg = dict(c.get("configuration", {}))
                for k in ("codecs", "index_codecs"):
                    cfg[k] = codecs(cfg.get(k))
                c = {**c, "configuration": cfg}
            out.append(c)
        return out

    out = {k: meta.get(k) for k in keys}
    out["codecs"] = codecs(out["codecs"])
    if out["storage_transformers"] is None:
        out["storage_transformers"] = []
    return out


def _layout_mismatch(fs: Any, root: str, layout: Layout) -> str | None:
    """None if every array's ``zarr.json`` is what ``shard_objects`` encodes for, else why not."""
    paths = {name: f"{root}/{name}/zarr.json" for name in ARRAY_NAMES}
    try:
        docs = fs.cat(list(paths.values()), on_error="raise")
    except FileNotFoundError as e:
        return f"array metadata missing ({e})"
    for name, path in paths.items():
        want = _expected_metadata(layout, name)
        try:
            got = _normalized(json.loads(docs[path]), list(want))
        except (ValueError, KeyError, TypeError) as e:
            return f"array {name}: unreadable metadata ({e.__class__.__name__})"
        if got != want:
            diff = sorted(k for k in want if got[k] != want[k])
            return f"array {name}: metadata differs from the layout in {', '.join(diff)}"
    return None


def _is_local(fs: Any) -> bool:
    return "file" in fs.protocol


def _put_objects(fs: Any, objects: Mapping[str, bytes]) -> None:
    """Write each object (path -> bytes) whole, once: on local disks via a ``.partial`` file and
    a rename, so no reader sees half of one (``remove_partials`` cleans up after a crash);
    elsewhere one ``pipe_file`` (PUT) per object, concurrent where the filesystem is async."""
    if not _is_local(fs):
        fs.pipe(dict(objects))
        return
    for path, payload in objects.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.partial"
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)


def _delete_object(fs: Any, path: str) -> None:
    """Remove the object at ``path`` if there is one (zarr's delete of an all-fill chunk)."""
    try:
        if _is_local(fs):
            os.unlink(path)
        else:
            fs.rm_file(path)
    except FileNotFoundError:
        pass


def write_json(
    url: str, key: str, obj: Any, *, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write a small JSON document under the store (atomically on local disks)."""
    fs, root = filesystem(url, storage_options)
    _put_json(fs, f"{root.rstrip('/')}/{key}", obj)


def _put_json(fs: Any, path: str, obj: Any) -> None:
    _put_objects(fs, {path: json.dumps(obj, sort_keys=True, indent=1).encode()})


def shard_records(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> dict[int, dict[str, Any]]:
    """Completion records of the shards present in the store, keyed by shard number."""
    fs, root = filesystem(url, storage_options)
    base = f"{root.rstrip('/')}/{MARKER_DIR}"
    try:
        names = fs.ls(base, detail=False)
    except FileNotFoundError:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for name in sorted(names):
        stem = name.rsplit("/", 1)[-1]
        if stem.endswith(".json") and stem[:-5].isdigit():
            out[int(stem[:-5])] = json.loads(fs.cat_file(name))
    return out


def remove_partials(url: str, *, storage_options: Mapping[str, Any] | None = None) -> int:
    """Delete temporary ``*.partial`` files an interrupted local write left behind."""
    fs, root = filesystem(url, storage_options)
    if not _is_local(fs) or not fs.exists(root):
        return 0
    n = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".partial"):
                os.unlink(os.path.join(dirpath, f))
                n += 1
    return n


def _tensorstore_kvstore(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    if "://" not in url or url.startswith("file://"):
        return {"driver": "file", "path": os.path.abspath(url.removeprefix("file://"))}
    if url.startswith(("s3://", "gs://")) and not storage_options:
        scheme, rest = url.split("://", 1)
        bucket, _, path = rest.partition("/")
        spec: dict[str, Any] = {"driver": "s3" if scheme == "s3" else "gcs", "bucket": bucket}
        spec["path"] = path.rstrip("/") + "/"
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if scheme == "s3" and endpoint:
            spec["endpoint"] = endpoint
        return spec
    return None


class StoreReader:
    """Random access to a synth store from any process.

    The backend is tensorstore (``zarr3`` driver, several times faster per chunk) when it is
    installed and can address the URL, otherwise zarr-python. Handles are opened lazily and
    re-opened after a fork, so a reader may be created in a parent and used in DataLoader
    workers without sharing the parent's I/O threads.
    """

    def __init__(
        self,
        url: str,
        *,
        backend: str = "auto",
        storage_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        if backend not in ("auto", "tensorstore", "zarr"):
            raise SynthError(f"reader backend {backend!r}: use auto, tensorstore or zarr")
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.attrs = read_attrs(url, storage_options=storage_options)
        self.layout = layout_of(self.attrs)
        self.kinds: list[str] = list(self.attrs.get("kinds", []))
        self.threads = threads
        self._backend_req = backend
        self._pid: int | None = None
        self._arrays: dict[str, Any] = {}
        self.backend = self._choose_backend()

    def __len__(self) -> int:
        return self.layout.n

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        state["_pid"] = None
        return state

    def _choose_backend(self) -> str:
        if self._backend_req == "zarr":
            return "zarr"
        kv = _tensorstore_kvstore(self.url, self.storage_options)
        try:
            import tensorstore  # noqa: F401
        except ImportError:
            if self._backend_req == "tensorstore":
                raise SynthError(
                    "reader backend tensorstore: not installed; pip install tensorstore"
                ) from None
            return "zarr"
        if kv is None:
            if self._backend_req == "tensorstore":
                raise SynthError(
                    f"{self.url}: tensorstore cannot address this URL; use backend zarr"
                )
            return "zarr"
        return "tensorstore"

    def _open(self) -> dict[str, Any]:
        if self._pid == os.getpid() and self._arrays:
            return self._arrays
        if self._pid is not None and self._pid != os.getpid():
            raise SynthError(
                f"{self.url}: reader used in a forked child after the parent read through "
                f"{self.backend}, whose I/O threads do not survive fork; start workers with "
                "multiprocessing 'spawn' or 'forkserver', or read first in the child"
            )
        names = (*PIXEL_ARRAYS, *(f"meta/{m}" for m in META_FIELDS))
        if self.backend == "tensorstore":
            import tensorstore as ts

            limit = self.threads or max(1, min(8, os.cpu_count() or 1))
            ctx = ts.Context(
                {"data_copy_concurrency": {"limit": limit}, "file_io_concurrency": {"limit": limit}}
            )
            kv = _tensorstore_kvstore(self.url, self.storage_options)
            arrays = {}
            for name in names:
                spec = {
                    "driver": "zarr3",
                    "kvstore": {**kv, "path": kv["path"].rstrip("/") + f"/{name}/"},
                }
                arrays[name] = ts.open(spec, read=True, context=ctx).result()
        else:
            import zarr

            group = zarr.open_group(
                store=_zarr_store(self.url, self.storage_options, read_only=True),
                mode="r",
                zarr_format=3,
            )
            arrays = {name: group[name] for name in names}
        self._arrays, self._pid = arrays, os.getpid()
        return arrays

    def _read(self, name: str, index: slice | np.ndarray) -> np.ndarray:
        arr = self._open()[name]
        if self.backend == "tensorstore":
            return np.asarray(arr[index].read().result())
        if isinstance(index, slice):
            return np.asarray(arr[index])
        return np.asarray(arr.get_orthogonal_selection((index,)))

    def read_range(
        self, start: int, stop: int, fields: Sequence[str] = ("prompt", "query", "mask", "kind")
    ) -> dict[str, np.ndarray]:
        """Samples ``[start, stop)``: the fastest access (contiguous, whole shards ideally)."""
        sl = slice(start, stop)
        return {f: self._read(f if f in PIXEL_ARRAYS else f"meta/{f}", sl) for f in fields}

    def read_indices(
        self, indices: Sequence[int], fields: Sequence[str] = ("prompt", "query", "mask", "kind")
    ) -> dict[str, np.ndarray]:
        """Samples at arbitrary ``indices`` (in the given order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return {f: np.empty((0,)) for f in fields}
        order = np.argsort(idx, kind="stable")
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        sorted_idx = idx[order]
        in_order = bool(np.all(idx[1:] >= idx[:-1]))  # sorted already: skip the reorder copy
        out = {}
        for f in fields:
            name = f if f in PIXEL_ARRAYS else f"meta/{f}"
            data = self._read(name, sorted_idx)
            out[f] = data if in_order else data[inv]
        return out

    def meta(self) -> dict[str, np.ndarray]:
        """All per-sample metadata arrays (small: read whole)."""
        return {m: self._read(f"meta/{m}", slice(0, self.layout.n)) for m in META_FIELDS}

    def completed_shards(self) -> dict[int, dict[str, Any]]:
        return shard_records(self.url, storage_options=self.storage_options)
