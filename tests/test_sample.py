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
