"""FolderSource: both documented layouts, auto-detection and every error path."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from synth.errors import ConfigError, SourceError
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
