"""MaskFilter: the COCO filters' meaning, SAM's scores, and the highest-predicted_iou cap."""

from __future__ import annotations

import numpy as np
import pytest

from synth.errors import ConfigError
from synth.index.select import MaskFilter
from synth.index.tar_index import TarIndex


def _index(per_image: list[list[tuple[int, int, int, float, float]]], hw=(100, 200)) -> TarIndex:
    """Masks given as (area, box w, box h, predicted_iou, stability_score) per image."""
    rows = [m for ms in per_image for m in ms]
    n, counts = len(per_image), [len(ms) for ms in per_image]
    z = np.zeros(n, np.int64)
    return TarIndex(
        tar="t.tar",
        key="k",
        names=np.zeros(0, np.uint8),
        name_offsets=np.zeros(n + 1, np.int64),
        jpg_offsets=z,
        jpg_sizes=z,
        json_offsets=z,
        json_sizes=z,
        heights=np.full(n, hw[0], np.int32),
        widths=np.full(n, hw[1], np.int32),
        mask_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        positions=np.concatenate([np.arange(c) for c in counts]).astype(np.uint32),
        bboxes=np.array([[0, 0, w, h] for _, w, h, _, _ in rows], np.uint16).reshape(-1, 4),
        areas=np.array([a for a, *_ in rows], np.uint32),
        predicted_iou=np.array([r[3] for r in rows], np.float32),
        stability_score=np.array([r[4] for r in rows], np.float32),
    )


IMAGE = [
    (100, 10, 10, 0.90, 0.95),  # 0.5% of 20000 px
    (2000, 50, 40, 0.80, 0.99),  # 10%
    (15000, 150, 100, 0.99, 0.90),  # 75%: background-like
    (600, 30, 5, 0.95, 0.80),  # thin
    (600, 30, 30, 0.95, 0.85),  # same iou as the thin one, more stable
]


def test_filters_mean_what_the_coco_filters_mean_plus_scores():
    idx = _index([IMAGE, []])
    assert MaskFilter().usable(idx).tolist() == [True] * 5
    assert MaskFilter(min_area_frac=0.01, max_area_frac=0.5).usable(idx).tolist() == [
        False,
        True,
        False,
        True,
        True,
    ]
    assert MaskFilter(min_side=10).usable(idx).tolist() == [True, True, True, False, True]
    assert MaskFilter(min_predicted_iou=0.9).usable(idx).tolist() == [True, False, True, True, True]
    assert MaskFilter(min_stability_score=0.9).usable(idx, 0).tolist() == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert MaskFilter(min_side=10).counts(idx).tolist() == [4, 0]


def test_cap_keeps_highest_predicted_iou_then_stability_in_json_order():
    idx = _index([[(1, 1, 1, 0.5, 0.5)], IMAGE])
    assert MaskFilter(max_masks=2).picked(idx, 1).tolist() == [1 + 2, 1 + 4]
    assert MaskFilter(max_masks=3).picked(idx, 1).tolist() == [1 + 2, 1 + 3, 1 + 4]
    assert MaskFilter(max_masks=9).picked(idx, 1).tolist() == [1, 2, 3, 4, 5]
    assert MaskFilter(max_masks=2).counts(idx).tolist() == [1, 2]
    # filters first, then the cap: the background-like mask is gone before it can be chosen
    assert MaskFilter(max_area_frac=0.5, max_masks=2).picked(idx, 1).tolist() == [1 + 3, 1 + 4]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"min_area_frac": 0.6, "max_area_frac": 0.5}, "min_area_frac=0.6"),
        ({"min_side": -1}, "min_side=-1"),
        ({"min_predicted_iou": 1.5}, "min_predicted_iou=1.5"),
        ({"max_masks": 0}, "max_masks=0"),
        ({"max_masks": 2.5}, "max_masks=2.5: must be a whole number"),
        ({"min_side": "16"}, "min_side='16': must be a whole number"),
        ({"min_area_frac": None}, "min_area_frac=None: must be a number"),
    ],
)
def test_out_of_range_values_name_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        MaskFilter(**kw)


def test_ints_and_floats_make_one_filter():
    """``min_area_frac: 0`` and ``0.0`` in two YAML files must name the same tar summary."""
    a = MaskFilter(min_area_frac=0, max_area_frac=1, min_side=np.int64(16))
    b = MaskFilter(min_area_frac=0.0, max_area_frac=1.0, min_side=16)
    assert a == b and repr(a.to_dict()) == repr(b.to_dict())
