"""The store layout: round trips, shard records, both readers, plain-zarr interoperability."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from synth import store as zs
from synth.errors import SynthError
from synth.train.fastread import LocalShardReader
from tests.conftest import store_digest
from tests.format2_fixture import write_format2_toy_store

CODECS = [zs.Codec("zstd", 3), zs.Codec("blosc-lz4", 9), zs.Codec("none", 0)]
#: the Zarr v3 codec names inside ``sharding_indexed`` of each store codec (``images``)
INNER = {
    "zstd": ["transpose", "bytes", "zstd"],
    "blosc-lz4": ["transpose", "bytes", "blosc"],
    "none": ["transpose", "bytes"],
}


def _shard_arrays(layout: zs.Layout, shard: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    start, stop = layout.shard_range(shard)
    n, H, W = stop - start, layout.height, layout.width
    arrays = {
        "images": rng.integers(0, 256, (n, 2, H, W, 3), dtype=np.uint8),
        "mask": rng.integers(0, 2, (n, H, W), dtype=np.uint8),
    }
    for name, (dtype, tail, _) in zs.META_FIELDS.items():
        arrays[name] = rng.integers(0, 100, (n, *tail)).astype(dtype)
    return arrays


def _fields(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` as a reader returns them: prompt and query apart."""
    out = {k: v for k, v in arrays.items() if k != "images"}
    return {**out, "prompt": arrays["images"][:, 0], "query": arrays["images"][:, 1]}


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
    return url, layout, _fields(full)


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
    assert g["images"].shape == (10, 2, 24, 32, 3)
    assert g["images"].shards == (4, 2, 24, 32, 3) and g["images"].chunks == (1, 2, 24, 32, 3)
    assert g["images"].metadata.dimension_names == ("sample", "role", "y", "x", "channel")
    np.testing.assert_array_equal(g["images"][:, 0], full["prompt"])
    np.testing.assert_array_equal(g["images"][:, 1], full["query"])
    np.testing.assert_array_equal(g["mask"][:], full["mask"])
    np.testing.assert_array_equal(g["meta/mask_area"][:], full["mask_area"])


def test_zarr_tensorstore_and_xarray_open_it_without_warnings_and_agree(filled):
    """No foreign object trips a reader: every node is Zarr, and the metadata is consolidated."""
    import warnings

    import tensorstore as ts
    import xarray as xr

    url, layout, full = filled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = zarr.open_group(url, mode="r")
        assert sorted(g.keys()) == ["build", "images", "mask", "meta"]
        ds = xr.open_zarr(url)
        meta = xr.open_zarr(url, group="meta")
        build = xr.open_zarr(url, group="build")
        for name in ("images", "mask"):
            spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{url}/{name}/"}}
            via_ts = np.asarray(ts.open(spec, read=True).result().read().result())
            np.testing.assert_array_equal(via_ts, g[name][:], err_msg=name)
            np.testing.assert_array_equal(ds[name].values, via_ts, err_msg=name)
    assert ds["images"].dims == ("sample", "role", "y", "x", "channel")
    np.testing.assert_array_equal(ds["images"].values[:, 1], full["query"])
    np.testing.assert_array_equal(meta["bbox"].values, full["bbox"])
    assert build["records"].dims == ("shard", "record_byte")
    row = build["records"].values[2].tobytes()
    assert zs.decode_record(row) == zs.shard_records(url)[2]


def test_shard_records_and_partials(filled, tmp_path):
    url, layout, _ = filled
    recs = zs.shard_records(url)
    assert sorted(recs) == [0, 1, 2] and recs[2]["stop"] == 10
    assert not (tmp_path / "s.zarr" / "_synth").exists()
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
    return _fields({k: np.concatenate([w[k] for w in written]) for k in written[0]})


