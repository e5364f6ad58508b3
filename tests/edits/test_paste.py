"""Instance crop / scale / place / blend helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from synth.edits.paste import (
    DILATE_MAX_PX,
    bbox,
    blend_feather,
    blend_poisson,
    crop_instance,
    feather_alpha,
    place_mask,
    poisson_clone,
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


@pytest.mark.parametrize("kind", ["ellipse", "rectangle", "large", "sparse"])
def test_valid_positions_match_brute_force(kind):
    """Each way of testing placements (box sums, dilation, correlation) is exact."""
    rng = np.random.default_rng(0)
    forbidden = rng.random((40, 48)) < 0.03
    h, w = {"large": (24, 22), "rectangle": (7, 12)}.get(kind, (7, 9))
    support = {
        "ellipse": ellipse(h, w, 0.5, 0.5, 0.45, 0.45),
        "rectangle": np.ones((h, w), bool),
        "large": ellipse(h, w, 0.5, 0.5, 0.49, 0.49),
        "sparse": rng.random((h, w)) < 0.2,
    }[kind]
    assert (kind == "large") == (support.sum() > DILATE_MAX_PX)
    got = valid_positions(forbidden, support)
    assert got.shape == (40 - h + 1, 48 - w + 1) and got.dtype == bool
    for y in range(got.shape[0]):
        for x in range(got.shape[1]):
            assert got[y, x] == (not (forbidden[y : y + h, x : x + w] & support).any())


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


def _seamless_clone(canvas, patch, clone, y, x):
    """The OpenCV call ``blend_poisson`` reproduces (full-size source, box-centred point)."""
    H, W = canvas.shape[:2]
    h, w = clone.shape
    src = canvas.copy()
    src[y : y + h, x : x + w] = patch
    m = np.zeros((H, W), np.uint8)
    m[y : y + h, x : x + w] = clone.astype(np.uint8) * 255
    m[0, :] = m[-1, :] = 0
    m[:, 0] = m[:, -1] = 0
    bx, by, bw, bh = cv2.boundingRect(m)
    return cv2.seamlessClone(src, canvas, m, (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)


@pytest.mark.parametrize("shape", ["rectangle", "ellipse", "blobs", "thin"])
def test_blend_poisson_equals_opencv_seamless_clone_up_to_rounding(shape):
    """Same solve as ``cv2.seamlessClone``: only float rounding may move a value by 1."""
    rng = np.random.default_rng(1)
    canvas = photo("astronaut", 96, 128)
    for trial in range(4):
        h, w = int(rng.integers(12, 90)), int(rng.integers(12, 120))
        y, x = int(rng.integers(0, 96 - h + 1)), int(rng.integers(0, 128 - w + 1))
        patch = photo(("coffee", "rocket", "chelsea", "astronaut")[trial], h, w)
        if shape == "rectangle":
            clone = np.ones((h, w), bool)
        elif shape == "ellipse":
            clone = ellipse(h, w, 0.5, 0.5, 0.45, 0.4)
        elif shape == "blobs":
            noise = rng.random((h, w)).astype(np.float32)
            clone = cv2.GaussianBlur(noise, (0, 0), 2.5) > 0.5
        else:
            clone = np.zeros((h, w), bool)
            clone[h // 2 : h // 2 + 3, 1:-1] = True
        want = _seamless_clone(canvas, patch, clone, y, x)
        got = blend_poisson(canvas, patch, clone, y, x)
        assert got is not None and got.shape == canvas.shape and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= 1
        assert (diff > 0).mean() < 5e-3


def test_poisson_clone_keeps_the_ring_and_reproduces_a_full_clone():
    """With the whole box cloned and source == destination, the solve returns the input."""
    dest = photo("chelsea", 40, 52)
    out = poisson_clone(dest, dest, np.ones((40, 52), bool))
    assert np.abs(out.astype(int) - dest).max() <= 1
    src = photo("rocket", 40, 52)
    mask = ellipse(40, 52, 0.5, 0.5, 0.4, 0.4)
    out = poisson_clone(dest, src, mask)
    np.testing.assert_array_equal(out[[0, -1]], dest[[0, -1]])
    np.testing.assert_array_equal(out[:, [0, -1]], dest[:, [0, -1]])


def _poisson_fft64(dest, src, mask):
    """The same Poisson problem solved independently: float64 FFT DST-I (scipy)."""
    from scipy.fft import dstn, idstn

    h, w = mask.shape
    inside = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8), borderValue=0)
    d, s = dest.astype(np.float64), src.astype(np.float64)
    # Guidance: the source's forward differences where the eroded mask is set, else dest's.
    vx = np.where(inside[:, :-1, None] > 0, s[:, 1:] - s[:, :-1], d[:, 1:] - d[:, :-1])
    vy = np.where(inside[:-1, :, None] > 0, s[1:] - s[:-1], d[1:] - d[:-1])
    div = (vx[1:-1, 1:] - vx[1:-1, :-1]) + (vy[1:, 1:-1] - vy[:-1, 1:-1])
    # Move the Dirichlet ring (dest) to the right-hand side.
    ring = np.zeros_like(d)
    ring[0], ring[-1], ring[:, 0], ring[:, -1] = d[0], d[-1], d[:, 0], d[:, -1]
    div -= ring[:-2, 1:-1] + ring[2:, 1:-1] + ring[1:-1, :-2] + ring[1:-1, 2:]
    lam = (2 * np.cos(np.pi * np.arange(1, h - 1) / (h - 1)) - 2)[:, None] + (
        2 * np.cos(np.pi * np.arange(1, w - 1) / (w - 1)) - 2
    )[None, :]
    u = idstn(dstn(div, type=1, axes=(0, 1)) / lam[..., None], type=1, axes=(0, 1))
    out = dest.copy()
    out[1:-1, 1:-1] = np.clip(u, 0, 255).astype(np.uint8)
    return out


def test_poisson_clone_does_not_depend_on_how_the_transform_rounds():
    """Equal to a float64 FFT solve: BLAS kernels differ by CPU type, the bytes must not.

    A float32 transform puts about 1 channel value in 2*10^4 on the other side of a
    truncation, which these pastes (~2*10^5 values) would show.
    """
    rng = np.random.default_rng(3)
    names = ("astronaut", "coffee", "chelsea", "rocket")
    n_values = 0
    for trial in range(24):
        h, w = int(rng.integers(16, 110)), int(rng.integers(16, 110))
        dest, src = photo(names[trial % 4], h, w), photo(names[(trial + 1) % 4], h, w)
        noise = rng.random((h, w)).astype(np.float32)
        mask = cv2.GaussianBlur(noise, (0, 0), 2.5) > 0.45
        if trial % 3 == 0:
            mask = ellipse(h, w, 0.5, 0.5, 0.45, 0.4)
        mask[[0, -1]] = False
        mask[:, [0, -1]] = False
        if not mask.any():
            continue
        y0, x0, y1, x1 = bbox(mask)
        box = (slice(y0, y1), slice(x0, x1))
        if y1 - y0 < 3 or x1 - x0 < 3:
            continue
        d, s, m = dest[box].copy(), src[box].copy(), mask[box].copy()
        np.testing.assert_array_equal(poisson_clone(d, s, m), _poisson_fft64(d, s, m))
        n_values += d.size
    assert n_values > 100_000
