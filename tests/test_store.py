"""The store layout: round trips, shard records, both readers, plain-zarr interoperability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from synth import store as zs
from synth.errors import SynthError
from synth.train.fastread import LocalShardReader

CODECS = [zs.Codec("zstd", 3), zs.Codec("blosc-lz4", 9), zs.Codec("none", 0)]
#: the Zarr v3 codec names inside ``sharding_indexed`` of each store codec
INNER = {"zstd": ["bytes", "zstd"], "blosc-lz4": ["bytes", "blosc"], "none": ["bytes"]}


def _shard_arrays(layout: zs.Layout, shard: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    start, stop = layout.shard_range(shard)
    n, H, W = stop - start, layout.height, layout.width
    arrays = {
        "prompt": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "query": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "mask": rng.integers(0, 2, (n, H, W), dtype=np.uint8),
    }
    for name, (dtype, tail, _) in zs.META_FIELDS.items():
        arrays[name] = rng.integers(0, 100, (n, *tail)).astype(dtype)
    return arrays


@pytest.fixture()
def filled(tmp_path):
    layout = zs.Layout(n=10, height=24, width=32, shard_size=4)
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, layout, {"kinds": ["a", "b"]})
    rng = np.random.default_rng(0)
    written = {}
    for s in range(layout.n_shards):
        written[s] = _shard_arrays(layout, s, rng)
        zs.write_shard(url, s, written[s], {"shard": s, "start": s * 4, "stop": min(s * 4 + 4, 10)})
    full = {k: np.concatenate([written[s][k] for s in sorted(written)]) for k in written[0]}
    return url, layout, full


def test_layout_shard_ranges():
    lay = zs.Layout(n=10, height=8, width=8, shard_size=4)
    assert lay.n_shards == 3
    assert [lay.shard_range(s) for s in range(3)] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(IndexError):
        lay.shard_range(3)


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
def test_round_trip_both_backends(filled, backend):
    url, layout, full = filled
    r = zs.StoreReader(url, backend=backend)
    assert r.backend == backend
    got = r.read_range(0, layout.n, ("prompt", "query", "mask", "kind", "bbox"))
    for k in got:
        np.testing.assert_array_equal(got[k], full[k])
    idx = [9, 0, 5, 5]
    got = r.read_indices(idx, ("prompt", "mask", "seed"))
    for k in got:
        np.testing.assert_array_equal(got[k], full[k][idx])
    assert r.kinds == ["a", "b"]


def test_plain_zarr_opens_without_synth(filled):
    url, layout, full = filled
    g = zarr.open_group(url, mode="r")
    assert g["prompt"].shape == (10, 24, 32, 3)
    assert g["prompt"].shards == (4, 24, 32, 3) and g["prompt"].chunks == (1, 24, 32, 3)
    np.testing.assert_array_equal(g["mask"][:], full["mask"])
    np.testing.assert_array_equal(g["meta/mask_area"][:], full["mask_area"])


def test_shard_records_and_partials(filled, tmp_path):
    url, layout, _ = filled
    recs = zs.shard_records(url)
    assert sorted(recs) == [0, 1, 2] and recs[2]["stop"] == 10
    stray = tmp_path / "s.zarr" / "prompt" / "c" / "x.abc.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"junk")
    assert zs.remove_partials(url) == 1 and not stray.exists()


def test_wrong_shard_size_rejected(filled):
    url, layout, _ = filled
    arrays = _shard_arrays(layout, 0, np.random.default_rng(1))
    with pytest.raises(ValueError, match="shard 2"):
        zs.write_shard(url, 2, arrays, {})


def test_not_a_store(tmp_path):
    with pytest.raises(SynthError, match="not"):
        zs.read_attrs(str(tmp_path / "nothing"))
    zarr.open_group(str(tmp_path / "plain"), mode="w")
    with pytest.raises(SynthError, match="not a synth store"):
        zs.read_attrs(str(tmp_path / "plain"))


def test_reader_travels_to_spawned_workers(filled):
    import multiprocessing as mp

    url, _, full = filled
    r = zs.StoreReader(url)
    r.read_range(0, 2)  # the parent has open handles and I/O threads
    with mp.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_read_mask_sum, (r,))
    assert got == int(full["mask"].sum())


def test_reader_refuses_use_after_fork(filled, monkeypatch):
    url, _, _ = filled
    r = zs.StoreReader(url)
    r.read_range(0, 1)
    monkeypatch.setattr(zs.os, "getpid", lambda: -1)  # what a forked child would see
    with pytest.raises(SynthError, match="spawn"):
        r.read_range(0, 1)


def _read_mask_sum(reader: zs.StoreReader) -> int:
    return int(reader.read_range(0, len(reader), ("mask",))["mask"].sum())


def _fill(url: str, layout: zs.Layout) -> dict[str, np.ndarray]:
    """Write every shard of random samples (sample 1 all zero: its chunks are never written)."""
    rng = np.random.default_rng(0)
    written = [_shard_arrays(layout, s, rng) for s in range(layout.n_shards)]
    for name in zs.PIXEL_ARRAYS:
        written[0][name][1] = 0
    for s, arrays in enumerate(written):
        zs.write_shard(url, s, arrays, {"shard": s})
    return {k: np.concatenate([w[k] for w in written]) for k in written[0]}


@pytest.mark.parametrize("codec", CODECS, ids=str)
def test_every_codec_round_trips_through_every_reader(tmp_path, codec):
    layout = zs.Layout(n=10, height=24, width=32, shard_size=4, codec=codec)
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, layout, {"kinds": ["a"]})
    full = _fill(url, layout)
    assert zs.layout_of(zs.read_attrs(url)) == layout
    meta = json.loads((tmp_path / "s.zarr" / "query" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert [c["name"] for c in inner] == INNER[codec.name]
    idx = [9, 1, 0, 5, 5]
    for backend in ("zarr", "tensorstore"):
        r = zs.StoreReader(url, backend=backend)
        got = r.read_range(0, layout.n, ("prompt", "query", "mask", "kind", "bbox"))
        for k in got:
            np.testing.assert_array_equal(got[k], full[k], err_msg=f"{backend} {k}")
        got = r.read_indices(idx, ("prompt", "mask", "seed"))
        for k in got:
            np.testing.assert_array_equal(got[k], full[k][idx], err_msg=f"{backend} {k}")
    direct = LocalShardReader.open(url, zs.PIXEL_ARRAYS)
    assert direct is not None
    for k in zs.PIXEL_ARRAYS:
        out = np.full((len(idx), *full[k].shape[1:]), 7, np.uint8)
        direct.read_into(k, np.array(idx), out)
        np.testing.assert_array_equal(out, full[k][idx], err_msg=f"direct {k}")


def test_direct_reader_declines_codecs_it_does_not_decode(tmp_path):
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, zs.Layout(n=4, height=8, width=8, shard_size=2), {})
    meta_path = tmp_path / "s.zarr" / "prompt" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    for other in (
        {"name": "gzip", "configuration": {"level": 1}},
        {"name": "blosc", "configuration": {"cname": "snappy"}},
    ):
        inner[1:] = [other]
        meta_path.write_text(json.dumps(meta))
        assert LocalShardReader.open(url, ("prompt",)) is None
        assert LocalShardReader.open(url, ("mask",)) is not None


def test_format_1_stores_read_as_zstd(filled):
    url, layout, full = filled
    old = {**layout.to_dict(), "zstd_level": 3}
    del old["codec"]
    zs.update_attrs(url, {"format_version": 1, "layout": old})
    r = zs.StoreReader(url)
    assert r.layout.codec == zs.Codec("zstd", 3)
    np.testing.assert_array_equal(r.read_range(0, layout.n, ("mask",))["mask"], full["mask"])
    zs.update_attrs(url, {"format_version": 3})
    with pytest.raises(SynthError, match="store format 3 but this synth reads 1, 2"):
        zs.StoreReader(url)


def test_codec_names_and_levels_are_checked():
    assert zs.Layout(n=1, height=8, width=8, shard_size=1).codec == zs.Codec.of(zs.DEFAULT_CODEC)
    assert zs.Codec.of("zstd") == zs.Codec("zstd", 3) and str(zs.Codec.of("none")) == "none"
    with pytest.raises(SynthError, match="codec 'lz5': use one of blosc-lz4, zstd, none"):
        zs.Codec("lz5", 1)
    with pytest.raises(SynthError, match=r"codec blosc-lz4 level 0: outside 1..9"):
        zs.Codec("blosc-lz4", 0)
    with pytest.raises(SynthError, match=r"codec none level 3: outside 0..0"):
        zs.Codec("none", 3)
