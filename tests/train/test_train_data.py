"""The loader: every sample once per epoch across workers and ranks, deterministic, resumable."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from store_fixture import write_toy_store

from synth import store as zs
from synth.errors import ConfigError
from synth.train.data import (
    StoreBatches,
    holdout,
    make_loader,
    plan_epoch,
    split_pieces,
    surface_bases,
)
from synth.train.fastread import LocalShardReader

CPU = torch.device("cpu")


def _valid_indices(batches) -> list[int]:
    out = []
    for idx, valid in batches:
        out.extend(int(i) for i in idx[valid])
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch", [4, 7])
def test_plan_covers_every_sample_once_across_ranks(world, batch):
    ranges = [(0, 45), (50, 75)]
    plans = [
        plan_epoch(ranges, 8, batch, epoch=3, seed=5, rank=r, world=world, shuffle_shards=2)
        for r in range(world)
    ]
    counts = Counter(i for p in plans for i in _valid_indices(p))
    assert sorted(counts) == [*range(0, 45), *range(50, 75)]
    assert set(counts.values()) == {1}
    assert len({len(p) for p in plans}) == 1  # DDP: every rank runs the same number of steps
    assert len({sum(len(i) for i, _ in p) for p in plans}) == 1
    for p in plans:
        for idx, valid in p:
            assert np.all(np.diff(idx[valid]) > 0)  # sorted for the reader


def test_plan_is_seeded_by_epoch_and_shuffles_across_shards():
    a = plan_epoch([(0, 64)], 8, 8, epoch=0, seed=0)
    again = plan_epoch([(0, 64)], 8, 8, epoch=0, seed=0)
    b = plan_epoch([(0, 64)], 8, 8, epoch=1, seed=0)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, again, strict=True))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    shards_per_batch = [len(set(idx // 8)) for idx, _ in a]
    assert max(shards_per_batch) > 1  # batches mix shards
    assert max(shards_per_batch) <= 8  # ...but only within the bounded window (+ a neighbour)
    ordered = plan_epoch([(0, 20)], 8, 8, epoch=0, seed=0, shuffle=False)
    assert np.array_equal(np.concatenate([i for i, _ in ordered]), np.arange(20))


def test_split_pieces_and_holdout():
    assert split_pieces([(3, 20)], 8) == [(3, 8), (8, 16), (16, 20)]
    assert holdout(100, 0.2) == ([(0, 80)], [(80, 100)])
    assert holdout(100, 0.0) == ([(0, 100)], [])
    with pytest.raises(ConfigError):
        holdout(3, 0.01)


def _collect(loader) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def test_loader_two_workers_every_sample_once_and_same_batches(small_store):
    ds = StoreBatches(small_store, 8, seed=2, shuffle_shards=2, threads=1)
    serial = make_loader(ds, workers=0, device=CPU)
    ds.set_epoch(0)
    expected = _collect(serial)

    par_ds = StoreBatches(small_store, 8, seed=2, shuffle_shards=2, threads=1)
    loader = make_loader(par_ds, workers=2, device=CPU)
    for epoch in (0, 1):  # persistent workers must see the new epoch
        par_ds.set_epoch(epoch)
        got = _collect(loader)
        seen = Counter(int(i) for b in got for i in b["index"][b["valid"]])
        assert sorted(seen) == list(range(75)) and set(seen.values()) == {1}
        if epoch == 0:
            assert len(got) == len(expected) == len(ds)
            for g, e in zip(got, expected, strict=True):
                for k in e:
                    assert torch.equal(g[k], e[k]), k
        else:
            assert not torch.equal(got[0]["index"], expected[0]["index"])
    # The pixels are the store's.
    reader = zs.StoreReader(small_store)
    b = expected[3]
    ref = reader.read_indices(b["index"].numpy())
    assert torch.equal(b["prompt"], torch.from_numpy(ref["prompt"]))
    assert torch.equal(b["mask"], torch.from_numpy(ref["mask"]))
    assert torch.equal(b["kind"], torch.from_numpy(ref["kind"].astype(np.int64)))
    assert b["prompt"].dtype == torch.uint8 and b["prompt"].shape == (8, 32, 32, 3)


def test_two_simulated_ranks_cover_every_sample_once(small_store):
    seen: Counter = Counter()
    lengths = []
    for rank in (0, 1):
        ds = StoreBatches(small_store, 8, seed=0, rank=rank, world=2)
        ds.set_epoch(4)
        batches = list(ds)
        lengths.append(len(batches))
        assert len(batches) == len(ds)
        for b in batches:
            seen.update(int(i) for i in b["index"][b["valid"]])
    assert sorted(seen) == list(range(75)) and set(seen.values()) == {1}
    assert lengths[0] == lengths[1]


def test_skip_resumes_at_the_exact_batch(small_store):
    ds = StoreBatches(small_store, 8, seed=0)
    ds.set_epoch(2)
    full = [b["index"] for b in ds]
    ds.set_epoch(2, skip=5)
    rest = [b["index"] for b in ds]
    assert len(rest) == len(full) - 5
    assert all(torch.equal(a, b) for a, b in zip(full[5:], rest, strict=True))


def test_batches_flag_the_samples_drawn_on_a_plain_source(small_store):
    """Surface pairs (``aug.surface_pairs``) trust this flag: the store's manifest names which
    image source each sample's base came from; only ``plain`` sources are surfaces."""
    for backend in ("direct", "zarr"):
        ds = StoreBatches(small_store, 16, seed=3, backend=backend)
        ds.set_epoch(0)
        for batch in ds:
            assert torch.equal(batch["surface"], batch["index"] % 3 == 1)
    attrs = {"manifest": {"sources": {"images": [{"kind": "coco"}, {"kind": "plain"}]}}}
    flags = surface_bases(attrs, np.array([1, 0, -1, 1, 7], dtype=np.int16))
    assert flags.tolist() == [True, False, False, True, False]  # -1: none; 7: not listed
    assert not surface_bases({}, np.array([0, 1])).any()  # no manifest: nothing is a surface


