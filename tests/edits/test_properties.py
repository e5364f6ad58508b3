"""Hypothesis property tests of the exact-mask invariant (random sizes, masks and seeds)."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth.edits import EDITS, EditInputs, changed_pixels, finalize, make_params
from synth.errors import SkipSample
from synth.sources.base import Instance, SourceImage

from .photos import PHOTOS, TEXTURES, photo

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIZE = st.tuples(st.integers(32, 160), st.integers(32, 160))


def random_masks(h: int, w: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random filled ellipses (instance masks), possibly overlapping."""
    masks = []
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(3, max(4, w // 3))), int(rng.integers(3, max(4, h // 3))))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(m.astype(bool))
    return masks


def random_source(h: int, w: int, seed: int, n: int, key: str, crowd: bool) -> SourceImage:
    rng = np.random.default_rng(seed)
    img = photo(PHOTOS[int(rng.integers(len(PHOTOS)))], h, w)
    insts = tuple(
        Instance(m, category=int(rng.integers(1, 4)), ann_id=i)
        for i, m in enumerate(random_masks(h, w, n, rng))
    )
    ignore = None
    if crowd:
        ignore = np.zeros((h, w), bool)
        ignore[: h // 4, : w // 4] = True
    return SourceImage(key=key, image=img, instances=insts, ignore=ignore)


def check_invariants(name: str, inputs: EditInputs, seed: int) -> None:
    try:
        r = EDITS[name].fn(inputs, np.random.default_rng(seed), make_params(name))
    except SkipSample:
        return
    h, w = inputs.base.image.shape[:2]
    assert r.prompt.shape == r.query.shape == (h, w, 3)
    assert r.mask.shape == (h, w) and r.mask.dtype == np.uint8
    np.testing.assert_array_equal(r.mask.astype(bool), changed_pixels(r.prompt, r.query))
    assert r.mask.any()
    if inputs.base.ignore is not None:
        assert not r.mask[inputs.base.ignore].any()


@SETTINGS
@given(size=SIZE, seed=st.integers(0, 2**32 - 1), tol=st.integers(0, 10))
def test_finalize_mask_is_exactly_the_difference(size, seed, tol):
    rng = np.random.default_rng(seed)
    h, w = size
    prompt = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    query = prompt.copy()
    noise = rng.integers(-20, 21, (h, w, 3))
    query = np.clip(query + noise * (rng.random((h, w, 1)) < 0.5), 0, 255).astype(np.uint8)
    region = rng.random((h, w)) < 0.6
    r = finalize(prompt, query, region, tol=tol)
    assert r.prompt.tobytes() == prompt.tobytes()
    np.testing.assert_array_equal(r.mask.astype(bool), changed_pixels(r.prompt, r.query, tol))
    assert not r.mask[~region].any()
    np.testing.assert_array_equal(r.query[r.mask == 0], prompt[r.mask == 0])
    np.testing.assert_array_equal(r.query[r.mask == 1], query[r.mask == 1])


@SETTINGS
@given(size=SIZE, seed=st.integers(0, 2**32 - 1), tol=st.integers(0, 10))
def test_finalize_matches_plain_numpy_reference(size, seed, tol):
    """The OpenCV fast paths in ``changed_pixels``/``finalize`` equal the obvious numpy code."""
    rng = np.random.default_rng(seed)
    h, w = size
    prompt = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    query = np.where(rng.random((h, w, 1)) < 0.3, 255 - prompt, prompt).astype(np.uint8)
    region = rng.random((h, w)) < 0.7
    diff = np.abs(prompt.astype(int) - query.astype(int)).max(axis=2) > tol
    np.testing.assert_array_equal(changed_pixels(prompt, query, tol), diff)
    r = finalize(prompt, query, region, tol=tol, min_component=1)
    np.testing.assert_array_equal(r.mask.astype(bool), diff & region)
    np.testing.assert_array_equal(r.query, np.where((diff & region)[..., None], query, prompt))


@SETTINGS
@given(
    size=SIZE,
    seed=st.integers(0, 2**32 - 1),
    n_base=st.integers(0, 4),
    n_donor=st.integers(1, 4),
    crowd=st.booleans(),
    name=st.sampled_from(["appearance_paste", "disappearance_paste", "exchange"]),
)
def test_paste_edits_keep_the_invariant(size, seed, n_base, n_donor, crowd, name):
    h, w = size
    base = random_source(h, w, seed, n_base, "base", crowd)
    donor = random_source(h, w, seed + 1, n_donor, "donor", False)
    check_invariants(name, EditInputs(base=base, donor=donor), seed)


@SETTINGS
@given(
    size=SIZE,
    seed=st.integers(0, 2**32 - 1),
    n_base=st.integers(1, 4),
    name=st.sampled_from(["disappearance_inpaint", "appearance_inpaint"]),
)
def test_inpaint_edits_keep_the_invariant(size, seed, n_base, name):
    h, w = size
    check_invariants(name, EditInputs(base=random_source(h, w, seed, n_base, "b", True)), seed)


@SETTINGS
@given(
    size=SIZE,
    seed=st.integers(0, 2**32 - 1),
    crowd=st.booleans(),
    texture=st.sampled_from(TEXTURES),
    name=st.sampled_from(["local_texture", "local_color", "cutpaste"]),
)
def test_local_edits_keep_the_invariant(size, seed, crowd, texture, name):
    h, w = size
    base = random_source(h, w, seed, 0, "base", crowd)
    check_invariants(name, EditInputs(base=base, texture=photo(texture, h, w)), seed)
