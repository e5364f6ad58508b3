"""Checks that run over every registered edit (timm-style), on real photos at two sizes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from synth.edits import EDITS, EditInputs, changed_pixels, list_edits, make_params
from synth.errors import ConfigError, SkipSample
from synth.sources.base import SourceImage

from .photos import CASES, make_inputs

KINDS = list_edits()
CHANGING = [k for k in KINDS if k != "none"]
#: Edits whose prompt is the untouched base image, and those whose query is.
BASE_IS_PROMPT = {"appearance_paste", "disappearance_inpaint", "exchange", "local_texture"}
BASE_IS_PROMPT |= {"local_color", "cutpaste", "none"}
BASE_IS_QUERY = {"disappearance_paste", "appearance_inpaint", "none"}


def run(name: str, inputs: EditInputs, seed: int, **overrides):
    return EDITS[name].fn(inputs, np.random.default_rng(seed), make_params(name, overrides))


def snapshot(inputs: EditInputs) -> list[np.ndarray]:
    arrays = [inputs.base.image, inputs.donor.image, inputs.texture, inputs.base.ignore]
    for src in (inputs.base, inputs.donor):
        arrays += [inst.mask for inst in src.instances]
    return [a.copy() for a in arrays]


def test_registry_holds_exactly_the_kinds():
    assert set(KINDS) == {
        "appearance_paste",
        "disappearance_paste",
        "disappearance_inpaint",
        "appearance_inpaint",
        "exchange",
        "local_texture",
        "local_color",
        "cutpaste",
        "none",
    }
    assert set(KINDS) == BASE_IS_PROMPT | BASE_IS_QUERY


@pytest.mark.parametrize("name", KINDS)
def test_registry_says_which_view_is_the_base(name):
    """``prompt_is_base`` is what training trusts (surface pairs); the edit contract below
    checks the same sets against what each edit does."""
    assert EDITS[name].prompt_is_base == (name in BASE_IS_PROMPT)


@pytest.mark.parametrize("name", KINDS)
def test_params_are_frozen_dataclasses_with_defaults(name):
    params = make_params(name)
    assert dataclasses.is_dataclass(params)
    assert params == EDITS[name].params()
    fields = dataclasses.fields(params)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(params, fields[0].name, getattr(params, fields[0].name))
    with pytest.raises(ConfigError, match="bogus"):
        make_params(name, {"bogus": 1})


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[2]}")
@pytest.mark.parametrize("name", KINDS)
def test_edit_contract(name, case):
    h, w, base_photo, donor_photo, texture = case
    inputs = make_inputs(h, w, base_photo, donor_photo, texture)
    before = snapshot(inputs)
    r = run(name, inputs, 0)

    assert r.prompt.shape == r.query.shape == (h, w, 3)
    assert r.prompt.dtype == r.query.dtype == r.mask.dtype == np.uint8
    assert r.mask.shape == (h, w)
    assert set(np.unique(r.mask).tolist()) <= {0, 1}
    np.testing.assert_array_equal(r.mask.astype(bool), changed_pixels(r.prompt, r.query))
    json.dumps(r.info, allow_nan=False)

    if name == "none":
        assert not r.mask.any()
        np.testing.assert_array_equal(r.prompt, r.query)
    else:
        assert r.mask.sum() >= 16

    base = inputs.base.image
    if name in BASE_IS_PROMPT:
        np.testing.assert_array_equal(r.prompt, base)
    if name in BASE_IS_QUERY:
        np.testing.assert_array_equal(r.query, base)

    ignore = inputs.base.ignore
    assert not r.mask[ignore].any()
    np.testing.assert_array_equal(r.prompt[ignore], r.query[ignore])

    for a, b in zip(before, snapshot(inputs), strict=True):
        np.testing.assert_array_equal(a, b)
    for out in (r.prompt, r.query, r.mask):
        assert not any(np.shares_memory(out, a) for a in (base, inputs.donor.image, inputs.texture))

    again = run(name, inputs, 0)
    for field in ("prompt", "query", "mask"):
        assert getattr(again, field).tobytes() == getattr(r, field).tobytes()
    assert again.info == r.info

    if name != "none":
        other = run(name, inputs, 1)
        assert other.query.tobytes() != r.query.tobytes() or (
            other.prompt.tobytes() != r.prompt.tobytes()
        )


def _without_instances(src: SourceImage) -> SourceImage:
    return dataclasses.replace(src, instances=())


@pytest.mark.parametrize(
    "name", [k for k in KINDS if EDITS[k].needs_instances or EDITS[k].needs_donor]
)
def test_object_edits_skip_without_instances(name):
    inputs = make_inputs(96, 128)
    edef = EDITS[name]
    if edef.needs_donor:
        no_donor = dataclasses.replace(inputs, donor=_without_instances(inputs.donor))
        with pytest.raises(SkipSample):
            run(name, no_donor, 0)
    if edef.needs_instances:
        no_base = dataclasses.replace(inputs, base=_without_instances(inputs.base))
        with pytest.raises(SkipSample):
            run(name, no_base, 0)


@pytest.mark.parametrize("name", [k for k in KINDS if EDITS[k].needs_donor])
def test_missing_donor_is_a_wiring_error(name):
    inputs = dataclasses.replace(make_inputs(96, 128), donor=None)
    with pytest.raises(ValueError, match="donor"):
        run(name, inputs, 0)


def test_missing_texture_is_a_wiring_error():
    inputs = dataclasses.replace(make_inputs(96, 128), texture=None)
    with pytest.raises(ValueError, match="texture"):
        run("local_texture", inputs, 0)


@pytest.mark.parametrize("name", ["appearance_paste", "disappearance_paste"])
def test_paste_placement_avoids_crowd_regions(name):
    h, w = 128, 160
    inputs = make_inputs(h, w, crowd=False)
    crowd = np.zeros((h, w), bool)
    crowd[:, : w // 2] = True
    inputs = dataclasses.replace(
        inputs, base=dataclasses.replace(inputs.base, instances=(), ignore=crowd)
    )
    for seed in range(6):
        r = run(name, inputs, seed, blend="feather")
        assert not r.mask[crowd].any()
        np.testing.assert_array_equal(r.prompt[crowd], r.query[crowd])
        for rec in r.info["pasted"]:
            assert rec["box"][1] >= w // 2
