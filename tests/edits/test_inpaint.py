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
        got = OpenCVInpainter(method=method, radius=radius)(img, hole.astype(bool))
        np.testing.assert_array_equal(got, want)
    empty = np.zeros((80, 100), bool)
    np.testing.assert_array_equal(OpenCVInpainter()(img, empty), img)