@pytest.mark.parametrize("codec", CODECS, ids=str)
def test_every_codec_round_trips_through_every_reader(tmp_path, codec):
    layout = zs.Layout(n=10, height=24, width=32, shard_size=4, codec=codec)
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, layout, {"kinds": ["a"]})
    full = _fill(url, layout)
    assert zs.layout_of(zs.read_attrs(url)) == layout
    meta = json.loads((tmp_path / "s.zarr" / "images" / "zarr.json").read_text())
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
    direct = LocalShardReader.open(url, zs.PIXEL_FIELDS)
    assert direct is not None
    outs = {k: np.full((len(idx), *full[k].shape[1:]), 7, np.uint8) for k in zs.PIXEL_FIELDS}
    direct.read_into(np.array(idx), outs)
    for k in zs.PIXEL_FIELDS:
        np.testing.assert_array_equal(outs[k], full[k][idx], err_msg=f"direct {k}")
    query_only = {"query": np.zeros_like(outs["query"])}
    direct.read_into(np.array(idx), query_only)
    np.testing.assert_array_equal(query_only["query"], full["query"][idx])


def test_direct_reader_declines_codecs_it_does_not_decode(tmp_path):
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, zs.Layout(n=4, height=8, width=8, shard_size=2), {})
    meta_path = tmp_path / "s.zarr" / "images" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    for other in (
        {"name": "gzip", "configuration": {"level": 1}},
        {"name": "blosc", "configuration": {"cname": "snappy"}},
    ):
        inner[2:] = [other]
        meta_path.write_text(json.dumps(meta))
        assert LocalShardReader.open(url, ("prompt",)) is None
        assert LocalShardReader.open(url, ("mask",)) is not None
    inner[2:] = []
    inner[0]["configuration"]["order"] = [0, 1, 3, 2, 4]  # a transpose it does not undo
    meta_path.write_text(json.dumps(meta))
    assert LocalShardReader.open(url, ("query",)) is None


def test_format_1_stores_read_as_zstd(tmp_path):
    url = str(tmp_path / "old.zarr")
    layout = write_format2_toy_store(url, n=10, size=16, shard_size=4, codec=zs.Codec("zstd", 3))
    want = zs.StoreReader(url).read_range(0, layout.n, ("prompt", "mask"))
    old = {**layout.to_dict(), "zstd_level": 3}
    del old["codec"]
    zs.update_attrs(url, {"format_version": 1, "layout": old})
    r = zs.StoreReader(url)
    assert r.layout.codec == zs.Codec("zstd", 3) and r.format_version == 1
    got = r.read_range(0, layout.n, ("prompt", "mask"))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    zs.update_attrs(url, {"format_version": 4})
    with pytest.raises(SynthError, match="store format 4 but this synth reads 1, 2, 3"):
        zs.StoreReader(url)


def test_write_shard_refuses_a_format_2_store(tmp_path):
    url = str(tmp_path / "old.zarr")
    layout = write_format2_toy_store(url, n=8, size=16, shard_size=4, skip_shards=(1,))
    arrays = _shard_arrays(layout, 1, np.random.default_rng(0))
    with pytest.raises(SynthError, match="format 2 store; this synth writes format 3 only"):
        zs.write_shard(url, 1, arrays, {"shard": 1})
    assert sorted(zs.shard_records(url)) == [0]


def test_codec_names_and_levels_are_checked():
    assert zs.Layout(n=1, height=8, width=8, shard_size=1).codec == zs.Codec.of(zs.DEFAULT_CODEC)
    assert zs.Codec.of("zstd") == zs.Codec("zstd", 2) and str(zs.Codec.of("none")) == "none"
    with pytest.raises(SynthError, match="codec 'lz5': use one of blosc-lz4, zstd, none"):
        zs.Codec("lz5", 1)
    with pytest.raises(SynthError, match=r"codec blosc-lz4 level 0: outside 1..9"):
        zs.Codec("blosc-lz4", 0)
    with pytest.raises(SynthError, match=r"codec none level 3: outside 0..0"):
        zs.Codec("none", 3)


