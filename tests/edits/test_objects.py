"""Object edits: paste, inpaint and exchange specifics (limits, roles, backends)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from synth.edits import apply_edit, make_params
from synth.edits.common import dilate, pick_subset, union_mask
from synth.errors import ConfigError

from .photos import make_inputs


def test_pick_subset_respects_k_and_union_budget():
    masks = [np.zeros((10, 10), bool) for _ in range(4)]
    masks[0][:5] = True  # 50 px
    masks[1][:3] = True  # 30 px, inside masks[0]
    masks[2][8:] = True  # 20 px
    masks[3][:, :] = True  # 100 px
    for seed in range(10):
        got = pick_subset(masks, 3, 60, np.random.default_rng(seed))
        assert 1 <= len(got) <= 3 and 3 not in got
        assert np.logical_or.reduce([masks[i] for i in got]).sum() <= 60
    assert pick_subset(masks, 1, 10, np.random.default_rng(0)) == []
    assert len(pick_subset(masks, 1, 100, np.random.default_rng(0))) == 1


@pytest.mark.parametrize("px", [0, 1, 3, 5])
def test_dilate_equals_dilating_the_whole_image(px):
    """``dilate`` works on the mask's box only; the result must not depend on that."""
    rng = np.random.default_rng(px)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    for h, w in [(1, 1), (9, 14), (64, 48)]:
        for density in (0.0, 0.01, 0.2):
            m = rng.random((h, w)) < density
            m[rng.integers(h), 0] = density > 0  # touch the border too
            want = cv2.dilate(m.astype(np.uint8), kernel).astype(bool)
            got = dilate(m, px)
            assert got.dtype == bool and not np.shares_memory(got, m)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("blend", ["feather", "poisson"])
def test_appearance_paste_limits_and_avoidance(blend):
    inputs = make_inputs(128, 160)
    H, W = 128, 160
    instances = union_mask(inputs.base, range(len(inputs.base.instances)))
    for seed in range(6):
        r = apply_edit(
            "appearance_paste",
            inputs,
            np.random.default_rng(seed),
            {"blend": blend, "max_paste_area": 0.08, "scale_range": (0.8, 1.2)},
        )
        recs = r.info["pasted"]
        assert 1 <= len(recs) <= 3
        assert sum(rec["area"] for rec in recs) <= 0.08 * H * W
        assert all(rec["scale"] <= 1.2 for rec in recs)
        assert all(rec["blend"] == blend for rec in recs)
        assert not (r.mask.astype(bool) & instances).any()


def test_paste_k_range_one():
    inputs = make_inputs(96, 128)
    for seed in range(4):
        r = apply_edit("appearance_paste", inputs, np.random.default_rng(seed), {"k_range": (1, 1)})
        assert len(r.info["pasted"]) == 1


def test_disappearance_inpaint_subset_and_area():
    inputs = make_inputs(96, 128)
    H, W = 96, 128
    areas = {inst.ann_id: inst.area for inst in inputs.base.instances}
    for seed in range(6):
        r = apply_edit(
            "disappearance_inpaint",
            inputs,
            np.random.default_rng(seed),
            {"k_range": (1, 1), "max_remove_area": 0.06},
        )
        (removed,) = r.info["removed"]
        assert areas[removed] <= 0.06 * H * W
        idx = [i.ann_id for i in inputs.base.instances].index(removed)
        hole = dilate(inputs.base.instances[idx].mask, 5)
        assert not (r.mask.astype(bool) & ~hole).any()


class PaintGreen:
    """A fake inpainting backend: fills the hole with pure green."""

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = image.copy()
        out[mask] = (0, 255, 0)
        return out


@pytest.mark.parametrize(
    ("name", "side"), [("disappearance_inpaint", "query"), ("appearance_inpaint", "prompt")]
)
def test_inpaint_edits_use_the_given_backend(name, side):
    inputs = dataclasses.replace(make_inputs(96, 128), inpainter=PaintGreen())
    r = apply_edit(name, inputs, np.random.default_rng(0))
    edited = getattr(r, side)
    assert (edited[r.mask == 1] == (0, 255, 0)).all()
    assert "PaintGreen" in r.info["inpainter"]


def test_exchange_replaces_removed_objects_with_other_categories():
    inputs = make_inputs(128, 128)
    for seed in range(5):
        r = apply_edit("exchange", inputs, np.random.default_rng(seed), {"blend": "feather"})
        assert len(r.info["pasted"]) == len(r.info["removed"]) >= 1
        cats = {i.ann_id: i.category for i in inputs.base.instances}
        for rec in r.info["pasted"]:
            assert rec["category"] != cats[rec["replaces"]]
        removed = [i for i in inputs.base.instances if i.ann_id in r.info["removed"]]
        footprint = np.logical_or.reduce([i.mask for i in removed])
        assert r.mask[footprint].mean() > 0.5


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("appearance_paste", {"blend": "laplacian"}),
        ("appearance_paste", {"k_range": (3, 1)}),
        ("appearance_paste", {"max_paste_area": 1.5}),
        ("disappearance_inpaint", {"k_range": (0, 2)}),
        ("exchange", {"scale_jitter": (2.0, 1.0)}),
    ],
)
def test_bad_params_raise_config_error(name, overrides):
    field = next(iter(overrides))
    with pytest.raises(ConfigError, match=rf"^edits\.{name}\.{field}: "):
        make_params(name, overrides)
