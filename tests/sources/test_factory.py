"""create_source / create_texture_source: names, argument checking, deferred imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synth.errors import ConfigError
from synth.sources import SOURCE_KINDS, TEXTURE_KINDS, create_source, create_texture_source
from synth.sources.base import ImageSource, TextureSource
from tests.coco_fixture import write_coco_fixture


def test_kinds():
    assert SOURCE_KINDS == ("coco", "folder", "plain", "proposals", "sa1b", "samples")
    assert TEXTURE_KINDS == ("folder", "samples")


def test_creates_each_kind(tmp_path):
    fx = write_coco_fixture(tmp_path / "coco")
    coco = create_source(
        "coco", ann_file=str(fx.ann_file), image_root=str(fx.image_root), min_side=1
    )
    assert isinstance(coco, ImageSource) and len(coco) == 3
    assert isinstance(create_source("samples", names=["coins"]), ImageSource)
    assert isinstance(create_source("proposals", root=str(fx.image_root)), ImageSource)
    assert isinstance(create_texture_source("samples"), TextureSource)
    assert isinstance(create_texture_source("folder", root=str(fx.image_root)), TextureSource)


def test_unknown_kind_names_it():
    with pytest.raises(
        ConfigError, match=r"source kind 'cocoa' is unknown; use one of coco, folder"
    ):
        create_source("cocoa")
    with pytest.raises(ConfigError, match="texture source kind 'dtd'"):
        create_texture_source("dtd")


def test_unknown_and_missing_fields_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown field\(s\) image_dir, min_aera_frac"):
        create_source("coco", ann_file="x.json", image_dir="y", min_aera_frac=0.1)
    with pytest.raises(ConfigError, match=r"missing field\(s\) image_root"):
        create_source("coco", ann_file="x.json")
    with pytest.raises(ConfigError, match="root"):
        create_texture_source("folder", path=str(tmp_path))


def test_heavy_imports_are_deferred():
    code = (
        "import sys, synth.sources as s; "
        "names = ('pycocotools', 'skimage', 'synth.sources.coco'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
