"""Shared toy stores for the trainer tests (small: they are built once per session)."""

from __future__ import annotations

import pytest
import torch
from store_fixture import write_toy_store

# Two shared cores: one intra-op thread is several times faster than two competing ones.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory) -> str:
    """320 learnable 64x64 triples in shards of 32 (the last 64 serve as validation)."""
    url = str(tmp_path_factory.mktemp("toy") / "toy64.zarr")
    write_toy_store(url, n=320, size=64, shard_size=32, seed=0)
    return url


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> str:
    """75 triples of 32x32 in shards of 8: an uneven last shard and an uneven split."""
    url = str(tmp_path_factory.mktemp("small") / "small32.zarr")
    write_toy_store(url, n=75, size=32, shard_size=8, seed=1)
    return url
