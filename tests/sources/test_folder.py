"""FolderSource: both documented layouts, auto-detection and every error path."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from synth.errors import ConfigError, SourceError
from synth.manifest import parse_manifest
from synth.sample import Catalog, realize
from synth.sources import create_source
from synth.sources._io import fingerprint_of
from synth.sources.base import ImageSource
from synth.sources.folder import FolderSource

HW = (48, 64)


def _photo(name: str) -> np.ndarray:
    rgb = getattr(data, name)()
    return cv2.resize(rgb, HW[::-1], interpolation=cv2.INTER_AREA)


def _ids() -> np.ndarray:
    ids = np.zeros(HW, np.uint8)
    ids[5:20, 5:25] = 1
    ids[25:40, 30:60] = 2
    ids[0:4, 60:64] = 255
    return ids


def _write_images(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    cv2.imwrite(
        str(root / "images" / "b_coffee.png"), cv2.cvtColor(_photo("coffee"), cv2.COLOR_RGB2BGR)
    )
    cv2.imwrite(
        str(root / "images" / "a_astro.jpg"), cv2.cvtColor(_photo("astronaut"), cv2.COLOR_RGB2BGR)
    )


def write_instance_png(root: Path) -> Path:
    _write_images(root)
    (root / "masks").mkdir()
    cv2.imwrite(str(root / "masks" / "a_astro.png"), _ids())
    # A palette PNG must be read as indices, not colours.
    pal = Image.fromarray(_ids()[::-1].copy(), mode="P")
    pal.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [255, 255, 255] * 253)
    pal.save(root / "masks" / "b_coffee.png")
    return root


def write_per_object(root: Path) -> Path:
    _write_images(root)
    ids = _ids()
    for stem in ("a_astro", "b_coffee"):
        (root / "masks" / stem).mkdir(parents=True)
    cv2.imwrite(str(root / "masks" / "a_astro" / "cat.png"), (ids == 1).astype(np.uint8) * 255)
    cv2.imwrite(str(root / "masks" / "a_astro" / "dog.png"), (ids == 2).astype(np.uint8))
    return root


def test_instance_png_layout(tmp_path):
    src = FolderSource(str(write_instance_png(tmp_path)))
    assert isinstance(src, ImageSource)
    assert src.layout == "instance_png"
    assert len(src) == 2 and [src.image_key(i) for i in range(2)] == [
        "folder:a_astro",
        "folder:b_coffee",
    ]
    assert src.instance_counts() is None
    ids = _ids()
    for i, want in enumerate((ids, ids[::-1])):
        item = src.load(i)
        assert item.image.shape == (*HW, 3) and item.image.dtype == np.uint8
        assert [m.ann_id for m in item.instances] == [1, 2]
        for inst in item.instances:
            np.testing.assert_array_equal(inst.mask, want == inst.ann_id)
        np.testing.assert_array_equal(item.ignore, want == 255)


def test_rgb_order_matches_file(tmp_path):
    src = FolderSource(str(write_instance_png(tmp_path)))
    on_disk = cv2.cvtColor(cv2.imread(str(tmp_path / "images" / "b_coffee.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(src.load(1).image, on_disk)


def test_per_object_layout(tmp_path):
    src = FolderSource(str(write_per_object(tmp_path)), name="mine")
    assert src.layout == "per_object"
    assert src.instance_counts().tolist() == [2, 0]
    item = src.load(0)
    assert item.key == "mine:a_astro" and item.ignore is None
    ids = _ids()
    np.testing.assert_array_equal(item.instances[0].mask, ids == 1)
    np.testing.assert_array_equal(item.instances[1].mask, ids == 2)
    assert src.load(1).instances == ()


def test_explicit_layout_and_pickle(tmp_path):
    src = FolderSource(str(write_per_object(tmp_path)), layout="per_object")
    clone = pickle.loads(pickle.dumps(src))
    assert clone.fingerprint() == src.fingerprint()
    assert clone.load(0).image.tobytes() == src.load(0).image.tobytes()


def test_fingerprint_changes_with_files(tmp_path):
    root = write_per_object(tmp_path)
    before = FolderSource(str(root)).fingerprint()
    cv2.imwrite(str(root / "masks" / "b_coffee" / "x.png"), (_ids() == 1).astype(np.uint8))
    assert FolderSource(str(root)).fingerprint() != before


def test_missing_mask_names_the_file(tmp_path):
    root = write_instance_png(tmp_path)
    (root / "masks" / "b_coffee.png").unlink()
    src = FolderSource(str(root))
    src.load(0)
    with pytest.raises(SourceError, match=r"masks/b_coffee.png: mask missing"):
        src.load(1)


def test_missing_object_folder_names_it(tmp_path):
    root = write_per_object(tmp_path)
    (root / "masks" / "b_coffee").rmdir()
    with pytest.raises(SourceError, match=r"masks/b_coffee/: mask folder missing"):
        FolderSource(str(root), layout="per_object").load(1)


def test_size_mismatch_names_the_mask(tmp_path):
    root = write_instance_png(tmp_path)
    cv2.imwrite(str(root / "masks" / "a_astro.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(SourceError, match=r"a_astro.png: mask is 10x10 but its image is 48x64"):
        FolderSource(str(root)).load(0)


def test_color_mask_is_rejected(tmp_path):
    root = write_instance_png(tmp_path)
    cv2.imwrite(str(root / "masks" / "a_astro.png"), np.zeros((*HW, 3), np.uint8))
    with pytest.raises(SourceError, match="a_astro.png: mask has mode RGB"):
        FolderSource(str(root)).load(0)


def test_empty_object_mask_is_rejected(tmp_path):
    root = write_per_object(tmp_path)
    cv2.imwrite(str(root / "masks" / "a_astro" / "cat.png"), np.zeros(HW, np.uint8))
    with pytest.raises(SourceError, match="cat.png: mask is empty"):
        FolderSource(str(root)).load(0)


def test_corrupt_image_names_the_file(tmp_path):
    root = write_instance_png(tmp_path)
    (root / "images" / "a_astro.jpg").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="a_astro.jpg: cannot decode image"):
        FolderSource(str(root)).load(0)


def test_mixed_layouts_are_ambiguous(tmp_path):
    root = write_per_object(tmp_path)
    cv2.imwrite(str(root / "masks" / "a_astro.png"), _ids())
    with pytest.raises(SourceError, match="both"):
        FolderSource(str(root))
    assert FolderSource(str(root), layout="instance_png").layout == "instance_png"


def test_structure_errors(tmp_path):
    with pytest.raises(SourceError, match="images: directory not found"):
        FolderSource(str(tmp_path))
    with pytest.raises(ConfigError, match="layout"):
        FolderSource(str(tmp_path), layout="coco")  # type: ignore[arg-type]
    root = write_instance_png(tmp_path / "dup")
    cv2.imwrite(str(root / "images" / "a_astro.png"), _photo("camera"))
    with pytest.raises(SourceError, match="share the name 'a_astro'"):
        FolderSource(str(root))


# --- instance filters (min_area_frac, max_area_frac, min_side), as on the COCO source ---------


def _filter_ids() -> np.ndarray:
    """Three objects of 48x64 = 3072 px: a 4x4 speck, a 2 px thin line, a large block."""
    ids = np.zeros(HW, np.uint8)
    ids[0:4, 0:4] = 1  # 16 px = 0.0052 of the image, sides 4
    ids[6:8, 10:50] = 2  # 80 px = 0.026, sides 2 and 40
    ids[12:42, 5:55] = 3  # 1500 px = 0.488, sides 30 and 50
    ids[44:48, 60:64] = 255
    return ids


def _write_filter_fixture(root: Path, layout: str) -> Path:
    """a_astro holds the three objects; b_coffee only the speck."""
    _write_images(root)
    ids = _filter_ids()
    speck = np.where(ids == 1, 1, 0).astype(np.uint8)
    if layout == "instance_png":
        (root / "masks").mkdir()
        cv2.imwrite(str(root / "masks" / "a_astro.png"), ids)
        cv2.imwrite(str(root / "masks" / "b_coffee.png"), speck)
    else:
        for stem in ("a_astro", "b_coffee"):
            (root / "masks" / stem).mkdir(parents=True)
        for k in (1, 2, 3):
            cv2.imwrite(str(root / "masks" / "a_astro" / f"o{k}.png"), (ids == k).astype(np.uint8))
        cv2.imwrite(str(root / "masks" / "b_coffee" / "o1.png"), speck * 255)
    return root


def _kept(src: FolderSource) -> list[list[int]]:
    return [[inst.ann_id for inst in src.load(i).instances] for i in range(len(src))]


@pytest.mark.parametrize("layout", ["instance_png", "per_object"])
@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        ({}, [[1, 2, 3], [1]]),
        ({"min_area_frac": 0.0, "max_area_frac": 1.0, "min_side": 0}, [[1, 2, 3], [1]]),
        ({"min_area_frac": 0.01}, [[2, 3], []]),  # the 16 px speck is 0.5% of the image
        ({"min_area_frac": 16 / 3072}, [[1, 2, 3], [1]]),  # the bound itself is kept
        ({"max_area_frac": 0.4}, [[1, 2], [1]]),  # the block is 49%
        ({"min_side": 3}, [[1, 3], [1]]),  # the line is 2 px tall
        ({"min_side": 5}, [[3], []]),
        ({"min_area_frac": 0.6}, [[], []]),
    ],
)
def test_filters_drop_instances_in_both_layouts(tmp_path, layout, kwargs, want):
    root = _write_filter_fixture(tmp_path, layout)
    src = FolderSource(str(root), layout=layout, **kwargs)
    assert _kept(src) == want
    ids = _filter_ids()
    item = src.load(0)
    for inst in item.instances:  # kept masks and ann ids are those of the unfiltered source
        np.testing.assert_array_equal(inst.mask, ids == inst.ann_id)
    if layout == "instance_png":  # the ignore region is not a filter's business
        np.testing.assert_array_equal(item.ignore, ids == 255)
        assert src.instance_counts() is None
    else:
        assert src.instance_counts().tolist() == [3, 1]  # an upper bound: files per image


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_area_frac": 0.5, "max_area_frac": 0.1}, "min_area_frac=0.5, max_area_frac=0.1"),
        ({"min_area_frac": -0.1}, "min_area_frac=-0.1"),
        ({"max_area_frac": 1.5}, "max_area_frac=1.5"),
        ({"min_side": -1}, "min_side=-1"),
    ],
)
def test_bad_filter_values_are_one_line_config_errors(tmp_path, kwargs, field):
    root = _write_filter_fixture(tmp_path, "per_object")
    with pytest.raises(ConfigError) as e:
        FolderSource(str(root), **kwargs)
    assert field in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=re.escape(field)):
        create_source("folder", root=str(root), **kwargs)


@pytest.mark.parametrize("layout", ["instance_png", "per_object"])
def test_unset_filters_keep_the_fingerprint(tmp_path, layout):
    root = _write_filter_fixture(tmp_path, layout)
    src = FolderSource(str(root))
    # The recipe before the filters existed: stores built then must keep their fingerprint.
    before = fingerprint_of(
        "folder", src.layout, src._images, src._mask_files, sorted(src._object_masks.items())
    )
    assert src.fingerprint() == before
    defaults = FolderSource(str(root), min_area_frac=0, max_area_frac=1, min_side=0)
    assert defaults.fingerprint() == before
    changed = {
        FolderSource(str(root), **kw).fingerprint()
        for kw in ({"min_area_frac": 0.01}, {"max_area_frac": 0.5}, {"min_side": 3})
    }
    assert len(changed) == 3 and before not in changed
    filtered = FolderSource(str(root), min_side=3)
    clone = pickle.loads(pickle.dumps(filtered))
    assert clone.fingerprint() == filtered.fingerprint() and _kept(clone) == _kept(filtered)


def _manifest(root: Path, **options: object) -> dict:
    return {
        "n": 8,
        "size": 64,
        "seed": 3,
        "shard_size": 8,
        "mix": {"disappearance_inpaint": 1.0},
        "sources": {"images": [{"name": "mine", "kind": "folder", "root": str(root), **options}]},
    }


def test_filters_round_trip_through_a_manifest(tmp_path):
    root = _write_filter_fixture(tmp_path, "per_object")
    opts = {"min_area_frac": 0.01, "max_area_frac": 0.9, "min_side": 3}
    m = parse_manifest(_manifest(root, **opts), base_dir=None)
    assert dict(m.images[0].options) == {"root": str(root), **opts}
    spec = m.to_dict()["sources"]["images"][0]
    assert {k: spec[k] for k in opts} == opts
    assert parse_manifest(m.to_dict(), base_dir=None) == m
    plain = parse_manifest(_manifest(root), base_dir=None)
    assert "min_side" not in plain.to_dict()["sources"]["images"][0]
    assert m.fingerprint() != plain.fingerprint()
    opened, unfiltered = Catalog.open(m).images[0], Catalog.open(plain).images[0]
    assert _kept(opened) == [[3], []]
    assert opened.fingerprint() != unfiltered.fingerprint()
    assert unfiltered.fingerprint() == FolderSource(str(root), name="mine").fingerprint()


def test_an_image_without_usable_instances_is_skipped_not_fatal(tmp_path):
    # b_coffee's only object (the speck) is filtered out: its file count still makes it a
    # candidate, so the object edit skips it and the builder retries with a_astro.
    root = _write_filter_fixture(tmp_path, "per_object")
    m = parse_manifest(_manifest(root, min_area_frac=0.01), base_dir=None)
    cat = Catalog.open(m)
    retries = 0
    for i in range(m.n):
        spec, triple, skipped, r = realize(m, cat, i)
        retries += r
        assert not skipped and spec.base.index == 0
        assert set(triple.info["removed"]) <= {2, 3}
    assert retries > 0
