"""Perlin noise and Perlin region masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from synth.edits.base import remove_specks
from synth.edits.perlin import drop_specks, perlin_mask, perlin_noise, rotate_noise
from synth.errors import SkipSample


@pytest.mark.parametrize(
    ("shape", "res"), [((256, 256), (1, 1)), ((96, 128), (8, 32)), ((37, 53), (5, 3))]
)
def test_noise_shape_dtype_and_range(shape, res):
    n = perlin_noise(shape, res, np.random.default_rng(0))
    assert n.shape == shape and n.dtype == np.float32
    assert np.isfinite(n).all()
    assert n.min() >= -1.0 and n.max() <= 1.0
    assert n.std() > 0.05


def test_noise_is_zero_on_lattice_points_and_smooth():
    n = perlin_noise((64, 64), (4, 4), np.random.default_rng(1))
    np.testing.assert_allclose(n[::16, ::16], 0.0, atol=1e-6)
    assert np.abs(np.diff(n, axis=0)).max() < 0.2
    assert np.abs(np.diff(n, axis=1)).max() < 0.2


@pytest.mark.parametrize(("shape", "res"), [((12, 20), (3, 7)), ((16, 24), (2, 4))])
def test_noise_matches_a_per_pixel_reference(shape, res):
    """Both the uneven-cell and the even-cell (broadcast) expansion paths."""
    got = perlin_noise(shape, res, np.random.default_rng(5))
    angles = np.random.default_rng(5).uniform(0.0, 2.0 * np.pi, (res[0] + 1, res[1] + 1))
    gy, gx = np.sin(angles), np.cos(angles)

    def fade(t):
        return t * t * t * (t * (t * 6 - 15) + 10)

    for y in range(shape[0]):
        for x in range(shape[1]):
            Y, X = y * res[0] / shape[0], x * res[1] / shape[1]
            i, j = int(Y), int(X)
            fy, fx = Y - i, X - j

            def dot(di, dj, i=i, j=j, fy=fy, fx=fx):
                return gy[i + di, j + dj] * (fy - di) + gx[i + di, j + dj] * (fx - dj)

            top = dot(0, 0) + fade(fx) * (dot(0, 1) - dot(0, 0))
            bottom = dot(1, 0) + fade(fx) * (dot(1, 1) - dot(1, 0))
            want = (top + fade(fy) * (bottom - top)) * np.sqrt(2.0)
            assert abs(got[y, x] - want) < 1e-5


def test_noise_is_deterministic_per_generator():
    a = perlin_noise((40, 60), (4, 4), np.random.default_rng(3))
    b = perlin_noise((40, 60), (4, 4), np.random.default_rng(3))
    c = perlin_noise((40, 60), (4, 4), np.random.default_rng(4))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_rotation_keeps_shape_and_zero_fills_corners():
    n = np.ones((96, 128), np.float32)
    r = rotate_noise(n, 45.0)
    assert r.shape == n.shape and r.dtype == np.float32
    assert r[0, 0] == 0.0 and r[-1, -1] == 0.0
    assert r[48, 64] == pytest.approx(1.0)
    np.testing.assert_allclose(rotate_noise(n, 0.0), n)


def test_mask_respects_min_px_allowed_and_drops_specks():
    allowed = np.zeros((96, 128), bool)
    allowed[:, 64:] = True
    m, meta = perlin_mask((96, 128), np.random.default_rng(0), allowed=allowed, min_px=32)
    assert m.dtype == bool and m.shape == (96, 128)
    assert m.sum() >= 32 and not m[:, :64].any()
    assert {"scale_y", "scale_x", "angle", "tries"} <= set(meta)
    assert drop_specks(m, 16).sum() == m.sum()


def test_mask_scales_are_powers_of_two_in_range():
    for seed in range(10):
        _, meta = perlin_mask((64, 64), np.random.default_rng(seed), scale_exp_range=(2, 4))
        assert meta["scale_y"] in (4, 8) and meta["scale_x"] in (4, 8)


def test_impossible_threshold_skips_after_bounded_tries():
    with pytest.raises(SkipSample, match="3 tries"):
        perlin_mask((32, 32), np.random.default_rng(0), threshold=1.0, max_tries=3)


def test_drop_specks_removes_small_components_only():
    m = np.zeros((20, 20), bool)
    m[0:2, 0:2] = True
    m[10:16, 10:16] = True
    out = drop_specks(m, 16)
    assert not out[0:2, 0:2].any() and out[10:16, 10:16].all()
    assert m[0:2, 0:2].all()


def _drop_by_whole_image_labels(mask: np.ndarray, min_px: int) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False
    return keep[labels]


def test_drop_specks_equals_labelling_the_whole_image():
    rng = np.random.default_rng(2)
    masks = [np.zeros((9, 9), bool), rng.random((70, 90)) < 0.3, rng.random((256, 256)) < 0.6]
    dots = np.zeros((520, 520), bool)
    dots[1::2, 1::2] = True  # 67600 one-pixel components: needs 32-bit labels
    dots[100:140, 200:260] = True
    for m in [*masks, dots]:
        for min_px in (2, 5, 16):
            want = _drop_by_whole_image_labels(m, min_px)
            np.testing.assert_array_equal(drop_specks(m, min_px), want)
            np.testing.assert_array_equal(remove_specks(m, min_px), want)
    np.testing.assert_array_equal(remove_specks(dots, 1), dots)
