"""Derive independent random generators from a seed and a path of integer keys.

Every random choice in synth flows from ``derive(seed, *keys)`` so that a triple is a pure
function of (manifest, index) regardless of worker count or task order. Global seeding and
default-argument generators are never used.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *keys: int | str) -> int:
    """Hash ``seed`` and ``keys`` into a 63-bit integer seed (stable across platforms)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(seed)).encode())
    for k in keys:
        h.update(b"/")
        h.update(str(k).encode())
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def derive(seed: int, *keys: int | str) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` seeded by ``derive_seed(seed, *keys)``."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, *keys)))
