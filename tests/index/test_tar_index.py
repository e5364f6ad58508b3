"""TarIndex: what one tar's index holds, its file format, and every problem it lists."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from synth.errors import SourceError
from synth.index.cache import TarRef, publish, read_blob, stamp_of
from synth.index.tar_index import TarIndex, build_index
from tests.sa1b_fixture import (
    BAD_CASES,
    jpeg,
    photo,
    rect_masks,
    sa1b_json,
    write_sa1b_corpus,
    write_tar,
)

HW = (60, 80)


def _ref(path) -> TarRef:
    fs, p = fsspec.core.url_to_fs(str(path))
    info = fs.info(p)
    return TarRef(str(path), int(info["size"]), stamp_of(info, str(path)))


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_sa1b_corpus(tmp_path_factory.mktemp("sa1b"), n_tars=1, per_tar=4)


def test_index_locates_every_member_and_measures_every_mask(fx):
    ref = _ref(fx.tars[0])
    idx = build_index(ref)
    raw = fx.tars[0].read_bytes()
    assert idx.tar == "sa_000000.tar" and idx.key == ref.key and idx.problems == ()
    assert [idx.stem(i) for i in range(len(idx))] == fx.stems[0]
    for i, stem in enumerate(fx.stems[0]):
        jpg = raw[idx.jpg_offsets[i] : idx.jpg_offsets[i] + idx.jpg_sizes[i]]
        doc = json.loads(raw[idx.json_offsets[i] : idx.json_offsets[i] + idx.json_sizes[i]])
        assert jpg[:2] == b"\xff\xd8" and doc["image"]["file_name"] == f"{stem}.jpg"
        assert (idx.heights[i], idx.widths[i]) == HW
        sl = idx.masks(i)
        expected = fx.masks[stem]
        assert idx.positions[sl].tolist() == list(range(len(expected)))
        for j, (_, mask, iou, stab) in zip(range(sl.start, sl.stop), expected, strict=True):
            ys, xs = np.nonzero(mask)
            box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert idx.bboxes[j].tolist() == box and idx.areas[j] == mask.sum()
            assert idx.predicted_iou[j] == np.float32(iou)
            assert idx.stability_score[j] == np.float32(stab)
    assert idx.bboxes.dtype == np.uint16 and idx.num_masks == 20


@pytest.mark.parametrize("where", ["local", "memory"])
def test_file_round_trip_local_mapped_and_remote(fx, tmp_path, where):
    idx = build_index(_ref(fx.tars[0]))
    url = str(tmp_path / "x.idx") if where == "local" else "memory://synth-test/x.idx"
    publish(url, idx.to_bytes())
    back = TarIndex.from_bytes(read_blob(url), url)
    if where == "local":
        assert isinstance(back.heights.base, np.memmap) or isinstance(back.heights, np.memmap)
    for name in ("names", "jpg_offsets", "json_sizes", "mask_offsets", "bboxes", "areas"):
        np.testing.assert_array_equal(getattr(back, name), getattr(idx, name))
        assert getattr(back, name).dtype == getattr(idx, name).dtype
    assert (back.tar, back.key, back.problems) == (idx.tar, idx.key, idx.problems)


def test_damaged_or_foreign_index_files_are_refused(fx, tmp_path):
    blob = build_index(_ref(fx.tars[0])).to_bytes()
    for bad, match in (
        (blob[: len(blob) // 2], "damaged"),
        (b"PK\x03\x04" + blob[4:], "damaged"),
        (blob[:8] + (99).to_bytes(4, "little") + blob[12:], "version 99 != 1"),
    ):
        path = tmp_path / "bad.idx"
        path.write_bytes(bad)
        with pytest.raises(SourceError, match=match):
            TarIndex.from_bytes(read_blob(str(path)), str(path))


@pytest.mark.parametrize("case", sorted(set(BAD_CASES) - {"corrupt_jpeg"}))
def test_each_kind_of_damage_is_listed_not_raised(tmp_path, case):
    fx = write_sa1b_corpus(tmp_path, n_tars=1, per_tar=3, bad=[case])
    idx = build_index(_ref(fx.tars[0]))
    assert len(idx.problems) == 1, idx.problems
    where, reason = idx.problems[0]
    assert BAD_CASES[case] in reason and reason.endswith(("it", "again")), reason
    assert where.startswith("sa_000000.tar")
    assert [idx.stem(i) for i in range(len(idx))] == fx.stems[0]
    assert idx.num_masks == sum(len(fx.masks[s]) for s in fx.stems[0])


def test_corrupt_jpeg_is_not_an_index_problem(tmp_path):
    """Decoding every image would cost the index its speed; the source reports it on load."""
    fx = write_sa1b_corpus(tmp_path, n_tars=1, per_tar=3, bad=["corrupt_jpeg"])
    idx = build_index(_ref(fx.tars[0]))
    assert idx.problems == () and len(idx) == 3


def test_malformed_annotations_and_jsons_are_listed(tmp_path):
    masks = rect_masks(0, HW, 3)
    doc = json.loads(sa1b_json(1, "a.jpg", HW, masks))
    doc["annotations"][0]["segmentation"]["counts"] += "a"  # ends mid-number ('a' continues)
    doc["annotations"][1]["predicted_iou"] = None
    empty = np.zeros(HW, bool)
    doc["annotations"].append(
        json.loads(sa1b_json(1, "a.jpg", HW, [(7, empty, 0.9, 0.9)]))["annotations"][0]
    )
    doc["annotations"].append({"id": 8, "segmentation": [[1, 2, 3, 4, 5, 6]]})
    members = [
        ("a.jpg", jpeg(photo(0, HW))),
        ("a.json", json.dumps(doc).encode()),
        ("b.jpg", jpeg(photo(1, HW))),
        ("b.json", b"{not json"),
        ("c.jpg", jpeg(photo(2, HW))),
        ("c.json", json.dumps({"image": {"width": 80}, "annotations": []}).encode()),
        ("notes.txt", b"hello"),
    ]
    idx = build_index(_ref(write_tar(tmp_path / "m.tar", members)))
    reasons = dict(idx.problems)
    assert "not a compressed COCO RLE string" in reasons["m.tar: a.json: annotation 0"]
    assert "'predicted_iou' is missing" in reasons["m.tar: a.json: annotation 1"]
    assert "mask is empty" in reasons["m.tar: a.json: annotation 7"]
    assert "need a compressed RLE" in reasons["m.tar: a.json: annotation 8"]
    assert "not valid JSON" in reasons["m.tar: b.json"]
    assert "integer 'width' and 'height'" in reasons["m.tar: c.json"]
    assert "neither an image nor" in reasons["m.tar: notes.txt"]
    assert len(idx.problems) == 7
    assert [idx.stem(i) for i in range(len(idx))] == ["a"] and idx.positions.tolist() == [2]
    rle = {"size": list(HW), "counts": doc["annotations"][2]["segmentation"]["counts"].encode()}
    assert idx.areas[0] == mask_utils.area(rle)


def test_unreadable_tar_raises_naming_it(tmp_path):
    ref = TarRef(str(tmp_path / "gone.tar"), 10, "mtime:1")
    with pytest.raises(SourceError, match=r"gone\.tar: tar not found"):
        build_index(ref)
