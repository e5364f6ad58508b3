"""Format 2 stores as synth wrote them before format 3, made with zarr-python alone.

Format 2 (``docs/store-format.md``, "Format 2"): ``prompt``, ``query`` (N, H, W, 3) and ``mask``
(N, H, W) sharded with one sample per inner chunk, ``meta/*`` one chunk per shard, the store's
codec everywhere, and one JSON record per shard under ``_synth/shards/``. The readers, ``synth
convert`` and the loader benchmark's "before" stores are tested against these. The bytes match
what synth 80d5d6e wrote for the same samples (checked once against that commit: every object
of a toy store equal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from synth import store as zs

LEGACY_DIMENSIONS = ("sample", "y", "x", "channel")


def create_format2_store(url: str, layout: zs.Layout, attrs: dict[str, Any]) -> None:
    """An empty format 2 store at local path ``url`` (every array, no shard)."""
    group = zarr.open_group(url, mode="w", zarr_format=3)
    H, W, S, N = layout.height, layout.width, layout.shard_size, layout.n
    for name in zs.LEGACY_PIXEL_ARRAYS:
        tail = (H, W) if name == "mask" else (H, W, 3)
        group.create_array(
            name,
            shape=(N, *tail),
            dtype="uint8",
            chunks=(1, *tail),
            shards=(S, *tail),
            compressors=layout.codec.zarr_compressors("uint8"),
            fill_value=0,
            dimension_names=LEGACY_DIMENSIONS[: 1 + len(tail)],
        )
    meta = group.create_group("meta")
    for name, (dtype, tail, fill) in zs.META_FIELDS.items():
        meta.create_array(
            name,
            shape=(N, *tail),
            dtype=dtype,
            chunks=(S, *tail),
            compressors=layout.codec.zarr_compressors(dtype),
            fill_value=fill,
        )
    group.attrs["synth"] = {"format_version": 2, "layout": layout.to_dict(), **attrs}


def write_format2_shard(
    url: str, shard: int, arrays: dict[str, np.ndarray], record: dict[str, Any]
) -> None:
    """Every array's slice of ``shard`` (``prompt``, ``query``, ``mask``, meta), then its record."""
    group = zarr.open_group(url, mode="r+")
    start, stop = zs.layout_of(group.attrs["synth"]).shard_range(shard)
    for name in (*zs.LEGACY_PIXEL_ARRAYS, *(f"meta/{m}" for m in zs.META_FIELDS)):
        group[name][start:stop] = arrays[name.removeprefix("meta/")]
    path = Path(url) / zs.LEGACY_MARKER_DIR / f"{shard:06d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, sort_keys=True, indent=1))


def write_format2_toy_store(
    url: str,
    n: int,
    size: int = 32,
    shard_size: int = 8,
    seed: int = 0,
    codec: zs.Codec | None = None,
    skip_shards: tuple[int, ...] = (),
) -> zs.Layout:
    """The toy triples of ``store_fixture.write_toy_store`` as a format 2 store.

    Shards in ``skip_shards`` are not written (an unfinished store). Shard 0's record lists a
    skipped input used twice, in format 2's one-entry-per-use form.
    """
    from tests.train.store_fixture import KINDS, load_textures, toy_shard

    layout = zs.Layout(n, size, size, shard_size, codec or zs.Codec("blosc-lz4", 9))
    attrs = {"kinds": list(KINDS), "manifest_hash": "0123456789abcdef", "toy": {"seed": seed}}
    create_format2_store(url, layout, attrs)
    textures = load_textures()
    for shard in range(layout.n_shards):
        if shard in skip_shards:
            continue
        arrays, record = toy_shard(layout, shard, seed, textures)
        if shard == 0:
            bad = {"input": "toy[3]", "reason": "toy.png: cannot decode image; replace it"}
            uses = [{"index": 0, "attempt": 0}, {"index": 1, "attempt": 2}]
            record["skipped"] = [{**use, **bad} for use in uses]
        write_format2_shard(url, shard, arrays, record)
    return layout
