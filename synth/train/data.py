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
sample's zstd chunk from the memory-mapped shard straight into the batch tensor, which a worker
allocates in shared memory, so the batch crosses to the training process without a copy (what
remains above the raw codec cost is mostly faulting in those fresh shared pages). Remote
stores use one sorted ``StoreReader.read_indices`` call per
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
from synth.store import PIXEL_ARRAYS, StoreReader
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
            self.fast = LocalShardReader.open(url, PIXEL_ARRAYS)
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
        missing = sorted(needed - set(self.reader.completed_shards()))
        if missing:
            raise ConfigError(
                f"{url}: {len(missing)} shard(s) not written yet (first: {missing[0]}); finish the "
                "build (synth build --resume) before training"
            )
        self.batch_size = batch_size
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.shuffle_shards = shuffle_shards
        self.kinds = self.reader.read_range(0, layout.n, fields=("kind",))["kind"].astype(np.int64)
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()

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

    def load(self, indices: np.ndarray, valid: np.ndarray) -> dict[str, torch.Tensor]:
        """Read one planned batch into fresh tensors (in shared memory inside a worker)."""
        if self.fast is not None:
            H, W = self.image_size
            shared = get_worker_info() is not None
            pixels = {}
            for name, tail in (("prompt", (H, W, 3)), ("query", (H, W, 3)), ("mask", (H, W))):
                t = torch.empty((len(indices), *tail), dtype=torch.uint8)
                pixels[name] = t.share_memory_() if shared else t
                self.fast.read_into(name, indices, pixels[name].numpy())
        else:
            data = self.reader.read_indices(indices, fields=PIXEL_ARRAYS)
            pixels = {k: torch.from_numpy(v) for k, v in data.items()}
        return {
            **pixels,
            "kind": torch.from_numpy(self.kinds[indices]),
            "index": torch.from_numpy(indices),
            "valid": torch.from_numpy(valid),
        }

    def __iter__(self):
        epoch, skip = (int(v) for v in self._state.tolist())
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for j, (indices, valid) in enumerate(self.plan(epoch)):
            if j >= skip and (j - skip) % workers == worker:
                yield self.load(indices, valid)


def reader_threads(workers: int, local_world: int = 1) -> int:
    """Decoder threads per reader so all loaders of a node together use about every core."""
    return max(1, (os.cpu_count() or 1) // max(1, workers * local_world))


def make_loader(
    dataset: StoreBatches, *, workers: int, device: torch.device, prefetch: int = 2
) -> DataLoader:
    """A DataLoader over ``dataset``'s batches: pinned on CUDA, persistent forkserver workers."""
    ctx = None
    if workers:
        import multiprocessing as mp

        ctx = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return DataLoader(
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
