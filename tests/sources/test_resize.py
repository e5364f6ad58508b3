"""resize_source_image / resize_rgb: sizes, interpolation, exact masks, purity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from synth.sources.base import Instance, SourceImage
from synth.sources.resize import nearest_indices, resize_mask, resize_rgb, resize_source_image


def _item() -> SourceImage:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    big = np.zeros((40, 60), bool)
    big[10:30, 20:50] = True
    dot = np.zeros((40, 60), bool)
    dot[0, 1] = True
    ignore = np.zeros((40, 60), bool)
    ignore[35:, :] = True
    return SourceImage(
        key="t:1",
        image=image,
        instances=(Instance(big, category=3, ann_id=7), Instance(dot, category=1, ann_id=8)),
        ignore=ignore,
    )


@pytest.mark.parametrize("size", [(20, 30), (80, 120), (40, 90), (33, 17)])
def test_shapes_and_dtypes(size):
    out = resize_source_image(_item(), size)
    assert out.image.shape == (*size, 3) and out.image.dtype == np.uint8
    assert out.key == "t:1"
    for inst in out.instances:
        assert inst.mask.shape == size and inst.mask.dtype == bool and inst.mask.any()
    assert out.ignore.shape == size and out.ignore.dtype == bool


def test_masks_stay_binary_and_aligned():
    out = resize_source_image(_item(), (80, 120))
    big = out.instances[0]
    assert (big.category, big.ann_id) == (3, 7)
    expected = np.zeros((80, 120), bool)
    expected[20:60, 40:100] = True
    np.testing.assert_array_equal(big.mask, expected)


def test_vanishing_instance_is_dropped():
    out = resize_source_image(_item(), (10, 15))
    assert [inst.ann_id for inst in out.instances] == [7]


def test_downscale_uses_area_averaging():
    image = np.zeros((4, 4, 3), np.uint8)
    image[::2, ::2] = 255
    np.testing.assert_array_equal(resize_rgb(image, (2, 2)), np.full((2, 2, 3), 64, np.uint8))


def test_upscale_is_smooth():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 200
    row = resize_rgb(image, (2, 8))[0, :, 0]
    assert np.all(np.diff(row.astype(int)) >= 0) and 0 < row[3] < 200


def test_inputs_not_mutated_and_same_size_is_identity():
    item = _item()
    copies = (item.image.copy(), item.instances[0].mask.copy(), item.ignore.copy())
    resize_source_image(item, (23, 31))
    np.testing.assert_array_equal(item.image, copies[0])
    np.testing.assert_array_equal(item.instances[0].mask, copies[1])
    np.testing.assert_array_equal(item.ignore, copies[2])
    assert resize_source_image(item, (40, 60)) is item


def test_empty_ignore_becomes_none():
    item = _item()
    shrunk = SourceImage(item.key, item.image, item.instances, ignore=item.instances[1].mask)
    assert resize_source_image(shrunk, (10, 15)).ignore is None


def test_gray_and_mask_helpers():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert resize_rgb(gray, (8, 8)).shape == (8, 8)
    assert resize_mask(np.eye(4, dtype=bool), (8, 8)).dtype == bool


@pytest.mark.parametrize("size", [(0, 5), (5, -1), (2.5, 3), (1,), "ab"])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        resize_source_image(_item(), size)


def test_nearest_indices_are_opencv_inter_nearest():
    for src in (1, 2, 3, 17, 99, 100, 255, 256, 257, 333, 425, 480, 640, 1001):
        row = np.arange(src, dtype=np.float32)[None, :]
        for dst in (1, 2, 7, 64, 100, 128, 224, 256, 300, 512, 999):
            want = cv2.resize(row, (dst, 1), interpolation=cv2.INTER_NEAREST)[0].astype(np.intp)
            np.testing.assert_array_equal(nearest_indices(src, dst), want, err_msg=f"{src}->{dst}")


def test_resize_mask_accepts_views_and_non_bool():
    m = np.zeros((40, 60), np.uint8)
    m[10:30, 20:50] = 7
    np.testing.assert_array_equal(resize_mask(m, (20, 30)), resize_mask(m > 0, (20, 30)))
    big = np.zeros((40, 60, 2), bool)
    big[..., 1] = m > 0
    np.testing.assert_array_equal(resize_mask(big[..., 1], (20, 30)), resize_mask(m > 0, (20, 30)))
