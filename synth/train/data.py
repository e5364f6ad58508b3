"""The training data path: store -> uint8 batches (pinned) -> device, every sample once per epoch.

The whole epoch is planned up front, in index space, as a pure function of (seed, epoch, rank):

1. the sample ranges in use are cut at shard boundaries into *pieces* and the pieces are
   permuted (seeded by (seed, epoch); the same on every rank);
2. the concatenated pieces are split into ``world`` contiguous, equal-length parts, one per
   rank; a short part is padded with repeats flagged ``valid = False`` (the trainer ignores
   them in the loss and in validation), so every rank runs the same number of steps;
3. a rank's part is shuffled in windows of ``shuffle_shards`` pieces (the bounded shuffle
   buffer: a batch mixes a few whole shards, so reads stay local) and cut into batches;
4. batch ``j`` of the epoch is loaded by worker ``j mod workers``.

Because the batches do not depend on the number of workers, the DataLoader's round-robin
returns them in plan order, a run is reproducible with any worker count, and resuming at batch
``k`` simply skips the first ``k`` plans without reading them.

Reading (``backend``): for a local store ``direct`` (``synth.train.fastread``) decodes each
sample's chunk from the memory-mapped shard into the batch tensors (format 3: prompt and query
from one chunk), which a worker keeps in shared memory, so the batch crosses to the training
process without a copy. Inside
``make_loader``'s workers the batch buffers are a per-worker ring of preallocated shared-memory
slots (see ``StoreBatches`` for the ring depth and when a batch may be reused): after the first
laps no shared memory is allocated or faulted in per batch, which used to cost more than the
decode itself. Remote stores use one sorted ``StoreReader.read_indices`` call per
batch (tensorstore: decoded in C++ threads; zarr-python is an order of magnitude slower, see
``benchmarks/loader.py``). ``auto`` picks the first that applies. Workers are started with
``forkserver`` (never a fork of a process whose tensorstore threads are running) and persist
across epochs; the epoch and skip count reach them through a small shared-memory tensor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from synth.errors import ConfigError
from synth.rng import derive
from synth.store import PIXEL_FIELDS, StoreReader
from synth.train.fastread import LocalShardReader

BACKENDS = ("auto", "direct", "tensorstore", "zarr")

Ranges = Sequence[tuple[int, int]]


def holdout(n: int, fraction: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split ``[0, n)`` into (train, validation) ranges, holding out the last ``fraction``.

    A tail range keeps validation reads shard-aligned; the builder draws every sample's edit
    independently from (seed, index), so the tail is as random as any other subset.
    """
    n_val = round(n * fraction)
    if fraction and not 0 < n_val < n:
        raise ConfigError(f"val_fraction {fraction}: holds out {n_val} of {n} samples; adjust it")
    return [(0, n - n_val)], ([(n - n_val, n)] if n_val else [])


