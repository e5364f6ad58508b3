"""Local-region edits and their pixel helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from synth.edits import apply_edit, changed_pixels, make_params
from synth.edits.local import COLOR_OPS, blend_texture, rotate_patch, shift_brightness
from synth.errors import ConfigError, SkipSample

from .photos import make_inputs, photo


def test_blend_texture_formula():
    img, tex = photo("coffee", 40, 50), photo("grass", 40, 50)
    mask = np.zeros((40, 50), bool)
    mask[5:25, 10:40] = True
    w = 0.37
    out = blend_texture(img, tex, mask, w)
    m = mask[..., None].astype(np.float32)
    want = img * (1 - m) + w * tex * m + (1 - w) * img * m
    assert np.abs(out.astype(np.float32) - want).max() <= 1.0
    np.testing.assert_array_equal(out[~mask], img[~mask])


def test_local_texture_full_weight_writes_the_texture():
    inputs = make_inputs(96, 128)
    r = apply_edit(
        "local_texture",
        inputs,
        np.random.default_rng(2),
        {"weight_range": (1.0, 1.0), "n_augment": 0},
    )
    sel = r.mask == 1
    np.testing.assert_array_equal(r.query[sel], inputs.texture[sel])
    assert r.info["augmentations"] == [] and r.info["weight"] == 1.0


def test_local_texture_threshold_controls_region_size():
    inputs = make_inputs(96, 128)
    areas = [
        apply_edit("local_texture", inputs, np.random.default_rng(1), {"threshold": t}).mask.sum()
        for t in (0.2, 0.5)
    ]
    assert areas[0] > areas[1]


@pytest.mark.parametrize("op", COLOR_OPS)
def test_local_color_each_op(op):
    inputs = make_inputs(96, 128, base="astronaut")
    for seed in range(5):
        try:
            r = apply_edit("local_color", inputs, np.random.default_rng(seed), {"ops": (op,)})
        except SkipSample:
            continue
        assert [o["op"] for o in r.info["ops"]] == [op]
        assert r.mask.any()
        np.testing.assert_array_equal(r.mask.astype(bool), changed_pixels(r.prompt, r.query))
        return
    pytest.fail(f"local_color op {op} never changed anything")


@pytest.mark.parametrize("mode", ["patch", "scar"])
def test_cutpaste_modes(mode):
    inputs = make_inputs(128, 128, crowd=False)
    r = apply_edit("cutpaste", inputs, np.random.default_rng(3), {"mode": mode})
    assert r.info["mode"] == mode
    ph, pw = r.info["size"]
    y, x = r.info["target"]
    ys, xs = np.nonzero(r.mask)
    if mode == "patch":
        assert ys.min() >= y and ys.max() < y + ph and xs.min() >= x and xs.max() < x + pw
        assert 0.02 * 128 * 128 * 0.8 <= ph * pw <= 0.15 * 128 * 128 * 1.2
    else:
        assert r.mask.sum() <= (ph + 2) * (pw + 2)


def test_rotate_patch_grows_canvas_and_keeps_area():
    patch = photo("rocket", 10, 30)
    out, m = rotate_patch(patch, np.ones((10, 30), bool), 45.0)
    assert out.shape[:2] == m.shape and m.shape[0] > 10 and m.shape[1] < 31 + 10
    assert abs(int(m.sum()) - 300) < 40


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("cutpaste", {"mode": "star"}),
        ("local_color", {"ops": ("melt",)}),
        ("local_color", {"ops": ()}),
        ("local_texture", {"weight_range": (0.5, 1.5)}),
        ("local_texture", {"augmentations": ("sepia",)}),
        ("local_texture", {"threshold": 2.0}),
        ("local_texture", {"scale_exp_range": (4, 2)}),
    ],
)
def test_bad_params_raise_config_error(name, overrides):
    field = next(iter(overrides))
    with pytest.raises(ConfigError, match=rf"^edits\.{name}\.{field}: "):
        make_params(name, overrides)


def test_params_lists_become_tuples():
    p = make_params("local_texture", {"weight_range": [0.5, 0.6]})
    assert p.weight_range == (0.5, 0.6)
    assert dataclasses.asdict(p)["threshold"] == 0.5


def test_shift_brightness_clamps_instead_of_folding():
    img = np.array([[[5, 100, 250]]], np.uint8)
    mask = np.ones((1, 1), bool)
    np.testing.assert_array_equal(shift_brightness(img, -50.0, 1.0, mask), [[[0, 50, 200]]])
    np.testing.assert_array_equal(shift_brightness(img, 50.0, 1.0, mask), [[[55, 150, 255]]])
