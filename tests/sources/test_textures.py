"""TextureFolder: recursive sorted listing, RGB decoding, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from synth.errors import SourceError
from synth.sources.base import TextureSource
from synth.sources.textures import TextureFolder

SHARED_TEXTURES = Path(__file__).resolve().parents[3] / "shared" / "data" / "textures"


def _write(root: Path) -> None:
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    brick = cv2.resize(data.brick(), (40, 30))
    cv2.imwrite(str(root / "b" / "deep" / "brick.tif"), brick)
    cv2.imwrite(str(root / "a" / "grass.png"), cv2.resize(data.grass(), (20, 25)))
    cv2.imwrite(str(root / "a" / "color.bmp"), cv2.resize(data.astronaut(), (16, 16)))
    cv2.imwrite(str(root / "top.jpg"), cv2.resize(data.coffee(), (24, 18)))
    (root / "notes.txt").write_text("not a texture")


def test_recursive_sorted_listing_and_rgb(tmp_path):
    _write(tmp_path)
    tex = TextureFolder(str(tmp_path))
    assert isinstance(tex, TextureSource)
    assert [tex.path(i) for i in range(len(tex))] == [
        "a/color.bmp",
        "a/grass.png",
        "b/deep/brick.tif",
        "top.jpg",
    ]
    shapes = [tex.load(i).shape for i in range(len(tex))]
    assert shapes == [(16, 16, 3), (25, 20, 3), (30, 40, 3), (18, 24, 3)]
    assert all(tex.load(i).dtype == np.uint8 for i in range(len(tex)))
    gray = tex.load(1)
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_pickle_and_fingerprint(tmp_path):
    _write(tmp_path)
    tex = TextureFolder(str(tmp_path))
    clone = pickle.loads(pickle.dumps(tex))
    assert clone.fingerprint() == tex.fingerprint()
    assert clone.load(3).tobytes() == tex.load(3).tobytes()
    (tmp_path / "a" / "grass.png").unlink()
    assert TextureFolder(str(tmp_path)).fingerprint() != tex.fingerprint()


def test_errors(tmp_path):
    with pytest.raises(SourceError, match="directory not found"):
        TextureFolder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no texture images"):
        TextureFolder(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    tex = TextureFolder(str(tmp_path / "bad"))
    with pytest.raises(SourceError, match="x.png: cannot decode image"):
        tex.load(0)
    with pytest.raises(IndexError):
        tex.load(1)


@pytest.mark.skipif(not SHARED_TEXTURES.is_dir(), reason="shared DTD sample not present")
def test_shared_dtd_sample():
    tex = TextureFolder(str(SHARED_TEXTURES))
    assert len(tex) == 15
    image = tex.load(0)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