def split_pieces(ranges: Ranges, shard_size: int) -> list[tuple[int, int]]:
    """Cut ``ranges`` at shard boundaries so each piece lies in one shard."""
    pieces = []
    for start, stop in ranges:
        a = start
        while a < stop:
            b = min(stop, (a // shard_size + 1) * shard_size)
            pieces.append((a, b))
            a = b
    return pieces


def plan_epoch(
    ranges: Ranges,
    shard_size: int,
    batch_size: int,
    *,
    epoch: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
    shuffle: bool = True,
    shuffle_shards: int = 4,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The batches of one rank for one epoch, as (sorted indices, valid flags) pairs.

    Every sample of ``ranges`` appears exactly once with ``valid`` True across all ranks;
    each rank gets ``ceil(total / world)`` slots, the missing ones filled with repeats of its
    own samples (or of the first sample) marked invalid.
    """
    pieces = split_pieces(ranges, shard_size)
    if shuffle:
        order = derive(seed, "epoch", epoch).permutation(len(pieces))
        pieces = [pieces[i] for i in order]
    sizes = np.array([b - a for a, b in pieces], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return []
    per_rank = math.ceil(total / world)
    lo, hi = min(rank * per_rank, total), min((rank + 1) * per_rank, total)
    # The rank's pieces: the part of the concatenated stream in [lo, hi).
    ends = np.cumsum(sizes)
    mine: list[np.ndarray] = []
    for (a, b), end in zip(pieces, ends, strict=True):
        begin = end - (b - a)
        s, e = max(lo, begin), min(hi, end)
        if s < e:
            mine.append(np.arange(a + (s - begin), a + (e - begin), dtype=np.int64))
    stream = np.empty(0, np.int64)
    if mine and shuffle:
        rng = derive(seed, "epoch", epoch, "rank", rank)
        windows = range(0, len(mine), shuffle_shards)
        stream = np.concatenate(
            [rng.permutation(np.concatenate(mine[i : i + shuffle_shards])) for i in windows]
        )
    elif mine:
        stream = np.concatenate(mine)
    n_real = len(stream)
    pad_source = stream if n_real else np.array([pieces[0][0]], dtype=np.int64)
    indices = np.concatenate([stream, np.resize(pad_source, per_rank - n_real)])
    valid = np.arange(per_rank) < n_real
    batches = []
    for i in range(0, per_rank, batch_size):
        idx, ok = indices[i : i + batch_size], valid[i : i + batch_size]
        order = np.lexsort((idx, ~ok))  # valid first, each part sorted for the reader
        batches.append((idx[order], ok[order]))
    return batches


class StoreBatches(IterableDataset):
    """Yields whole batches (dicts of uint8/bool/int64 tensors) of one rank's epoch plan.

    Use with ``make_loader`` (``batch_size=None``: batches are assembled here, not collated
    per sample). Call ``set_epoch(epoch, skip)`` before iterating; ``skip`` batches of the plan
    are passed over without reading (resume).

    Args:
        url: store URL (local path or fsspec URL).
        batch_size: samples per batch (per rank).
        ranges: sample ranges to use (default: the whole store).
        shuffle: permute shards and shuffle within the buffer (training) or keep store order.
        seed: the plan's seed.
        rank, world: this process's place in a DDP job.
        shuffle_shards: pieces (shards) per shuffle window.
        backend: ``auto``, ``direct``, ``tensorstore`` or ``zarr`` (see the module docstring).
        storage_options, threads: passed to ``StoreReader``.

    Batch buffers. A batch of the direct reader lives in one shared-memory block (pixels,
    ``kind``, ``index``, ``valid`` and ``surface`` are views of it). With ``ring_depth == 0``
    (the default; in-process loading, or a DataLoader built by hand) every batch gets a fresh
    block.
    ``make_loader`` sets ``ring_depth = prefetch * workers + 2``: each worker then reuses a
    ring of that many blocks. Why that is safe: the DataLoader has at most
    ``prefetch * workers`` batches requested and not yet handed to the consumer, and it
    requests batch ``n + prefetch * workers`` only once it hands batch ``n`` over. A worker
    writes into the block of its own ``ring_depth``-th previous batch, so when it writes,
    the batches handed over but possibly overwritten are at least two behind the newest one
    the consumer has: a consumer may hold the current and the previous batch (e.g. one being
    copied to the GPU while the next arrives); ``clone()`` what you keep longer. With pinned
    memory the consumer gets pinned copies and holds them as long as it likes. A new iteration
    (epoch) keeps the ring only if the previous one was consumed to the end (then no discarded
    batches were decoded beyond it); after a ``break`` the workers start a fresh ring.
    """

    def __init__(
        self,
        url: str,
        batch_size: int,
        *,
        ranges: Ranges | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle_shards: int = 4,
        backend: str = "auto",
        storage_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"reader backend {backend!r}: use one of {', '.join(BACKENDS)}")
        self.fast = None
        if backend in ("auto", "direct"):
            self.fast = LocalShardReader.open(url, PIXEL_FIELDS)
            if self.fast is None and backend == "direct":
                raise ConfigError(f"{url}: the direct reader needs a local store in synth's layout")
        self.reader = StoreReader(
            url,
            backend="auto" if backend == "direct" else backend,
            storage_options=storage_options,
            threads=threads,
        )
        layout = self.reader.layout
        self.ranges = [tuple(r) for r in (ranges if ranges is not None else [(0, layout.n)])]
        for a, b in self.ranges:
            if not 0 <= a <= b <= layout.n:
                raise ConfigError(f"{url}: range [{a}, {b}) outside the store's {layout.n} samples")
        S = layout.shard_size
        needed = {s for a, b in self.ranges for s in range(a // S, -(-b // S))}
        missing = sorted(needed - self.reader.present_shards())
        if missing:
            raise ConfigError(
                f"{url}: {len(missing)} shard(s) not written yet (first: {missing[0]}); finish the "
                "build (synth build --resume) before training"
            )
        self.batch_size = batch_size
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.shuffle_shards = shuffle_shards
        meta = self.reader.read_range(0, layout.n, fields=("kind", "base_source"))
        self.kinds = meta["kind"].astype(np.int64)
        self.surface = surface_bases(self.reader.attrs, meta["base_source"])
        # epoch, skip, ring generation (bumped by make_loader's loader: start a fresh ring)
        self._state = torch.zeros(3, dtype=torch.int64).share_memory_()
        self.ring_depth = 0
        self._ring: list[dict[str, torch.Tensor] | None] = []
        self._ring_key: tuple[int, int] = (-1, -1)  # (pid, generation) the ring belongs to
        self._ring_pos = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ring"], state["_ring_key"], state["_ring_pos"] = [], (-1, -1), 0
        return state

    @property
    def kind_names(self) -> list[str]:
        return self.reader.kinds

    @property
    def image_size(self) -> tuple[int, int]:
        return self.reader.layout.height, self.reader.layout.width

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch to plan and how many of its batches to skip (persistent workers too)."""
        self._state[0], self._state[1] = epoch, skip

    def plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return plan_epoch(
            self.ranges,
            self.reader.layout.shard_size,
            self.batch_size,
            epoch=epoch,
            seed=self.seed,
            rank=self.rank,
            world=self.world,
            shuffle=self.shuffle,
            shuffle_shards=self.shuffle_shards,
        )

    def __len__(self) -> int:
        total = sum(b - a for a, b in self.ranges)
        return math.ceil(math.ceil(total / self.world) / self.batch_size)

    def _buffers(self, n: int, shared: bool) -> dict[str, torch.Tensor]:
        """Views of one fresh block for ``n`` samples (in shared memory if ``shared``)."""
        H, W = self.image_size
        sizes = {"prompt": n * H * W * 3, "query": n * H * W * 3, "mask": n * H * W}
        pixels = sum(sizes.values())
        base = -(-pixels // 8) * 8  # int64 views need an aligned offset
        total = base + 18 * n  # kind, index (int64), valid, surface (bool)
        storage = torch.UntypedStorage._new_shared(total) if shared else torch.UntypedStorage(total)
        flat = torch.empty(0, dtype=torch.uint8).set_(storage)
        out, at = {}, 0
        for name, tail in (("prompt", (H, W, 3)), ("query", (H, W, 3)), ("mask", (H, W))):
            out[name] = flat[at : at + sizes[name]].view(n, *tail)
            at += sizes[name]
        out["kind"] = flat[base : base + 8 * n].view(torch.int64)
        out["index"] = flat[base + 8 * n : base + 16 * n].view(torch.int64)
        out["valid"] = flat[base + 16 * n : base + 17 * n].view(torch.bool)
        out["surface"] = flat[base + 17 * n : base + 18 * n].view(torch.bool)
        return out

    def _slot(self, n: int, shared: bool) -> dict[str, torch.Tensor]:
        """Buffers for a batch of ``n``: the next ring slot inside a worker, else a fresh block."""
        if not (shared and self.ring_depth):
            return self._buffers(n, shared)
        key = (os.getpid(), int(self._state[2]))
        if self._ring_key != key or len(self._ring) != self.ring_depth:
            self._ring, self._ring_key, self._ring_pos = [None] * self.ring_depth, key, 0
        pos = self._ring_pos
        self._ring_pos = (pos + 1) % self.ring_depth
        slot = self._ring[pos]
        if slot is None or len(slot["index"]) < n:
            slot = self._ring[pos] = self._buffers(max(n, self.batch_size), shared)
        return {k: v[:n] for k, v in slot.items()}

    def load(self, indices: np.ndarray, valid: np.ndarray) -> dict[str, torch.Tensor]:
        """Read one planned batch (into shared memory, a reused ring slot, inside a worker)."""
        if self.fast is None:
            data = self.reader.read_indices(indices, fields=PIXEL_FIELDS)
            return {
                **{k: torch.from_numpy(v) for k, v in data.items()},
                "kind": torch.from_numpy(self.kinds[indices]),
                "index": torch.from_numpy(indices),
                "valid": torch.from_numpy(valid),
                "surface": torch.from_numpy(self.surface[indices]),
            }
        out = self._slot(len(indices), get_worker_info() is not None)
        self.fast.read_into(indices, {f: out[f].numpy() for f in PIXEL_FIELDS})
        out["kind"].numpy()[:] = self.kinds[indices]
        out["index"].numpy()[:] = indices
        out["valid"].numpy()[:] = valid
        out["surface"].numpy()[:] = self.surface[indices]
        return out

    def __iter__(self):
        epoch, skip = (int(v) for v in self._state[:2].tolist())
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for j, (indices, valid) in enumerate(self.plan(epoch)):
            if j >= skip and (j - skip) % workers == worker:
                yield self.load(indices, valid)


def surface_bases(attrs: Mapping[str, Any], base_source: np.ndarray) -> np.ndarray:
    """(n,) bool: the samples drawn on a ``plain`` source (a surface, e.g. a texture photo),
    from the store's manifest; ``base_source`` indexes its image sources (-1: none)."""
    images = (attrs.get("manifest") or {}).get("sources", {}).get("images", [])
    plain = np.array([src.get("kind") == "plain" for src in images] + [False], dtype=bool)
    index = np.asarray(base_source, dtype=np.int64)
    return plain[np.where((index >= 0) & (index < len(images)), index, len(images))]


def reader_threads(workers: int, local_world: int = 1) -> int:
    """Decoder threads per reader so all loaders of a node together use about every core."""
    return max(1, (os.cpu_count() or 1) // max(1, workers * local_world))


def _drained(it: Any) -> bool:
    """Whether DataLoader iterator ``it`` was consumed to its end (False when unsure)."""
    try:
        return it._rcvd_idx >= it._send_idx and not any(it._workers_status)
    except AttributeError:
        return False


class _RingLoader(DataLoader):
    """A DataLoader that tells its workers to drop their ring after an interrupted iteration.

    Batches decoded for an iteration the consumer left early are discarded, so the ring-depth
    bound (``StoreBatches``) would not cover batches the consumer still holds from it.
    """

    def __iter__(self):
        if self._iterator is not None and not _drained(self._iterator):
            self.dataset._state[2] += 1
        return super().__iter__()


def make_loader(
    dataset: StoreBatches, *, workers: int, device: torch.device, prefetch: int = 2
) -> DataLoader:
    """A DataLoader over ``dataset``'s batches: pinned on CUDA, persistent forkserver workers.

    Workers decode into a ring of ``prefetch * workers + 2`` reused shared-memory batches
    (see ``StoreBatches``): a batch stays intact while the consumer holds it and the next one.
    """
    ctx = None
    if workers:
        import multiprocessing as mp

        ctx = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    dataset.ring_depth = prefetch * workers + 2 if workers else 0
    return _RingLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers else None,
        multiprocessing_context=ctx,
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Asynchronous host-to-device copy of a (pinned) uint8 batch."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
