"""The one Zarr v3 store layout: the builder writes through it and the loader reads through it.

Layout (format version 3, documented in ``docs/store-format.md``)::

    STORE/zarr.json              group; attributes["synth"] (layout + provenance), consolidated
                                 metadata of every node below
    STORE/images                 uint8 (N, 2, H, W, 3)  role 0 = prompt, 1 = query
                                 chunk (1, 2, H, W, 3), shard (S, 2, H, W, 3), each chunk stored
                                 row-interleaved (``transpose`` codec) so the codec sees the
                                 query next to the prompt it copies
    STORE/mask                   uint8 (N, H, W)     chunk (1, H, W)     shard (S, H, W)
    STORE/meta/<field>           per-sample metadata, (N,) or (N, 4), one chunk per shard
    STORE/build/records          uint8 (n_shards, R): row s is shard s's record (JSON, zero
                                 padded), written after every other object of the shard
    STORE/build/source_problems  uint8 (L,): JSON list of the inputs the sources rejected when
                                 they were indexed

Every object is a Zarr node or chunk, so no Zarr reader meets a foreign object. Codecs are
portable (``transpose``, ``bytes`` and one of ``zstd``, ``blosc`` lz4 or nothing, inside
``sharding_indexed``) so tensorstore and any Zarr v3 reader open the arrays without synth. One
task writes one whole shard of every array, once, and the shard's row of ``build/records``
last: a shard counts as present only when that row's chunk exists. ``write_shard`` encodes the
objects itself (``shard_objects``, ``encode_shard``) to the bytes zarr-python would write,
without zarr-python's per-array and per-chunk overhead, and falls back to zarr-python for a
store whose array metadata differs from the layout. Format 1 and 2 stores (``prompt`` and
``query`` arrays, JSON records under ``_synth/``) are read, never written.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.errors import SynthError

FORMAT_VERSION = 3
#: Versions this synth reads: 1 is version 2 with ``layout.zstd_level`` instead of
#: ``layout.codec``; 1 and 2 keep prompt and query in arrays of their own.
READABLE_FORMATS = (1, 2, 3)
#: What a reader returns per sample, whatever the format.
PIXEL_FIELDS = ("prompt", "query", "mask")
#: The roles of ``images``' second axis.
ROLES = ("prompt", "query")
IMAGES = "images"
PIXEL_ARRAYS = (IMAGES, "mask")
LEGACY_PIXEL_ARRAYS = ("prompt", "query", "mask")
#: ``transpose`` order of an ``images`` chunk: (sample, role, y, x, channel) is stored as
#: (sample, y, role, x, channel), each prompt row followed by the same query row.
IMAGE_STORAGE_ORDER = (0, 2, 1, 3, 4)
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
#: The arrays of a shard's samples, as paths under the root, in the order ``write_shard``
#: writes them (its ``RECORDS`` row follows them all).
ARRAY_NAMES = (*PIXEL_ARRAYS, *(f"meta/{m}" for m in META_FIELDS))
RECORDS = "build/records"
SOURCE_PROBLEMS = "build/source_problems"
#: Bytes of a shard record: a fixed part plus a share per sample for its skipped inputs.
RECORD_BASE_NBYTES = 64 << 10
RECORD_SAMPLE_NBYTES = 256
#: Where format 1 and 2 stores keep their completion records (one JSON file per shard).
LEGACY_MARKER_DIR = "_synth/shards"
DIMENSIONS: dict[str, tuple[str, ...]] = {
    IMAGES: ("sample", "role", "y", "x", "channel"),
    "mask": ("sample", "y", "x"),
    RECORDS: ("shard", "record_byte"),
    SOURCE_PROBLEMS: ("problem_byte",),
}

#: Offset and length of an inner chunk missing from a shard (all fill value, never stored).
SHARD_MISSING = 2**64 - 1
#: Bytes per inner chunk in a shard index: (offset, nbytes) as little-endian uint64.
SHARD_INDEX_ENTRY_NBYTES = 16
#: Bytes of the crc32c that follows the index at the end of a shard.
SHARD_CHECKSUM_NBYTES = 4

#: Lossless chunk codecs a store may use: name -> (lowest level, highest level, default level).
#: ``zstd`` at level 2 is the default: on real photos its format-3 store holds 1.95x fewer bytes
#: than a format-2 lz4 store, the loader still decodes over 3,000 triples/s per core, and it
#: encodes in half of level 3's time for 2% more bytes; ``blosc-lz4`` decodes 3x faster for
#: 1.1x the bytes (``docs/store-format.md``, ``benchmarks/codecs.py``).
CODECS: dict[str, tuple[int, int, int]] = {
    "blosc-lz4": (1, 9, 9),
    "zstd": (0, 22, 2),
    "none": (0, 0, 0),
}
DEFAULT_CODEC = "zstd"


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

    @classmethod
    def parse(cls, text: str) -> Codec:
        """``zstd``, ``zstd-3``, ``blosc-lz4-9``, ``none``: a codec name, optionally ``-LEVEL``."""
        name, _, level = text.rpartition("-")
        if not level.isdigit():
            return cls.of(text)
        return cls.of(name, int(level))

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


#: Records and the source-problem list are small JSON documents: always zstd, whatever the
#: store's codec (their zero padding then costs nothing).
RECORD_CODEC = Codec("zstd", 3)


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

    @property
    def record_nbytes(self) -> int:
        """Bytes of a shard's row of ``build/records`` (``encode_record`` trims to fit)."""
        return RECORD_BASE_NBYTES + RECORD_SAMPLE_NBYTES * self.shard_size

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


