"""The embedded samples load from scikit-image's wheel with the network switched off."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest

from synth.errors import ConfigError
from synth.sources.base import ImageSource, TextureSource
from synth.sources.samples import SAMPLE_IMAGES, SampleSource, SampleTextures


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_sample_loads_offline_with_proposals(offline):
    src = SampleSource(max_instances=3, scale=160)
    assert isinstance(src, ImageSource)
    assert set(src.names) == set(SAMPLE_IMAGES), "a listed sample is missing from the wheel"
    assert src.instance_counts() is None
    with_objects = 0
    for i in range(len(src)):
        item = src.load(i)
        assert item.key == f"samples:{src.names[i]}"
        assert item.image.ndim == 3 and item.image.shape[2] == 3 and item.image.dtype == np.uint8
        for inst in item.instances:
            assert inst.mask.shape == item.image.shape[:2] and inst.mask.any()
        with_objects += bool(item.instances)
    assert with_objects >= len(src) - 2


def test_proposals_are_cached_and_deterministic(offline):
    src = SampleSource(names=["coins"])
    first = src.load(0)
    assert first.instances
    first.instances[0].mask[:] = False  # callers own what they get; the cache must not change
    second = pickle.loads(pickle.dumps(src)).load(0)
    assert second.instances[0].mask.any()
    again = src.load(0)
    assert [m.mask.tobytes() for m in again.instances] == [
        m.mask.tobytes() for m in second.instances
    ]
    assert src.fingerprint() == SampleSource(names=["coins"]).fingerprint()
    assert src.fingerprint() != SampleSource(names=["coins"], max_instances=2).fingerprint()


def test_sample_textures_offline(offline):
    tex = SampleTextures()
    assert isinstance(tex, TextureSource)
    assert tex.names == ("brick", "grass", "gravel")
    for i in range(len(tex)):
        image = tex.load(i)
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown sample images"):
        SampleSource(names=["lena"])
    with pytest.raises(ConfigError, match="unknown proposal settings"):
        SampleSource(bogus=1)
    with pytest.raises(ConfigError, match="unknown sample textures"):
        SampleTextures(names=["marble"])
