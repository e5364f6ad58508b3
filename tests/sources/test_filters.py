"""The instance filters shared by the COCO, folder and tar-sharded sources."""

from __future__ import annotations

import numpy as np
import pytest

from synth.errors import ConfigError
from synth.sources.filters import check_instance_filters, keep_instances


@pytest.mark.parametrize(
    "args",
    [(0.0, 1.0, 0), (0, 1, 0), (0.3, 0.3, 5), (1.0, 1.0, 0), (0.0, 0.0, 0)],
)
def test_check_accepts_inclusive_bounds(args):
    check_instance_filters(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (0.5, 0.1, 0),
            "min_area_frac=0.5, max_area_frac=0.1: need 0 <= min_area_frac <= max_area_frac <= 1",
        ),
        (
            (-0.1, 1.0, 0),
            "min_area_frac=-0.1, max_area_frac=1.0: need 0 <= min_area_frac <= max_area_frac <= 1",
        ),
        (
            (0, 2, 0),  # shown as given, not converted
            "min_area_frac=0, max_area_frac=2: need 0 <= min_area_frac <= max_area_frac <= 1",
        ),
        ((0.0, 1.0, -1), "min_side=-1: must be >= 0 pixels"),
    ],
)
def test_check_rejects_with_one_line_message(args, message):
    with pytest.raises(ConfigError) as err:
        check_instance_filters(*args)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_check_tests_area_before_side():
    with pytest.raises(ConfigError, match="^min_area_frac="):
        check_instance_filters(0.5, 0.1, -1)


def test_keep_area_window_and_side_inclusive():
    areas = np.array([10, 20, 50, 80, 20])
    boxes = np.array([[0, 0, 5, 2], [0, 0, 4, 5], [0, 0, 10, 5], [0, 0, 10, 8], [0, 0, 3, 9]])
    kw = {"min_area_frac": 0.2, "max_area_frac": 0.5, "min_side": 0}
    assert keep_instances(areas, boxes, 100.0, **kw).tolist() == [False, True, True, False, True]
    kw["min_side"] = 4
    assert keep_instances(areas, boxes, 100.0, **kw).tolist() == [False, True, True, False, False]


def test_keep_per_instance_image_area_and_scalars():
    areas = np.array([25, 25])
    got = keep_instances(
        areas, None, np.array([100.0, 50.0]), min_area_frac=0.0, max_area_frac=0.25, min_side=0
    )
    assert got.tolist() == [True, False]
    one = keep_instances(
        4.0, np.array([0, 0, 2, 2]), 16.0, min_area_frac=0.25, max_area_frac=0.25, min_side=2
    )
    assert bool(one) is True
    empty = keep_instances(0.0, np.zeros(4), 16.0, min_area_frac=0.0, max_area_frac=1.0, min_side=1)
    assert bool(empty) is False