def pixel_arrays(format_version: int) -> tuple[str, ...]:
    """The pixel arrays of a store of ``format_version``."""
    return PIXEL_ARRAYS if format_version >= 3 else LEGACY_PIXEL_ARRAYS


def field_location(format_version: int, field: str) -> tuple[str, int | None]:
    """(array path, role or None) that holds pixel field ``field`` in a store of that format."""
    if field in ROLES and format_version >= 3:
        return IMAGES, ROLES.index(field)
    if field in PIXEL_FIELDS:
        return field, None
    return f"meta/{field}", None


def empty_images(n: int, height: int, width: int) -> np.ndarray:
    """An uninitialised ``images`` block of ``n`` samples, laid out in storage order.

    The result is indexed (sample, role, y, x, channel) like the array; its memory is in the
    order the ``transpose`` codec stores, so ``write_shard`` encodes each sample without a copy.
    """
    storage = np.empty((n, height, 2, width, 3), np.uint8)
    return storage.transpose(np.argsort(IMAGE_STORAGE_ORDER))


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
    source_problems: Sequence[Mapping[str, str]] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Create an empty store (all arrays, no shards) at ``url``, replacing anything there.

    ``source_problems`` is the list ``build/source_problems`` holds (None: not known, e.g. a
    store converted from format 2). The root's consolidated metadata is written last: no array
    metadata changes after this, so it stays true for the store's life.
    """
    import zarr

    fs, root = filesystem(url, storage_options)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    store = _zarr_store(url, storage_options, read_only=False)
    group = zarr.open_group(store=store, mode="w", zarr_format=3)
    for name in (*PIXEL_ARRAYS, RECORDS):
        dtype, tail, fill = _array_spec(layout, name)
        inner = _inner_chunk(layout, name)
        group.create_array(
            name,
            shape=(layout.n_shards if name == RECORDS else layout.n, *tail),
            dtype=dtype,
            chunks=inner if name == RECORDS else (1, *tail),
            shards=None if name == RECORDS else (layout.shard_size, *tail),
            filters=_zarr_filters(name),
            compressors=_codec_of(layout, name).zarr_compressors(dtype),
            fill_value=fill,
            dimension_names=DIMENSIONS[name],
        )
    meta = group.create_group("meta")
    for name, (dtype, tail, fill) in META_FIELDS.items():
        meta.create_array(
            name,
            shape=(layout.n, *tail),
            dtype=dtype,
            chunks=(layout.shard_size, *tail),
            compressors=layout.codec.zarr_compressors(dtype),
            fill_value=fill,
            dimension_names=("sample", "box")[: 1 + len(tail)],
        )
    problems = json.dumps(
        None if source_problems is None else [dict(p) for p in source_problems],
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    group.create_array(
        SOURCE_PROBLEMS,
        shape=(len(problems),),
        dtype="uint8",
        chunks=(len(problems),),
        compressors=RECORD_CODEC.zarr_compressors("uint8"),
        fill_value=0,
        dimension_names=DIMENSIONS[SOURCE_PROBLEMS],
    )[:] = np.frombuffer(problems, np.uint8)
    group.attrs["synth"] = {
        "format_version": FORMAT_VERSION,
        "layout": layout.to_dict(),
        **dict(attrs),
    }
    with warnings.catch_warnings():
        # Consolidated metadata is zarr-python's extension of Zarr v3; xarray warns on every
        # open without it, tensorstore ignores it.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store)


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
    """Merge ``values`` into the store's ``synth`` attributes (one writer: the build's client).

    The root ``zarr.json`` is rewritten whole, its consolidated metadata kept as it is.
    """
    fs, root = filesystem(url, storage_options)
    path = f"{root.rstrip('/')}/zarr.json"
    doc = json.loads(fs.cat_file(path))
    doc["attributes"]["synth"] = {**doc["attributes"]["synth"], **dict(values)}
    _put_objects(fs, {path: json.dumps(doc, indent=2).encode()})


def write_shard(
    url: str,
    shard: int,
    arrays: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write every array's slice of ``shard`` whole, then the shard's record.

    ``arrays`` holds ``images`` (see ``empty_images``), ``mask`` and every ``META_FIELDS``
    name, each with exactly the shard's number of samples. Writing the record last makes a
    shard count only once all its bytes are in place; a rerun simply rewrites the same bytes.
    Each task writes only its own shard's objects, so concurrent tasks never share one.

    The objects are encoded here (``shard_objects``), byte for byte what zarr-python writes,
    each written once and atomically; a store whose array metadata is not the layout
    ``create_store`` makes is written through zarr-python instead.

    Raises:
        SynthError: the store is not format 3 (synth writes no other).
    """
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    attrs = json.loads(fs.cat_file(f"{root}/zarr.json"))["attributes"]["synth"]
    if attrs.get("format_version") != FORMAT_VERSION:
        raise SynthError(
            f"{url}: a format {attrs.get('format_version')} store; this synth writes format "
            f"{FORMAT_VERSION} only: convert it with 'synth convert' or rebuild it"
        )
    layout = layout_of(attrs)
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
        key, payload = record_object(layout, shard, record)
        _put_objects(fs, {f"{root}/{key}": payload})
    else:
        warnings.warn(
            f"{url}: {mismatch}; writing through zarr-python (slower)", RuntimeWarning, stacklevel=2
        )
        _write_shard_zarr(url, shard, arrays, record, storage_options=storage_options)