def test_backends_return_identical_batches(small_store):
    batches = {}
    for backend in ("direct", "tensorstore", "zarr"):
        ds = StoreBatches(small_store, 16, seed=3, backend=backend)
        assert (ds.fast is not None) == (backend == "direct")
        ds.set_epoch(0)
        batches[backend] = list(ds)
    kinds = torch.cat([b["kind"] for b in batches["direct"]])
    assert (kinds == 2).any()  # "none" samples: all-zero masks, chunks never written
    for other in ("tensorstore", "zarr"):
        for a, b in zip(batches["direct"], batches[other], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert LocalShardReader.open("s3://bucket/store.zarr", ("prompt",)) is None


@pytest.mark.parametrize(
    "codec", [zs.Codec("zstd", 3), zs.Codec("blosc-lz4", 9), zs.Codec("none", 0)], ids=str
)
def test_direct_reader_matches_tensorstore_for_every_codec(tmp_path, codec):
    url = str(tmp_path / "c.zarr")
    write_toy_store(url, n=20, size=16, shard_size=8, seed=2, codec=codec)
    batches = {}
    for backend in ("direct", "tensorstore"):
        ds = StoreBatches(url, 6, seed=0, backend=backend)
        assert (ds.fast is not None) == (backend == "direct")
        ds.set_epoch(1)
        batches[backend] = list(ds)
    for a, b in zip(batches["direct"], batches["tensorstore"], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_codec_the_direct_reader_lacks_falls_back_to_tensorstore(tmp_path):
    import zarr
    from zarr.codecs import GzipCodec

    url = str(tmp_path / "g.zarr")
    write_toy_store(url, n=12, size=16, shard_size=4)
    group = zarr.open_group(url, mode="r+", use_consolidated=False)
    images = group["images"][:]
    group.create_array(  # portable, but not a codec synth writes
        "images",
        shape=images.shape,
        dtype="uint8",
        chunks=(1, 2, 16, 16, 3),
        shards=(4, 2, 16, 16, 3),
        compressors=GzipCodec(level=1),
        fill_value=0,
        overwrite=True,
    )
    group["images"][:] = images
    ds = StoreBatches(url, 4, shuffle=False, backend="auto")
    assert ds.fast is None and ds.reader.backend == "tensorstore"
    ds.set_epoch(0)
    got = torch.cat([b["prompt"] for b in ds])
    assert torch.equal(got, torch.from_numpy(images[:, 0]))
    with pytest.raises(ConfigError, match="direct reader needs a local store"):
        StoreBatches(url, 4, backend="direct")


def test_missing_shard_is_refused(tmp_path):
    url = str(tmp_path / "partial.zarr")
    layout = zs.Layout(n=16, height=8, width=8, shard_size=8)
    zs.create_store(url, layout, {"kinds": ["none"]})
    with pytest.raises(ConfigError, match="not written yet"):
        StoreBatches(url, 4)
