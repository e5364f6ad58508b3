"""Workers' reused batch buffers: a batch stays intact while the consumer may still hold it."""

from __future__ import annotations

import torch

from synth.train.data import StoreBatches, make_loader

CPU = torch.device("cpu")


def _expected(url: str, epoch: int) -> list[dict[str, torch.Tensor]]:
    ds = StoreBatches(url, 4, seed=5, shuffle_shards=2, threads=1)
    ds.set_epoch(epoch)
    return [{k: v.clone() for k, v in b.items()} for b in make_loader(ds, workers=0, device=CPU)]


def _same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(got[k], want[k]) for k in want)


def test_ring_keeps_held_batches_intact(small_store):
    want = [_expected(small_store, e) for e in (0, 1, 2)]
    ds = StoreBatches(small_store, 4, seed=5, shuffle_shards=2, threads=1)
    loader = make_loader(ds, workers=2, device=CPU, prefetch=1)
    assert ds.ring_depth == 2 * 1 + 2  # prefetch * workers + 2
    assert len(want[0]) > 3 * ds.ring_depth  # the ring wraps
    for epoch in (0, 1):  # the current and the previous batch stay intact, across epochs too
        ds.set_epoch(epoch)
        prev = None
        for j, b in enumerate(loader):
            assert _same(b, want[epoch][j]), (epoch, j)
            if prev is not None:
                assert _same(prev, want[epoch][j - 1]), (epoch, j)
            prev = b
    # An interrupted iteration: its held batches survive the next one (a fresh ring).
    ds.set_epoch(1)
    held = []
    for b in loader:
        held.append(b)
        if len(held) == 3:
            break
    ds.set_epoch(2)
    for j, b in enumerate(loader):
        assert _same(b, want[2][j]), j
    for j, b in enumerate(held):
        assert _same(b, want[1][j]), j