def _write_shard_zarr(
    url: str,
    shard: int,
    arrays: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write every array's slice of ``shard``, then its record, through zarr-python."""
    import zarr

    store = _zarr_store(url, storage_options, read_only=False)
    # The arrays' own metadata, not the consolidated copy: this path serves stores whose
    # array metadata was changed after they were made.
    group = zarr.open_group(store=store, mode="r+", zarr_format=3, use_consolidated=False)
    layout = layout_of(group.attrs["synth"])
    start, stop = layout.shard_range(shard)
    for name in ARRAY_NAMES:
        group[name][start:stop] = arrays[name.removeprefix("meta/")]
    records = group[RECORDS]
    records[shard] = np.frombuffer(encode_record(record, records.shape[1]), np.uint8)


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
        encode = chunk_encoder(layout.codec, dtype, _storage_order(name))
        key = f"{name}/c/{shard}" + "/0" * len(tail)
        if name in PIXEL_ARRAYS:  # fill value 0
            present = data.reshape(n, -1).any(axis=1)
            chunks = [encode(data[i : i + 1]) if present[i] else None for i in range(n)]
            out[key] = encode_shard(chunks + [None] * (S - n))
        else:
            chunk = np.full((S, *tail), fill, dtype=dtype)
            chunk[:n] = data
            out[key] = None if np.all(chunk == fill) else encode(chunk)
    return out


def chunk_encoder(
    codec: Codec, dtype: str | np.dtype, order: Sequence[int] | None = None
) -> Callable[[np.ndarray], bytes]:
    """Encoder of one chunk of ``dtype``: ``transpose`` to ``order`` if given, ``bytes`` (little
    endian, C order), then ``codec``."""
    dt = np.dtype(dtype)
    compressor = codec.numcodecs(dt.itemsize)
    if codec.name == "blosc-lz4":
        from numcodecs import blosc

        blosc.use_threads = False  # as zarr-python sets on import; one core per task
    le = dt.newbyteorder("<")

    def encode(chunk: np.ndarray) -> bytes:
        if order is not None:
            chunk = chunk.transpose(order)
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


# --- shard records -----------------------------------------------------------------------------


def encode_record(record: Mapping[str, Any], nbytes: int) -> bytes:
    """``record`` as compact JSON zero-padded to ``nbytes`` (a row of ``build/records``).

    A record too long for its row keeps its counts exact: the last skipped inputs are dropped
    from the list and counted under ``omitted`` (inputs and uses) instead.
    """
    rec = dict(record)
    skipped = list(rec.get("skipped", []))
    omitted = dict(rec.get("omitted", {"inputs": 0, "uses": 0}))
    while True:
        if skipped or "skipped" in rec:
            rec["skipped"] = skipped
        if omitted["inputs"]:
            rec["omitted"] = omitted
        blob = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
        if len(blob) <= nbytes:
            return blob + bytes(nbytes - len(blob))
        if not skipped:
            raise ValueError(f"shard record of {len(blob)} bytes does not fit {nbytes}")
        dropped = skipped.pop()
        omitted = {"inputs": omitted["inputs"] + 1, "uses": omitted["uses"] + len(dropped["uses"])}


def decode_record(row: bytes) -> dict[str, Any]:
    """The record of one ``build/records`` row (``encode_record``'s inverse)."""
    return json.loads(bytes(row).rstrip(b"\0"))


def record_object(layout: Layout, shard: int, record: Mapping[str, Any]) -> tuple[str, bytes]:
    """(store key, object bytes) of ``shard``'s row of ``build/records``."""
    row = np.frombuffer(encode_record(record, layout.record_nbytes), np.uint8)
    return f"{RECORDS}/c/{shard}/0", chunk_encoder(RECORD_CODEC, "uint8")(row)


def shard_records(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> dict[int, dict[str, Any]]:
    """Records of the shards present in the store, keyed by shard number (any format)."""
    fs, root = filesystem(url, storage_options)
    paths = _record_paths(fs, root.rstrip("/"))
    if not paths:
        return {}
    blobs = fs.cat(list(paths.values()), on_error="raise")
    if paths[min(paths)].endswith(".json"):
        return {s: legacy_record(json.loads(blobs[p])) for s, p in sorted(paths.items())}
    decoder = _decoder(RECORD_CODEC)
    return {s: decode_record(decoder(blobs[p])) for s, p in sorted(paths.items())}


def present_shards(url: str, *, storage_options: Mapping[str, Any] | None = None) -> set[int]:
    """The shards whose record exists (listed, not read)."""
    fs, root = filesystem(url, storage_options)
    return set(_record_paths(fs, root.rstrip("/")))


def _record_paths(fs: Any, root: str) -> dict[int, str]:
    """Shard -> path of its record object: ``build/records`` chunks (format 3) or, where there
    are none, ``_synth/shards/NNNNNN.json`` files (format 1/2; a store never holds both)."""
    out: dict[int, str] = {}
    for base in (f"{root}/{RECORDS}/c", f"{root}/{LEGACY_MARKER_DIR}"):
        fs.invalidate_cache(base)  # other processes wrote them: no listing from before
        try:
            paths = fs.find(base)
        except FileNotFoundError:
            continue
        for path in paths:
            rel = path.removeprefix(base).strip("/")
            shard, _, col = rel.partition("/")
            if base.endswith("/c") and shard.isdigit() and col == "0":
                out[int(shard)] = path
            elif rel.endswith(".json") and rel[:-5].isdigit():
                out[int(rel[:-5])] = path
        if out:
            break
    return out


def _decoder(codec: Codec) -> Callable[[bytes], bytes]:
    compressor = codec.numcodecs()
    return (lambda b: b) if compressor is None else (lambda b: bytes(compressor.decode(b)))


def group_skipped(uses: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Skipped uses (``index``, ``attempt``, ``input``, ``reason`` each) as a record lists them:
    one ``{input, reason, uses: [[index, attempt], ...]}`` per input, sorted by input."""
    grouped: dict[str, dict[str, Any]] = {}
    for s in uses:
        entry = grouped.setdefault(s["input"], {"input": s["input"], "reason": s["reason"]})
        entry.setdefault("uses", []).append([s["index"], s["attempt"]])
    return [grouped[k] for k in sorted(grouped)]


def legacy_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A format 2 record (``skipped``: one entry per use) in the format 3 shape."""
    return {**record, "skipped": group_skipped(record.get("skipped", []))}


def read_source_problems(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, str]] | None:
    """The inputs the sources rejected when indexed (None: not recorded, as in format 1/2)."""
    fs, root = filesystem(url, storage_options)
    try:
        blob = fs.cat_file(f"{root.rstrip('/')}/{SOURCE_PROBLEMS}/c/0")
    except FileNotFoundError:
        return None
    return json.loads(_decoder(RECORD_CODEC)(blob))


def store_bytes(url: str, *, storage_options: Mapping[str, Any] | None = None) -> int:
    """Bytes of every object under the store (0 where the filesystem cannot tell)."""
    fs, root = filesystem(url, storage_options)
    try:
        return int(fs.du(root))
    except (FileNotFoundError, NotImplementedError):
        return 0


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


# --- the layout as array metadata --------------------------------------------------------------


def _array_spec(layout: Layout, name: str) -> tuple[str, tuple[int, ...], int]:
    """(dtype, trailing shape, fill value) of array ``name`` of a store of ``layout``."""
    hw = (layout.height, layout.width)
    if name == IMAGES:
        return "uint8", (2, *hw, 3), 0
    if name == "mask":
        return "uint8", hw, 0
    if name == RECORDS:
        return "uint8", (layout.record_nbytes,), 0
    return META_FIELDS[name.removeprefix("meta/")]


def _inner_chunk(layout: Layout, name: str) -> tuple[int, ...]:
    """The chunk ``name``'s codecs see: one sample (pixels), one shard (meta), one record."""
    _, tail, _ = _array_spec(layout, name)
    if name in PIXEL_ARRAYS or name == RECORDS:
        return (1, *tail)
    return (layout.shard_size, *tail)


def _storage_order(name: str) -> tuple[int, ...] | None:
    return IMAGE_STORAGE_ORDER if name == IMAGES else None


def _codec_of(layout: Layout, name: str) -> Codec:
    return RECORD_CODEC if name == RECORDS else layout.codec


def _zarr_filters(name: str) -> tuple[Any, ...]:
    from zarr.codecs import TransposeCodec

    order = _storage_order(name)
    return () if order is None else (TransposeCodec(order=order),)


def _expected_metadata(layout: Layout, name: str) -> dict[str, Any]:
    """The ``zarr.json`` fields that decide the bytes of array ``name``, as ``create_store`` writes
    them (``bytes`` codecs with their ``endian`` spelled out, see ``_normalized``)."""
    dtype, tail, fill = _array_spec(layout, name)
    order = _storage_order(name)
    transpose = [] if order is None else [{"name": "transpose", "configuration": {"order": order}}]
    codecs = [*transpose, _bytes_codec(), *_compressor_json(_codec_of(layout, name), dtype)]
    chunks = list(_inner_chunk(layout, name))
    shape = [layout.n_shards if name == RECORDS else layout.n, *tail]
    if name in PIXEL_ARRAYS:
        sharding = {
            "chunk_shape": chunks,
            "codecs": codecs,
            "index_codecs": [_bytes_codec(), {"name": "crc32c"}],
            "index_location": "end",
        }
        codecs = [{"name": "sharding_indexed", "configuration": sharding}]
        chunks = [layout.shard_size, *tail]
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
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
    (zarr-python omits it for one-byte types), ``transpose`` orders as lists and absent
    ``storage_transformers`` as none."""

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
    paths = {name: f"{root}/{name}/zarr.json" for name in (*ARRAY_NAMES, RECORDS)}
    try:
        docs = fs.cat(list(paths.values()), on_error="raise")
    except FileNotFoundError as e:
        return f"array metadata missing ({e})"
    for name, path in paths.items():
        want = json.loads(json.dumps(_expected_metadata(layout, name)))  # tuples as lists
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


# --- reading -----------------------------------------------------------------------------------


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
    """Random access to a synth store of any readable format from any process.

    Fields are ``prompt``, ``query``, ``mask`` and the ``META_FIELDS`` names whatever the
    format. The backend is tensorstore (``zarr3`` driver, several times faster per chunk) when
    it is installed and can address the URL, otherwise zarr-python. Handles are opened lazily
    and re-opened after a fork, so a reader may be created in a parent and used in DataLoader
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
        self.format_version: int = int(self.attrs["format_version"])
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
        names = (*pixel_arrays(self.format_version), *(f"meta/{m}" for m in META_FIELDS))
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

            # Each array's own metadata: a consolidated copy may predate edits made by hand.
            group = zarr.open_group(
                store=_zarr_store(self.url, self.storage_options, read_only=True),
                mode="r",
                zarr_format=3,
                use_consolidated=False,
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

    def _read_fields(
        self, fields: Sequence[str], index: slice | np.ndarray
    ) -> dict[str, np.ndarray]:
        """``fields`` at ``index``, each array read once (prompt and query share ``images``)."""
        located = {f: field_location(self.format_version, f) for f in fields}
        names = dict.fromkeys(a for a, _ in located.values())
        data = {name: self._read(name, index) for name in names}
        return {
            f: data[a] if role is None else np.ascontiguousarray(data[a][:, role])
            for f, (a, role) in located.items()
        }

    def read_range(
        self, start: int, stop: int, fields: Sequence[str] = ("prompt", "query", "mask", "kind")
    ) -> dict[str, np.ndarray]:
        """Samples ``[start, stop)``: the fastest access (contiguous, whole shards ideally)."""
        return self._read_fields(fields, slice(start, stop))

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
        in_order = bool(np.all(idx[1:] >= idx[:-1]))  # sorted already: skip the reorder copy
        data = self._read_fields(fields, idx[order])
        return data if in_order else {f: v[inv] for f, v in data.items()}

    def meta(self) -> dict[str, np.ndarray]:
        """All per-sample metadata arrays (small: read whole)."""
        return self._read_fields(list(META_FIELDS), slice(0, self.layout.n))

    def completed_shards(self) -> dict[int, dict[str, Any]]:
        """The records of every complete shard (``shard_records``)."""
        return shard_records(self.url, storage_options=self.storage_options)

    def present_shards(self) -> set[int]:
        """The numbers of every complete shard (``present_shards``: no record is read)."""
        return present_shards(self.url, storage_options=self.storage_options)
