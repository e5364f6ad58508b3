"""Sample specs and make_triple: pure, deterministic, every kind reachable, retries recorded."""

from __future__ import annotations

import numpy as np
import pytest

from synth.edits import EDITS, changed_pixels
from synth.errors import SourceError, SynthError
from synth.manifest import default_manifest, parse_manifest
from synth.sample import Catalog, make_triple, realize, sample_spec


@pytest.fixture(scope="module")
def manifest():
    return default_manifest(n=64, size=(48, 64), seed=3)


@pytest.fixture(scope="module")
def catalog(manifest):
    return Catalog.open(manifest)


def test_spec_is_pure_function_of_seed_and_index(manifest, catalog):
    a = [sample_spec(manifest, catalog, i) for i in range(32)]
    b = [sample_spec(manifest, catalog, i) for i in reversed(range(32))][::-1]
    assert a == b
    other = manifest.with_overrides(seed=4)
    assert [sample_spec(other, catalog, i) for i in range(32)] != a
    assert sample_spec(manifest, catalog, 5, attempt=1) != a[5]


def test_every_kind_in_the_mix_is_drawn_in_proportion(manifest, catalog):
    kinds = [sample_spec(manifest, catalog, i).kind for i in range(3000)]
    for k, p in manifest.mix.items():
        assert abs(kinds.count(k) / 3000 - p) < 0.03, k


@pytest.mark.parametrize("kind", sorted(EDITS))
def test_make_triple_each_kind_exact_and_deterministic(kind, manifest, catalog):
    m = parse_manifest({**manifest.to_dict(), "mix": {kind: 1.0}}, base_dir=None)
    for i in range(3):
        spec, t1, _, _ = realize(m, catalog, i)
        assert spec.kind == kind
        t2 = make_triple(spec, Catalog.open(m), m)
        assert t1.prompt.shape == (48, 64, 3) and t1.mask.shape == (48, 64)
        for a, b in ((t1.prompt, t2.prompt), (t1.query, t2.query), (t1.mask, t2.mask)):
            assert a.tobytes() == b.tobytes()
        np.testing.assert_array_equal(t1.mask.astype(bool), changed_pixels(t1.prompt, t1.query))
        assert (t1.mask.sum() == 0) == (kind == "none")


def test_different_indices_give_different_triples(manifest, catalog):
    t = [realize(manifest, catalog, i)[1] for i in range(6)]
    assert len({x.query.tobytes() for x in t}) == 6


class _Broken:
    """An image source whose odd items cannot be read (a corrupt file)."""

    name = "broken"

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def load(self, i):
        if i % 2:
            raise SourceError(f"img{i}.jpg: cannot decode; remove or replace the file")
        return self.inner.load(i)

    def instance_counts(self):
        return self.inner.instance_counts()

    def fingerprint(self):
        return "x"


def test_unreadable_inputs_are_skipped_and_listed(manifest):
    # Half the items are broken: a donor edit needs two good draws, so allow enough retries.
    manifest = manifest.with_overrides(max_attempts=24)
    cat = Catalog.open(manifest)
    cat.images = [_Broken(cat.images[0])]
    seen = []
    for i in range(20):
        spec, triple, skipped, _ = realize(manifest, cat, i)
        assert spec.base.index % 2 == 0
        seen += skipped
    assert seen and all(s.input.startswith("broken[") for s in seen)
    assert all("cannot decode" in s.reason for s in seen)
    with pytest.raises(SourceError, match=r"sample \d+: img\d+.jpg"):
        for i in range(20):
            realize(manifest, cat, i, strict=True)


def test_exhausted_attempts_is_a_clear_error(manifest):
    cat = Catalog.open(manifest)
    cat.images = [_Broken(cat.images[0])]
    m = manifest.with_overrides(max_attempts=1)
    with pytest.raises(SynthError, match="no usable inputs after 1 attempts"):
        for i in range(40):
            realize(m, cat, i)


def test_pool_sizes_follow_uses_per_item():
    from synth.sample import pool_size

    # The COCO recipe: 236544 triples over 118287 images, shards of 256: two uses per image.
    assert pool_size(118287, 256, 236544, 16) == 129  # 2.0 uses: ceil(128.02)
    # Fewer triples than items: a fresh item for every draw of the shard.
    assert pool_size(1000, 64, 320, 16) == 64
    # A tiny source is one pool; the floor keeps donor candidates besides the base.
    assert pool_size(13, 64, 320, 16) == 13
    assert pool_size(5640, 128, 118272, 8) == 8


