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
            0, 256, (len(arrays["prompt"]), layout.height // 8, layout.width // 8, 3)
        )
        arrays["prompt"] = blocks.repeat(8, 1).repeat(8, 2).astype(np.uint8)  # compressible
        arrays["mask"] = (arrays["mask"] * (rng.random(arrays["mask"].shape) < 0.1)).astype(
            np.uint8
        )
        for name, (_, _, fill) in zs.META_FIELDS.items():
            if rng.random() < 0.3:
                arrays[name][:] = fill
        shards.append(arrays)
    shards[seed % layout.n_shards]["mask"][:] = 0
    shards[-1]["texture_index"][:] = -1  # padded to a whole chunk of fill values: no object
    shards[0]["prompt"][1] = 0
    shards[0]["query"][-1] = 0
    return shards


def _write_both(direct: str, reference: str, shards: dict[int, dict[str, np.ndarray]]) -> None:
    """Write ``shards`` with ``write_shard`` to ``direct`` and through zarr-python to
    ``reference`` (plus the same record)."""
    for s, arrays in shards.items():
        zs.write_shard(direct, s, arrays, {"shard": s})
        zs._write_shard_zarr(reference, s, arrays)
        zs.write_json(reference, f"{zs.MARKER_DIR}/{s:06d}.json", {"shard": s})


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
    assert "prompt/c/0/0/0/0" in tree and "meta/kind/c/2" in tree
    # resume: a rewrite of the same shard leaves the same bytes
    zs.write_shard(direct, 1, first[1], {"shard": 1})
    assert _tree(direct) == tree
    # rewritten with other content: objects that become all fill are deleted in both stores
    second = _varied_shards(layout, 1)
    _write_both(direct, ref, dict(enumerate(second)))
    assert _tree(direct) == _tree(ref) != tree
    assert "mask/c/0/0/0" in _tree(direct) and "mask/c/1/0/0" not in _tree(direct)


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


def test_format_1_store_is_written_directly(tmp_path, no_fallback):
    layout = zs.Layout(n=6, height=8, width=8, shard_size=4, codec=zs.Codec("zstd", 5))
    direct, ref = str(tmp_path / "direct.zarr"), str(tmp_path / "ref.zarr")
    old = {**{k: v for k, v in layout.to_dict().items() if k != "codec"}, "zstd_level": 5}
    for url in (direct, ref):
        zs.create_store(url, layout, {})
        zs.update_attrs(url, {"format_version": 1, "layout": old})
    assert "codec" not in zs.read_attrs(direct)["layout"]
    shards = _varied_shards(layout, 3)
    for s, arrays in enumerate(shards):
        zs.write_shard(direct, s, arrays, {"shard": s})
        no_fallback(ref, s, arrays)
        zs.write_json(ref, f"{zs.MARKER_DIR}/{s:06d}.json", {"shard": s})
    assert _tree(direct) == _tree(ref)


def _edit_prompt_cname(meta: dict) -> None:
    meta["codecs"][0]["configuration"]["codecs"][1]["configuration"]["cname"] = "zstd"


def _edit_seed_fill(meta: dict) -> None:
    meta["fill_value"] = 7


def _edit_mask_separator(meta: dict) -> None:
    meta["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "."}}


@pytest.mark.parametrize(
    ("array", "edit"),
    [
        ("prompt", _edit_prompt_cname),
        ("meta/seed", _edit_seed_fill),
        ("mask", _edit_mask_separator),
    ],
    ids=["cname", "fill", "separator"],
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
        zs.write_shard(urls["forced"], s, arrays, {"shard": s})
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
            no_fallback(ref, s, arrays)
            zs.write_json(ref, f"{zs.MARKER_DIR}/{s:06d}.json", {"shard": s})
    fs = fsspec.filesystem("s3", **opts)
    fs.invalidate_cache()
    remote = {
        p.removeprefix("synth-test/direct.zarr/"): hashlib.sha256(fs.cat_file(p)).hexdigest()
        for p in fs.find("synth-test/direct.zarr")
    }
    assert remote == store_digest(ref)
