"""Unsupervised proposals: non-empty, in bounds, disjoint, deterministic."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from skimage import data

from synth.errors import ConfigError, SourceError
from synth.sources.proposals import ProposalFolder, ProposalParams, propose_instances


@pytest.fixture(scope="module")
def photos():
    return {name: getattr(data, name)() for name in ("coins", "astronaut", "coffee")}


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


@pytest.mark.parametrize("name", ["coins", "astronaut", "coffee"])
def test_proposals_on_photos(photos, name):
    image = _rgb(photos[name])
    masks = propose_instances(image, max_instances=5)
    assert 1 <= len(masks) <= 5
    taken = np.zeros(image.shape[:2], bool)
    for m in masks:
        assert m.shape == image.shape[:2] and m.dtype == bool
        assert 0.01 <= m.mean() <= 0.4
        assert not (m & taken).any()
        taken |= m


def test_coins_are_found(photos):
    """Each proposal on ``coins`` should sit on a bright coin, not the dark background."""
    gray = photos["coins"]
    masks = propose_instances(_rgb(gray))
    assert len(masks) >= 4
    background = np.median(gray)
    assert all(gray[m].mean() > background for m in masks)


def test_deterministic_and_input_untouched(photos):
    image = _rgb(photos["astronaut"])
    before = image.copy()
    a = propose_instances(image, scale=128)
    b = propose_instances(image.copy(), scale=128)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    np.testing.assert_array_equal(image, before)


def test_slic_and_gray_input(photos):
    masks = propose_instances(photos["coins"], method="slic", scale=128)
    assert masks and all(m.shape == photos["coins"].shape for m in masks)


def test_small_image_is_not_upscaled(photos):
    small = cv2.resize(_rgb(photos["coins"]), (96, 76), interpolation=cv2.INTER_AREA)
    masks = propose_instances(small, scale=256)
    assert all(m.shape == (76, 96) for m in masks)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "watershed"},
        {"scale": 8},
        {"min_area_frac": 0.5, "max_area_frac": 0.2},
        {"max_instances": 0},
        {"min_solidity": 1.5},
        {"segment_scales": ()},
    ],
)
def test_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        ProposalParams(**kwargs)


def test_bad_image_type():
    with pytest.raises(ValueError, match="uint8"):
        propose_instances(np.zeros((10, 10, 3), np.float32))


def test_proposal_folder(tmp_path, photos):
    (tmp_path / "sub").mkdir()
    small = cv2.resize(_rgb(photos["coins"]), (128, 101), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "sub" / "coins.png"), small)
    cv2.imwrite(str(tmp_path / "astro.jpg"), cv2.resize(photos["astronaut"], (96, 96))[..., ::-1])
    src = ProposalFolder(str(tmp_path), max_instances=3)
    assert len(src) == 2 and src.instance_counts() is None
    assert [src.image_key(i) for i in range(2)] == ["proposals:astro", "proposals:sub/coins"]
    item = src.load(1)
    assert item.image.shape == (101, 128, 3)
    assert 1 <= len(item.instances) <= 3
    assert [inst.ann_id for inst in item.instances] == list(range(1, len(item.instances) + 1))
    clone = pickle.loads(pickle.dumps(src))
    again = clone.load(1)
    assert [m.mask.tobytes() for m in again.instances] == [m.mask.tobytes() for m in item.instances]
    assert clone.fingerprint() == src.fingerprint()
    assert ProposalFolder(str(tmp_path), max_instances=4).fingerprint() != src.fingerprint()


def test_proposal_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown proposal settings"):
        ProposalFolder(str(tmp_path), max_instancez=3)
    with pytest.raises(SourceError, match="no images"):
        ProposalFolder(str(tmp_path))
