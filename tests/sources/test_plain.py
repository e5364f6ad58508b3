"""PlainImages: every image under a root as a base without instances, for local edits only."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from skimage import data

from synth.errors import SourceError, SynthError
from synth.manifest import default_manifest, parse_manifest
from synth.sample import Catalog, realize
from synth.sources import create_source
from synth.sources.base import ImageSource


def _write(root):
    (root / "banded").mkdir(parents=True)
    cv2.imwrite(str(root / "banded" / "brick.png"), cv2.resize(data.brick(), (40, 30)))
    cv2.imwrite(str(root / "grass.jpg"), cv2.resize(data.grass(), (32, 32)))
    (root / "README.txt").write_text("not an image")


def test_lists_recursively_and_has_no_instances(tmp_path):
    _write(tmp_path)
    src = create_source("plain", root=str(tmp_path), name="dtd")
    assert isinstance(src, ImageSource) and len(src) == 2
    assert src.instance_counts().tolist() == [0, 0]
    first = src.load(0)
    assert first.key == "dtd:banded/brick.png"
    assert first.image.shape == (30, 40, 3) and first.image.dtype == np.uint8
    assert first.instances == () and first.ignore is None
    clone = pickle.loads(pickle.dumps(src))
    assert clone.fingerprint() == src.fingerprint()
    assert clone.load(1).image.tobytes() == src.load(1).image.tobytes()
    (tmp_path / "grass.jpg").unlink()
    assert create_source("plain", root=str(tmp_path)).fingerprint() != src.fingerprint()


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(SourceError, match="directory not found"):
        create_source("plain", root=str(tmp_path / "nope"))
    with pytest.raises(SourceError, match=f"{tmp_path}: no images"):
        create_source("plain", root=str(tmp_path))
    _write(tmp_path)
    with pytest.raises(IndexError, match="out of range"):
        create_source("plain", root=str(tmp_path)).load(2)


def test_local_edits_use_it_and_object_edits_never_do(tmp_path):
    _write(tmp_path)
    base = default_manifest(n=64, size=(32, 32), seed=5).to_dict()
    base["sources"]["images"].append({"name": "dtd", "kind": "plain", "root": str(tmp_path)})
    base["mix"] = {"local_texture": 0.5, "exchange": 0.5}
    m = parse_manifest(base, base_dir=None)
    cat = Catalog.open(m)
    plain = len(m.images) - 1
    by_kind: dict[str, set[int]] = {"local_texture": set(), "exchange": set()}
    for i in range(m.n):
        spec, triple, _, _ = realize(m, cat, i)
        by_kind[spec.kind].add(spec.base.source)
        if spec.donor is not None:
            assert spec.donor.source != plain
        assert triple.mask.any()
    assert plain in by_kind["local_texture"]
    assert plain not in by_kind["exchange"]


def test_object_edits_over_plain_sources_only_fail_clearly(tmp_path):
    _write(tmp_path)
    raw = default_manifest(n=4, size=(32, 32), seed=5).to_dict()
    raw["sources"]["images"] = [{"name": "dtd", "kind": "plain", "root": str(tmp_path)}]
    raw["mix"] = {"exchange": 1.0}
    m = parse_manifest(raw, base_dir=None)
    with pytest.raises(SynthError, match="no image source has a usable instance"):
        realize(m, Catalog.open(m), 0)
