"""A small, learnable synth store for trainer tests and loader benchmarks.

Backgrounds are tinted crops of scikit-image's bundled textures (brick, grass, gravel); the query
is the prompt plus bright/dark blobs ("blob"), a pasted patch of another texture ("patch"), or
nothing ("none"). As in real synth stores the mask is exactly the set of pixels where prompt and
query differ, and the store is written with ``create_store`` + ``write_shard`` only
(``tests/format2_fixture.py`` writes the same triples as a format 2 store).
"""

from __future__ import annotations

import cv2
import numpy as np

from synth import store as zs
from synth.rng import derive

KINDS = ("blob", "patch", "none")
#: The image sources a toy sample claims as its base (sample i: source i % 3), as a manifest
#: would list them: the loader tells surfaces (``plain``) from scenes by them.
SOURCES = [
    {"name": "scenes", "kind": "coco"},
    {"name": "surfaces", "kind": "plain"},
    {"name": "photos", "kind": "folder"},
]


def load_textures() -> list[np.ndarray]:
    from skimage import data

    return [data.brick(), data.grass(), data.gravel()]


def _background(tex: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    crop = int(rng.integers(size, min(tex.shape[0], 2 * size) + 1))
    y, x = (int(rng.integers(0, tex.shape[i] - crop + 1)) for i in (0, 1))
    gray = cv2.resize(tex[y : y + crop, x : x + crop], (size, size), interpolation=cv2.INTER_AREA)
    tint = rng.uniform(0.5, 1.0, 3)
    offset = rng.uniform(0, 60, 3)
    return np.clip(gray[..., None] * tint + offset, 0, 255).astype(np.uint8)


def _region(size: int, rng: np.random.Generator, n: int) -> np.ndarray:
    region = np.zeros((size, size), np.uint8)
    for _ in range(n):
        axes = (
            int(rng.integers(size // 14 + 1, size // 6 + 2)),
            int(rng.integers(size // 14 + 1, size // 6 + 2)),
        )
        center = (
            int(rng.integers(axes[0], size - axes[0])),
            int(rng.integers(axes[1], size - axes[1])),
        )
        cv2.ellipse(region, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return region.astype(bool)


def make_triple(
    index: int, size: int, seed: int, textures: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(prompt, query, mask, kind id) of sample ``index``: a pure function of (seed, index)."""
    rng = derive(seed, index)
    kind = int(rng.integers(0, len(KINDS)))
    prompt = _background(textures[int(rng.integers(0, len(textures)))], size, rng)
    query = prompt.copy()
    if KINDS[kind] == "blob":
        region = _region(size, rng, int(rng.integers(1, 4)))
        bright = rng.random() < 0.5
        fill = prompt * 0.3 + (180 if bright else 0)
        query[region] = np.clip(fill[region], 0, 255).astype(np.uint8)
    elif KINDS[kind] == "patch":
        region = _region(size, rng, 1)
        other = _background(textures[int(rng.integers(0, len(textures)))], size, rng)
        query[region] = 255 - other[region]
    mask = (cv2.absdiff(prompt, query).max(axis=2) > 2).astype(np.uint8)
    return prompt, query, mask, kind


def toy_shard(
    layout: zs.Layout, shard: int, seed: int, textures: list[np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The arrays (``prompt`` and ``query`` apart, every ``META_FIELDS`` name) and the record
    of toy shard ``shard``."""
    start, stop = layout.shard_range(shard)
    size = layout.height
    triples = [make_triple(i, size, seed, textures) for i in range(start, stop)]
    m = stop - start
    arrays: dict[str, np.ndarray] = {
        name: np.full((m, *tail), fill, dtype=dtype)
        for name, (dtype, tail, fill) in zs.META_FIELDS.items()
    }
    arrays["prompt"] = np.stack([t[0] for t in triples])
    arrays["query"] = np.stack([t[1] for t in triples])
    arrays["mask"] = np.stack([t[2] for t in triples])
    arrays["kind"] = np.array([t[3] for t in triples], dtype=np.int8)
    arrays["seed"] = np.full(m, seed, dtype=np.uint64)
    arrays["attempt"] = np.zeros(m, dtype=np.int16)
    arrays["mask_area"] = arrays["mask"].reshape(m, -1).sum(1).astype(np.int32)
    arrays["base_source"] = (np.arange(start, stop) % 3).astype(np.int16)  # SOURCES
    kinds = {k: int((arrays["kind"] == i).sum()) for i, k in enumerate(KINDS)}
    record = {
        "shard": shard,
        "start": start,
        "stop": stop,
        "kinds": {k: v for k, v in kinds.items() if v},
        "skipped": [],
        "retries": 0,
    }
    return arrays, record


def write_toy_store(
    url: str,
    n: int,
    size: int = 64,
    shard_size: int = 16,
    seed: int = 0,
    codec: zs.Codec | None = None,
) -> zs.Layout:
    """Write ``n`` toy triples of ``size`` x ``size`` into a new store (default codec if None)."""
    layout = zs.Layout(n, size, size, shard_size, codec or zs.Codec())
    attrs = {
        "kinds": list(KINDS),
        "toy": {"seed": seed},
        "manifest": {"sources": {"images": SOURCES}},
    }
    zs.create_store(url, layout, attrs)
    textures = load_textures()
    for shard in range(layout.n_shards):
        arrays, record = toy_shard(layout, shard, seed, textures)
        images = zs.empty_images(len(arrays["mask"]), size, size)
        images[:, 0], images[:, 1] = arrays.pop("prompt"), arrays.pop("query")
        zs.write_shard(url, shard, {**arrays, "images": images}, record)
    return layout
