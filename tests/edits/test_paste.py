"""Instance crop / scale / place / blend helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from synth.edits.paste import (
    bbox,
    blend_feather,
    blend_poisson,
    crop_instance,
    feather_alpha,
    place_mask,
    sample_position,
    scale_patch,
    valid_positions,
)

from .photos import ellipse, photo


def test_bbox_and_empty_mask():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert bbox(m) == (2, 3, 5, 9)
    with pytest.raises(ValueError):
        bbox(np.zeros((4, 4), bool))


def test_crop_instance_keeps_margin_and_replicates_past_the_border():
    img = photo("coffee", 40, 60)
    m = np.zeros((40, 60), bool)
    m[0:10, 50:60] = True
    patch, pm = crop_instance(img, m, margin=4)
    assert patch.shape == (18, 18, 3) and pm.shape == (18, 18)
    assert pm.sum() == m.sum() and not pm[:4].any() and not pm[:, -4:].any()
    np.testing.assert_array_equal(patch[4:14, 4:14], img[0:10, 50:60])
    np.testing.assert_array_equal(patch[0, 4:14], img[0, 50:60])


def test_scale_patch_shapes_and_no_mutation():
    img = photo("chelsea", 50, 50)
    m = ellipse(50, 50, 0.5, 0.5, 0.3, 0.3)
    img0, m0 = img.copy(), m.copy()
    p2, m2 = scale_patch(img, m, 0.5)
    assert p2.shape == (25, 25, 3) and m2.shape == (25, 25) and m2.dtype == bool
    assert abs(m2.sum() - m.sum() / 4) < 0.1 * m.sum()
    p3, m3 = scale_patch(img, m, 1.5)
    assert p3.shape == (75, 75, 3) and m3.shape == (75, 75)
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(m, m0)


def test_feather_alpha_range_and_support():
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    a = feather_alpha(m, 2.0)
    assert a.dtype == np.float32 and a.min() == 0.0 and a.max() <= 1.0
    assert a[20, 20] == pytest.approx(1.0, abs=1e-3)
    assert a[0, 0] == 0.0 and 0.3 < a[10, 20] < 0.7
    np.testing.assert_array_equal(feather_alpha(m, 0.0), m.astype(np.float32))


def test_valid_positions_match_brute_force():
    rng = np.random.default_rng(0)
    forbidden = rng.random((24, 30)) < 0.05
    support = ellipse(7, 9, 0.5, 0.5, 0.45, 0.45)
    got = valid_positions(forbidden, support)
    assert got.shape == (24 - 7 + 1, 30 - 9 + 1)
    for y in range(got.shape[0]):
        for x in range(got.shape[1]):
            assert got[y, x] == (not (forbidden[y : y + 7, x : x + 9] & support).any())


def test_sample_position_avoids_forbidden_or_returns_none():
    forbidden = np.zeros((30, 40), bool)
    forbidden[:, :30] = True
    support = np.ones((5, 5), bool)
    for seed in range(5):
        y, x = sample_position(forbidden, support, np.random.default_rng(seed))
        assert x >= 30 and not (place_mask((30, 40), support, y, x) & forbidden).any()
    assert sample_position(np.ones((30, 40), bool), support, np.random.default_rng(0)) is None
    assert sample_position(forbidden, np.ones((31, 5), bool), np.random.default_rng(0)) is None


def test_blend_feather_alpha_one_copies_patch_and_leaves_canvas():
    canvas = photo("astronaut", 32, 32)
    before = canvas.copy()
    patch = np.full((8, 10, 3), 7, np.uint8)
    alpha = np.zeros((8, 10), np.float32)
    alpha[2:6, 2:8] = 1.0
    out = blend_feather(canvas, patch, alpha, 3, 4)
    np.testing.assert_array_equal(canvas, before)
    assert (out[5:9, 6:12] == 7).all()
    changed = (out != canvas).any(axis=2)
    assert not changed[:5].any() and not changed[9:].any()


@pytest.mark.parametrize("where", ["corner", "bottom_right", "middle"])
def test_blend_poisson_handles_borders(where):
    canvas = photo("rocket", 48, 64)
    patch = photo("coffee", 20, 24)
    clone = np.ones((20, 24), bool)
    y, x = {"corner": (0, 0), "bottom_right": (28, 40), "middle": (14, 20)}[where]
    out = blend_poisson(canvas, patch, clone, y, x)
    assert out is not None and out.shape == canvas.shape and out.dtype == np.uint8
    outside = ~place_mask((48, 64), clone, y, x)
    np.testing.assert_array_equal(out[outside], canvas[outside])


def test_blend_poisson_refuses_degenerate_masks():
    canvas = photo("rocket", 48, 64)
    clone = np.zeros((4, 4), bool)
    clone[0, :] = True
    assert blend_poisson(canvas, np.zeros((4, 4, 3), np.uint8), clone, 0, 0) is None


def test_blend_poisson_keeps_the_patch_aligned():
    """The gradients inside the clone region come from the patch at the same offset."""
    rng = np.random.default_rng(0)
    canvas = photo("astronaut", 96, 128)
    noise = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    patch = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 1.5), None, 0, 255, cv2.NORM_MINMAX)
    clone = np.ones((30, 40), bool)
    out = blend_poisson(canvas, patch, clone, 21, 57)

    def highpass(a):
        a = a.astype(np.float32)
        return (a - cv2.GaussianBlur(a, (0, 0), 3)).mean(axis=2)

    got = highpass(out)[21 + 6 : 21 + 24, 57 + 6 : 57 + 34]
    want = highpass(patch)[6:24, 6:34]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9
