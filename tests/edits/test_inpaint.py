"""OpenCV inpainter and the inpainter factory."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from synth.edits.inpaint import INPAINTERS, OpenCVInpainter, create_inpainter
from synth.errors import ConfigError

from .photos import ellipse, photo


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_opencv_inpainter_changes_only_the_hole(method):
    img = photo("astronaut", 64, 80)
    before = img.copy()
    hole = ellipse(64, 80, 0.5, 0.5, 0.2, 0.2)
    out = OpenCVInpainter(method=method, radius=3)(img, hole)
    np.testing.assert_array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], img[~hole])
    assert (out[hole] != img[hole]).any()


def test_factory_defaults_and_arguments():
    default = create_inpainter(None)
    assert isinstance(default, OpenCVInpainter)
    assert (default.method, default.radius) == ("telea", 5)
    ns = create_inpainter({"kind": "opencv", "method": "ns", "radius": 2})
    assert (ns.method, ns.radius) == ("ns", 2)
    assert "opencv" in INPAINTERS


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "lama"}, "inpainter.kind"),
        ({"kind": "opencv", "method": "magic"}, "inpainter.method"),
        ({"kind": "opencv", "radius": 0}, "inpainter.radius"),
        ({"kind": "opencv", "size": 3}, "bad arguments"),
    ],
)
def test_factory_rejects_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        create_inpainter(spec)


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_cropped_inpainting_equals_whole_image_inpainting(method):
    """The full-resolution path (half scale off) only crops: its fill is OpenCV's, bit for bit."""
    img = photo("coffee", 80, 100)
    rng = np.random.default_rng(0)
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    for _ in range(6):
        hole = np.zeros((80, 100), np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            centre = (int(rng.integers(0, 100)), int(rng.integers(0, 80)))
            axes = (int(rng.integers(2, 20)), int(rng.integers(2, 20)))
            cv2.ellipse(hole, centre, axes, 0, 0, 360, 1, -1)
        radius = int(rng.integers(1, 7))
        want = cv2.inpaint(img, hole, radius, flag)
        inpainter = OpenCVInpainter(method=method, radius=radius, half_scale_above=None)
        np.testing.assert_array_equal(inpainter(img, hole.astype(bool)), want)
    empty = np.zeros((80, 100), bool)
    np.testing.assert_array_equal(OpenCVInpainter()(img, empty), img)


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    err = (a.astype(np.float64) - b.astype(np.float64))[where]
    return float(10 * np.log10(255.0**2 / max(float(np.mean(err**2)), 1e-12)))


@pytest.mark.parametrize("method", ["telea", "ns"])
@pytest.mark.parametrize(("h", "w"), [(256, 256), (97, 131)])
def test_half_scale_fill_touches_only_the_hole_and_is_close_to_full_res(method, h, w):
    for name, (cy, cx, ry, rx) in [
        ("astronaut", (0.5, 0.5, 0.22, 0.18)),
        ("coffee", (0.4, 0.6, 0.2, 0.3)),
        ("chelsea", (0.9, 0.05, 0.2, 0.2)),  # clipped by the bottom-left corner
    ]:
        img = photo(name, h, w)
        before = img.copy()
        hole = ellipse(h, w, cy, cx, ry, rx)
        half = OpenCVInpainter(method=method, half_scale_above=0)(img, hole)
        full = OpenCVInpainter(method=method, half_scale_above=None)(img, hole)
        np.testing.assert_array_equal(img, before)
        assert half.shape == img.shape and half.dtype == np.uint8
        np.testing.assert_array_equal(half[~hole], img[~hole])
        assert (half[hole] != img[hole]).any()
        assert _psnr(half, full, hole) > 20.0
        np.testing.assert_array_equal(OpenCVInpainter(method, half_scale_above=0)(img, hole), half)


def test_half_scale_threshold_counts_hole_pixels():
    img = photo("coffee", 80, 100)
    hole = ellipse(80, 100, 0.5, 0.5, 0.25, 0.25)
    n = int(hole.sum())
    exact = cv2.inpaint(img, hole.view(np.uint8), 5, cv2.INPAINT_TELEA)
    np.testing.assert_array_equal(OpenCVInpainter(half_scale_above=n)(img, hole), exact)
    assert not np.array_equal(OpenCVInpainter(half_scale_above=n - 1)(img, hole), exact)


def test_half_scale_option_in_factory_and_repr():
    inp = create_inpainter({"kind": "opencv", "half_scale_above": None})
    assert inp.half_scale_above is None and "half_scale_above=None" in repr(inp)
    assert create_inpainter(None).half_scale_above == 1024
    with pytest.raises(ConfigError, match="inpainter.half_scale_above"):
        create_inpainter({"kind": "opencv", "half_scale_above": -1})


def _high_frequency_energy(img: np.ndarray, region: np.ndarray) -> float:
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F))[region].mean())


def test_patchmatch_fills_with_texture_where_telea_smears():
    """Large holes in a textured photo: Telea's diffusion leaves a smooth smear (a cue a change
    model can learn), PatchMatch copies patches and keeps the surrounding texture's energy."""
    from skimage import data

    brick = np.repeat(data.brick()[:128, :128, None], 3, axis=2)
    hole = np.zeros((128, 128), bool)
    hole[32:96, 40:100] = True
    telea = OpenCVInpainter()(brick, hole)
    patch = create_inpainter({"kind": "patchmatch"})(brick, hole)
    inner = np.zeros_like(hole)
    inner[40:88, 48:92] = True  # away from the hole's border
    around = _high_frequency_energy(brick, ~hole)
    assert _high_frequency_energy(patch, inner) > 0.5 * around
    assert _high_frequency_energy(telea, inner) < 0.25 * around


def test_patchmatch_is_deterministic_and_changes_only_the_hole():
    img = photo("astronaut", 64, 80)
    before = img.copy()
    hole = ellipse(64, 80, 0.5, 0.5, 0.2, 0.25)
    inpaint = create_inpainter({"kind": "patchmatch", "patch_size": 5})
    out = inpaint(img, hole)
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(out[~hole], img[~hole])
    np.testing.assert_array_equal(out, inpaint(img, hole))
    assert (out[hole] != img[hole]).any()
    assert np.array_equal(inpaint(img, np.zeros_like(hole)), img)
    with pytest.raises(ConfigError, match="patch_size"):
        create_inpainter({"kind": "patchmatch", "patch_size": 4})