def test_walk_uses_every_item_before_any_twice():
    from synth.sample import _walk

    pools = [_walk(7, False, 0, 100, 30, k) for k in range(7)]
    flat = np.concatenate(pools)
    assert all(p.size == 30 for p in pools)
    for lap in range(2):
        assert sorted(flat[lap * 100 : (lap + 1) * 100].tolist()) == list(range(100))
    assert flat[:100].tolist() != flat[100:200].tolist()  # a fresh permutation per lap
    np.testing.assert_array_equal(_walk(7, False, 0, 100, 30, 3), pools[3])
    assert _walk(8, False, 0, 100, 30, 0).tolist() != pools[0].tolist()


def test_grouped_walk_finishes_a_tar_before_the_next_and_uses_every_item():
    from synth.sample import _grouped_walk

    sizes = np.array([40, 0, 25, 60, 35])  # tars of uneven size, one empty
    starts = np.concatenate([[0], np.cumsum(sizes)])
    pools = [_grouped_walk(7, False, 0, sizes, 30, k) for k in range(16)]
    flat = np.concatenate(pools)
    for lap in range(2):
        assert sorted(flat[lap * 160 : (lap + 1) * 160].tolist()) == list(range(160))
    tars_of = [set(np.searchsorted(starts, p, side="right").tolist()) for p in pools]
    assert max(len(t) for t in tars_of) <= 2  # ceil(30 / 25) + 1 at most, often one
    runs = np.flatnonzero(np.diff(np.searchsorted(starts, flat[:160], side="right"))) + 1
    assert len(runs) == 3  # one lap: each non-empty tar is one unbroken run of the walk
    np.testing.assert_array_equal(_grouped_walk(7, False, 0, sizes, 30, 5), pools[5])
    assert _grouped_walk(8, False, 0, sizes, 30, 0).tolist() != pools[0].tolist()


def _pooled(mode: str, n: int, shard: int, mix: dict[str, float]):
    m = default_manifest(n=n, size=(48, 64), seed=5)
    return parse_manifest(
        {**m.to_dict(), "shard_size": shard, "mix": mix, "sampling": {"mode": mode}},
        base_dir=None,
    )


def test_pooled_sampling_uses_every_image_evenly():
    m = _pooled("pooled", 52, 13, {"local_texture": 1.0})  # 13 sample photos, 4 uses each
    cat = Catalog.open(m)
    bases = [sample_spec(m, cat, i).base.index for i in range(m.n)]
    assert sorted(bases) == sorted(list(range(13)) * 4)
    for k in range(4):  # every shard meets every photo once
        assert sorted(bases[13 * k : 13 * (k + 1)]) == list(range(13))
    ind = _pooled("independent", 52, 13, {"local_texture": 1.0})
    other = [sample_spec(ind, Catalog.open(ind), i).base.index for i in range(ind.n)]
    assert sorted(other) != sorted(bases)


def test_pooled_shard_decodes_only_its_pool(tmp_path):
    import cv2

    from synth import build

    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(tmp_path / f"t{i:02d}.png"), rng.integers(0, 255, (24, 24, 3), np.uint8))
    loads: dict[str, list[int]] = {}
    for mode in ("pooled", "independent"):
        m = _pooled(mode, 80, 20, {"local_texture": 1.0})
        m = parse_manifest(
            {
                **m.to_dict(),
                "sources": {
                    "images": [{"name": "samples", "kind": "samples"}],
                    "textures": [{"name": "tex", "kind": "folder", "root": str(tmp_path)}],
                },
            },
            base_dir=None,
        )
        build._CATALOGS.clear()
        cat = build._catalog(m)
        src, seen = cat.textures[0], loads.setdefault(mode, [])
        inner = src.load
        src.load = lambda i, _inner=inner, _seen=seen: (_seen.append(i), _inner(i))[1]
        arrays, _ = build.make_shard(m, 2)
        used = set(arrays["texture_index"].tolist())
        if mode == "pooled":
            pool = cat.pool(m.seed, True, 0, 2).tolist()
            assert len(pool) == 10  # 40 textures, 2 uses each: 20 draws per shard from 10
            assert used <= set(pool)
    build._CATALOGS.clear()
    assert len(loads["pooled"]) == len(set(loads["pooled"])) <= 10
    assert len(loads["independent"]) > 10  # about 17 of 40 for 20 independent draws
