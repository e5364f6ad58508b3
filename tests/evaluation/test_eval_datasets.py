"""Readers on fixture trees in the MVTec AD, VisA and folder layouts, and their errors."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth.errors import ConfigError, SourceError
from synth.evaluation.datasets import (
    load_image,
    load_mask,
    read_dataset,
    read_folder,
    read_mvtec,
    read_visa,
)


def test_every_layout_reads_the_same_structure(any_tree):
    kind, root = any_tree
    cats = read_dataset(kind, root)
    assert [c.name for c in cats] == ["bottle", "cable"]
    for c in cats:
        assert len(c.train) == 4 and all(p.is_file() for p in c.train)
        assert list(c.train) == sorted(c.train)
        assert len(c.test) == 6
        assert sum(it.label for it in c.test) == 3
        for it in c.test:
            assert (it.mask is None) == (it.label == 0)
            assert it.image.is_file()


def test_masks_binarise_and_match_their_squares(any_tree):
    kind, root = any_tree
    cat = read_dataset(kind, root, ["cable"])[0]
    for it in cat.test:
        m = load_mask(it, (40, 48))
        assert m.dtype == bool and m.shape == (40, 48)
        assert m.any() == bool(it.label)
        if it.label:  # a filled square: its area equals its bounding box
            ys, xs = np.nonzero(m)
            assert m.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)


def test_mvtec_defect_types_and_mask_paths(mvtec_tree):
    cat = read_mvtec(mvtec_tree, ["bottle"])[0]
    assert {it.defect for it in cat.test} == {"good", "crack"}
    bad = [it for it in cat.test if it.label]
    assert all(it.mask.name == f"{it.image.stem}_mask.png" for it in bad)


def test_visa_masks_numbered_one_are_anomalous(visa_tree):
    cat = read_visa(visa_tree, ["bottle"])[0]
    bad = [it for it in cat.test if it.label][0]
    raw = cv2.imread(str(bad.mask), cv2.IMREAD_GRAYSCALE)
    assert raw.max() == 1
    assert load_mask(bad, (40, 48)).sum() == (raw > 0).sum()


def test_category_selection_keeps_order_and_rejects_unknown(mvtec_tree):
    assert [c.name for c in read_mvtec(mvtec_tree, ["cable", "bottle"])] == ["cable", "bottle"]
    with pytest.raises(ConfigError, match="carpet.*available: bottle, cable"):
        read_mvtec(mvtec_tree, ["carpet"])


@pytest.mark.parametrize("kind", ["mvtec", "visa", "folder"])
def test_wrong_root(kind, tmp_path):
    with pytest.raises(SourceError, match="not a directory"):
        read_dataset(kind, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError) as e:
        read_dataset(kind, tmp_path / "empty")
    assert "empty" in str(e.value) and "\n" not in str(e.value)


def test_unknown_layout(tmp_path):
    with pytest.raises(ConfigError, match="mvtec, visa, folder"):
        read_dataset("coco", tmp_path)


def test_mvtec_missing_mask_names_the_mask(mvtec_tree):
    mask = mvtec_tree / "cable" / "ground_truth" / "crack" / "001_mask.png"
    mask.unlink()
    with pytest.raises(SourceError) as e:
        read_mvtec(mvtec_tree)
    assert str(e.value).startswith(str(mask)) and "\n" not in str(e.value)


def test_visa_missing_mask_and_missing_column(visa_tree):
    csv_path = visa_tree / "split_csv" / "1cls.csv"
    rows = list(csv.reader(csv_path.read_text().splitlines()))
    anomaly = next(r for r in rows if r[2] == "anomaly")
    (visa_tree / anomaly[4]).unlink()
    with pytest.raises(SourceError, match="missing mask"):
        read_visa(visa_tree)
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([r[:4] for r in rows])
    with pytest.raises(SourceError, match="missing column.*mask"):
        read_visa(visa_tree)


def test_visa_bad_label(visa_tree):
    csv_path = visa_tree / "split_csv" / "1cls.csv"
    text = csv_path.read_text().replace("anomaly", "broken", 1)
    csv_path.write_text(text)
    with pytest.raises(SourceError, match=r"1cls.csv:\d+: split must be"):
        read_visa(visa_tree)


def test_mask_size_mismatch_names_the_mask(any_tree):
    kind, root = any_tree
    cat = read_dataset(kind, root, ["bottle"])[0]
    mask = next(it.mask for it in cat.test if it.mask is not None)
    cv2.imwrite(str(mask), np.full((20, 24), 255, np.uint8))
    with pytest.raises(SourceError) as e:
        read_dataset(kind, root)
    msg = str(e.value)
    assert msg.startswith(str(mask)) and "24x20" in msg and "48x40" in msg and "\n" not in msg


def test_folder_orphan_mask_and_empty_mask(folder_tree):
    orphan = folder_tree / "bottle" / "masks" / "ghost.png"
    cv2.imwrite(str(orphan), np.full((40, 48), 255, np.uint8))
    with pytest.raises(SourceError, match="ghost.png: mask without a test image"):
        read_folder(folder_tree)
    orphan.unlink()
    cat = read_folder(folder_tree, ["bottle"])[0]
    item = next(it for it in cat.test if it.mask is not None)
    cv2.imwrite(str(item.mask), np.zeros((40, 48), np.uint8))
    with pytest.raises(SourceError, match="empty; delete it to mark the image normal"):
        load_mask(item, (32, 32))


def test_category_without_training_images(folder_tree):
    for p in (folder_tree / "cable" / "normal").iterdir():
        p.unlink()
    with pytest.raises(SourceError, match="'cable' has no normal training image"):
        read_folder(folder_tree)


def test_load_image_resizes_and_reports_undecodable(tmp_path, mvtec_tree):
    path = next((mvtec_tree / "bottle" / "train" / "good").iterdir())
    img = load_image(path, (32, 16))
    assert img.shape == (32, 16, 3) and img.dtype == np.uint8
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(SourceError, match="bad.png: cannot be decoded"):
        load_image(bad, (32, 32))


def test_mask_resize_rules(tmp_path):
    from synth.evaluation.datasets import TestItem

    m = np.zeros((40, 48), np.uint8)
    m[11:13, 11:13] = 255  # odd offset: nearest keeps 1 pixel of 4
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), m)
    item = TestItem(Path("q.png"), path, 1, "x")
    nearest = load_mask(item, (20, 24), "nearest")
    grown = load_mask(item, (20, 24), "bilinear_any")
    assert nearest.sum() == 1 and grown.sum() == 4
    assert np.all(grown[nearest])  # bilinear-then-any only grows the mask
