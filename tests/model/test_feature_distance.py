"""The training-free floor: zero where the query matches the prompt, high on a pasted object,
indifferent to where in the prompt the match is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from synth.errors import ConfigError, SynthError
from synth.model import feature_distance as fd
from synth.model.encoder import FrozenEncoder
from synth.train.predictor import ModelPredictor

torch.set_num_threads(1)
SIZE = 128


@pytest.fixture(scope="module")
def floor() -> ModelPredictor:
    return ModelPredictor.feature_distance("tf_efficientnet_lite0", "pypi", SIZE, device="cpu")


def _brick() -> np.ndarray:
    return np.repeat(data.brick()[:SIZE, :SIZE, None], 3, axis=2)


def _paste(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = image.copy()
    out[40:80, 48:88] = data.coffee()[100:140, 200:240]
    mask = np.zeros(image.shape[:2], bool)
    mask[40:80, 48:88] = True
    return out, mask


def test_identical_pair_scores_zero_everywhere(floor):
    brick = _brick()[None]
    assert np.abs(floor.predict(brick, brick)).max() < 1e-4


def test_a_pasted_object_stands_out(floor):
    prompt = _brick()
    query, mask = _paste(prompt)
    m = floor.predict(prompt[None], query[None])[0]
    assert m.shape == (SIZE, SIZE)
    assert m[mask].mean() > 3 * m[~mask].mean()
    # the ranking metric the protocol uses: pixels of the object outrank the rest
    from synth.metrics import roc_auc

    assert roc_auc(mask.ravel().astype(int), m.ravel()) > 0.9


def test_a_shifted_prompt_costs_little_away_from_the_change(floor):
    """Every query position is compared with every prompt position, so a moved prompt still
    matches; the pasted object stays the strongest change."""
    brick = np.repeat(data.brick()[: SIZE + 32, : SIZE + 32, None], 3, axis=2)
    prompt = brick[32:, 32:]
    query, mask = _paste(brick[:SIZE, :SIZE])
    m = floor.predict(prompt[None], query[None])[0]
    assert np.median(m[mask]) > 2 * np.median(m[~mask])


def test_chunked_similarity_equals_one_pass(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(2, 8, 5, 6, generator=g), torch.randn(2, 8, 4, 7, generator=g)
    whole = fd.nearest_cosine_distance(q, p)
    monkeypatch.setattr(fd, "_CHUNK_ELEMENTS", 7)  # 1 query row per chunk
    chunked = fd.nearest_cosine_distance(q, p)
    assert torch.allclose(whole, chunked)
    qn = torch.nn.functional.normalize(q.flatten(2), dim=1)
    pn = torch.nn.functional.normalize(p.flatten(2), dim=1)
    expect = 1 - torch.einsum("bcq,bcp->bqp", qn, pn).amax(dim=2)
    assert torch.allclose(whole.flatten(1), expect, atol=1e-6)


def test_bad_levels_and_random_auto_weights_are_refused():
    enc = FrozenEncoder("resnet18", weights="random")
    with pytest.raises(ConfigError, match="levels"):
        fd.FeatureDistance(enc, 64, levels=(1, 7))
    with pytest.raises(SynthError, match="no pretrained weights for resnet18"):
        ModelPredictor.feature_distance("resnet18", "auto", 64, device="cpu")
    explicit = ModelPredictor.feature_distance("resnet18", "random", 64, device="cpu")
    assert explicit.model.encoder.weights_source == "random"


def test_embed_matches_the_model_embedding(floor):
    images = np.stack([_brick(), _paste(_brick())[0]])
    e = floor.embed(images)
    assert e.shape == (2, floor.model.embed_dim)
    assert np.isfinite(e).all() and not np.allclose(e[0], e[1])