# --- the direct shard writer against zarr-python -------------------------------------------------


def _tree(root) -> dict[str, str]:
    """Every file (sha256) and directory under a local store, but the per-run logs."""
    root = Path(root)
    out = store_digest(root)
    out.update({p.relative_to(root).as_posix() + "/": "dir" for p in root.rglob("*") if p.is_dir()})
    return out


def _varied_shards(layout: zs.Layout, seed: int) -> list[dict[str, np.ndarray]]:
    """Photo-like shards with what ``write_empty_chunks=False`` treats specially: a shard of
    all-zero masks, all-zero samples, metadata chunks of fill values only (one the padded last)."""
    rng = np.random.default_rng(seed)
    shards = []
    for s in range(layout.n_shards):
        arrays = _shard_arrays(layout, s, rng)
        blocks = rng.integers(
            0, 256, (len(arrays["images"]), layout.height // 8, layout.width // 8, 3)
        )
        arrays["images"][:, 0] = blocks.repeat(8, 1).repeat(8, 2)  # compressible
        arrays["mask"] = (arrays["mask"] * (rng.random(arrays["mask"].shape) < 0.1)).astype(
            np.uint8
        )
        for name, (_, _, fill) in zs.META_FIELDS.items():
            if rng.random() < 0.3:
                arrays[name][:] = fill
        shards.append(arrays)
    shards[seed % layout.n_shards]["mask"][:] = 0
    shards[-1]["texture_index"][:] = -1  # padded to a whole chunk of fill values: no object
    shards[0]["images"][1] = 0
    shards[0]["images"][-1] = 0
    shards[1]["images"][0, 1] = shards[1]["images"][0, 0]  # an identical pair
    return shards


def _write_both(direct: str, reference: str, shards: dict[int, dict[str, np.ndarray]]) -> None:
    """Write ``shards`` (and the same records) with ``write_shard`` to ``direct`` and through
    zarr-python to ``reference``."""
    for s, arrays in shards.items():
        record = {"shard": s, "skipped": [{"input": "x[1]", "reason": "r", "uses": [[s, 0]]}]}
        zs.write_shard(direct, s, arrays, record)
        zs._write_shard_zarr(reference, s, arrays, record)


@pytest.fixture()
def no_fallback(monkeypatch):
    """Fail a test whose ``write_shard`` would fall back to zarr-python."""

    def refuse(*args, **kwargs):
        raise AssertionError("write_shard fell back to zarr-python")

    real = zs._write_shard_zarr
    monkeypatch.setattr(zs, "_write_shard_zarr", refuse)
    return real


@pytest.mark.parametrize("codec", CODECS, ids=str)
def test_direct_writer_is_byte_identical_to_zarr_python(tmp_path, codec, monkeypatch):
    layout = zs.Layout(n=11, height=24, width=32, shard_size=4, codec=codec)
    direct, ref = str(tmp_path / "direct.zarr"), str(tmp_path / "ref.zarr")
    for url in (direct, ref):
        zs.create_store(url, layout, {"kinds": ["a"]})
    calls = []
    real = zs._write_shard_zarr
    monkeypatch.setattr(zs, "_write_shard_zarr", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = _varied_shards(layout, 0)
    _write_both(direct, ref, dict(enumerate(first)))
    assert len(calls) == layout.n_shards  # only the reference's writes went through zarr-python
    tree = _tree(direct)
    assert tree == _tree(ref)
    assert "mask/c/0/0/0" not in tree and "meta/texture_index/c/2" not in tree
    assert "images/c/0/0/0/0/0" in tree and "meta/kind/c/2" in tree
    assert {f"build/records/c/{s}/0" for s in range(layout.n_shards)} <= set(tree)
    # resume: a rewrite of the same shard leaves the same bytes
    zs.write_shard(direct, 1, first[1], {"shard": 1, "skipped": [first_skip(1)]})
    assert _tree(direct) == tree
    # rewritten with other content: objects that become all fill are deleted in both stores
    second = _varied_shards(layout, 1)
    _write_both(direct, ref, dict(enumerate(second)))
    assert _tree(direct) == _tree(ref) != tree
    assert "mask/c/0/0/0" in _tree(direct) and "mask/c/1/0/0" not in _tree(direct)


def first_skip(shard: int) -> dict[str, object]:
    """The skipped input ``_write_both`` records for ``shard``."""
    return {"input": "x[1]", "reason": "r", "uses": [[shard, 0]]}


def test_direct_writer_readers_agree(tmp_path, no_fallback):
    ts = pytest.importorskip("tensorstore")
    layout = zs.Layout(n=11, height=24, width=32, shard_size=4)
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, layout, {})
    shards = _varied_shards(layout, 2)
    for s, arrays in enumerate(shards):
        zs.write_shard(url, s, arrays, {"shard": s})
    g = zarr.open_group(url, mode="r")
    for name in zs.ARRAY_NAMES:
        want = np.concatenate([a[name.removeprefix("meta/")] for a in shards])
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{url}/{name}/"}}
        np.testing.assert_array_equal(g[name][:], want, err_msg=f"zarr {name}")
        got = ts.open(spec, read=True).result()[:].read().result()
        np.testing.assert_array_equal(got, want, err_msg=f"tensorstore {name}")


def _edit_images_level(meta: dict) -> None:
    meta["codecs"][0]["configuration"]["codecs"][2]["configuration"]["level"] = 5


def _edit_seed_fill(meta: dict) -> None:
    meta["fill_value"] = 7


def _edit_mask_separator(meta: dict) -> None:
    meta["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "."}}


@pytest.mark.parametrize(
    ("array", "edit"),
    [
        ("images", _edit_images_level),
        ("meta/seed", _edit_seed_fill),
        ("mask", _edit_mask_separator),
    ],
    ids=["level", "fill", "separator"],
)
def test_other_array_metadata_falls_back_to_zarr_python(tmp_path, monkeypatch, array, edit):
    layout = zs.Layout(n=6, height=16, width=16, shard_size=4)
    urls = {k: str(tmp_path / f"{k}.zarr") for k in ("fallback", "ref", "forced")}
    for url in urls.values():
        zs.create_store(url, layout, {})
        path = tmp_path / f"{url}/{array}/zarr.json"
        meta = json.loads(path.read_text())
        edit(meta)
        path.write_text(json.dumps(meta))
    shards = dict(enumerate(_varied_shards(layout, 4)))
    shards[1]["seed"][:] = 3  # not the edited fill value: the padded last chunk is written
    with pytest.warns(RuntimeWarning, match=f"array {array}: metadata differs"):
        _write_both(urls["fallback"], urls["ref"], shards)
    assert _tree(urls["fallback"]) == _tree(urls["ref"])
    assert zarr.open_group(urls["fallback"], mode="r")[array][:].shape[0] == layout.n
    # the fallback matters: the direct encoder, forced, writes other bytes into such a store
    monkeypatch.setattr(zs, "_layout_mismatch", lambda *a: None)
    for s, arrays in shards.items():
        zs.write_shard(urls["forced"], s, arrays, {"shard": s, "skipped": [first_skip(s)]})
    assert _tree(urls["forced"]) != _tree(urls["ref"])


def test_shard_encoding_round_trips_through_the_index():
    chunks = [b"abc", None, b"", b"defgh"]
    blob = zs.encode_shard(chunks)
    index = np.frombuffer(blob[-zs.shard_index_nbytes(4) : -zs.SHARD_CHECKSUM_NBYTES], "<u8")
    missing = zs.SHARD_MISSING
    assert index.reshape(4, 2).tolist() == [[0, 3], [missing, missing], [missing, missing], [3, 5]]
    assert blob[:8] == b"abcdefgh"
    assert zs.encode_shard([None, None]) is None


def test_direct_writer_on_object_storage(moto_s3, tmp_path, no_fallback):
    import fsspec

    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": moto_s3}}
    layout = zs.Layout(n=6, height=16, width=16, shard_size=4)
    direct, ref = "s3://synth-test/direct.zarr", str(tmp_path / "ref.zarr")
    zs.create_store(direct, layout, {}, storage_options=opts)
    zs.create_store(ref, layout, {})
    for seed in (5, 6):  # the second round rewrites, deleting objects that became all fill
        for s, arrays in enumerate(_varied_shards(layout, seed)):
            zs.write_shard(direct, s, arrays, {"shard": s}, storage_options=opts)
            no_fallback(ref, s, arrays, {"shard": s})
    fs = fsspec.filesystem("s3", **opts)
    fs.invalidate_cache()
    remote = {
        p.removeprefix("synth-test/direct.zarr/"): hashlib.sha256(fs.cat_file(p)).hexdigest()
        for p in fs.find("synth-test/direct.zarr")
    }
    assert remote == store_digest(ref)
    assert sorted(zs.shard_records(direct, storage_options=opts)) == [0, 1]


# --- shard records ---------------------------------------------------------------------------


def test_a_shard_without_its_record_does_not_count(tmp_path, monkeypatch):
    """The record is the last object a shard task writes: a task killed before it leaves a
    shard that is not complete, and the rerun rewrites it whole."""
    layout = zs.Layout(n=8, height=8, width=8, shard_size=4)
    url = str(tmp_path / "s.zarr")
    zs.create_store(url, layout, {})
    arrays = _shard_arrays(layout, 1, np.random.default_rng(3))
    real = zs._put_objects

    def die_at_the_record(fs, objects):
        if any(zs.RECORDS in k for k in objects):
            raise KeyboardInterrupt("killed")
        real(fs, objects)

    monkeypatch.setattr(zs, "_put_objects", die_at_the_record)
    with pytest.raises(KeyboardInterrupt):
        zs.write_shard(url, 1, arrays, {"shard": 1})
    assert (tmp_path / "s.zarr" / "images" / "c" / "1").exists()
    assert zs.shard_records(url) == {}
    assert zarr.open_group(url, mode="r")["build/records"][1].sum() == 0
    monkeypatch.setattr(zs, "_put_objects", real)
    zs.write_shard(url, 1, arrays, {"shard": 1, "kinds": {"a": 4}})
    assert zs.shard_records(url) == {1: {"shard": 1, "kinds": {"a": 4}}}


def test_a_record_too_long_for_its_row_keeps_exact_counts():
    skipped = [
        {"input": f"coco[{i}]", "reason": "x" * 200, "uses": [[i, 0], [i, 1]]} for i in range(40)
    ]
    record = {"shard": 0, "skipped": skipped}
    blob = zs.encode_record(record, 4096)
    assert len(blob) == 4096 and blob.endswith(b"\0")
    got = zs.decode_record(blob)
    kept = len(got["skipped"])
    assert 0 < kept < 40 and got["skipped"] == skipped[:kept]
    assert got["omitted"] == {"inputs": 40 - kept, "uses": 2 * (40 - kept)}
    assert zs.decode_record(zs.encode_record(record, 1 << 16)) == record
    with pytest.raises(ValueError, match="does not fit"):
        zs.encode_record({"shard": 0, "pad": "y" * 100}, 64)


def test_codec_parse():
    assert zs.Codec.parse("zstd-3") == zs.Codec("zstd", 3)
    assert zs.Codec.parse("zstd") == zs.Codec() == zs.Codec("zstd", 2)
    assert zs.Codec.parse("blosc-lz4") == zs.Codec("blosc-lz4", 9)
    assert zs.Codec.parse("none") == zs.Codec("none", 0)
    with pytest.raises(SynthError, match="codec 'lz5'"):
        zs.Codec.parse("lz5-1")
