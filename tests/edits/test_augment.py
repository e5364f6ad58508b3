"""DRAEM-style texture augmentations."""

from __future__ import annotations

import numpy as np
import pytest

from synth.edits.augment import AUGMENTATIONS, random_augment

from .photos import photo


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_contract(name):
    tex = photo("gravel", 48, 64)
    before = tex.copy()
    a = AUGMENTATIONS[name](tex, np.random.default_rng(0))
    b = AUGMENTATIONS[name](tex, np.random.default_rng(0))
    np.testing.assert_array_equal(tex, before)
    assert a.shape == tex.shape and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()
    changed = [
        AUGMENTATIONS[name](tex, np.random.default_rng(s)).tobytes() != tex.tobytes()
        for s in range(4)
    ]
    assert any(changed)


def test_random_augment_picks_distinct_names():
    tex = photo("brick", 32, 32)
    out, names = random_augment(tex, np.random.default_rng(1), 3)
    assert len(names) == len(set(names)) == 3 and set(names) <= set(AUGMENTATIONS)
    assert out.shape == tex.shape and out is not tex
    out0, names0 = random_augment(tex, np.random.default_rng(1), 0)
    assert names0 == [] and out0.tobytes() == tex.tobytes() and out0 is not tex
    _, few = random_augment(tex, np.random.default_rng(1), 5, names=["invert", "flip"])
    assert sorted(few) == ["flip", "invert"]
