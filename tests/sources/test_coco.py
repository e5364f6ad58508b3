"""CocoSource / CocoIndex on a generated COCO fixture with known masks."""

from __future__ import annotations

import json
import pickle

import cv2
import fsspec
import numpy as np
import pytest

from synth.errors import ConfigError, SourceError
from synth.sources.base import ImageSource, SourceImage
from synth.sources.coco import (
    CocoIndex,
    CocoSource,
    find_self_intersection,
    find_self_intersections,
)
from synth.sources.resize import resize_source_image
from synth.sources.rle import sample_rles
from tests.coco_fixture import MALFORMED_CASES, write_coco_fixture

# pycocotools under numpy 2; synth.sources.coco silences it outside pytest.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ARRAYS = (
    "image_ids",
    "heights",
    "widths",
    "name_offsets",
    "names",
    "ann_offsets",
    "ann_ids",
    "category_ids",
    "iscrowd",
    "bboxes",
    "areas",
    "rle_offsets",
    "rles",
)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_coco_fixture(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def src(fx):
    return CocoSource(fx.ann_file, fx.image_root)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return write_coco_fixture(
        tmp_path_factory.mktemp("coco-bad"),
        malformed=list(MALFORMED_CASES),
        corrupt_image=True,
        missing_image=True,
    )


def file_of(source: CocoSource, i: int) -> str:
    return source.index.file_name(i)


def assert_same_index(a: CocoIndex, b: CocoIndex) -> None:
    for name in ARRAYS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.categories == b.categories
    assert a.problems == b.problems
    assert a.content_hash == b.content_hash


def test_protocol_and_sorted_keys(src):
    assert isinstance(src, ImageSource)
    assert len(src) == 3
    assert [src.image_key(i) for i in range(3)] == ["coco:astronaut", "coco:camera", "coco:coffee"]
    assert src.problems == ()


def test_images_are_rgb_uint8_at_native_size(fx, src):
    for i in range(len(src)):
        item = src.load(i)
        h, w = fx.images[file_of(src, i)]
        assert item.image.shape == (h, w, 3) and item.image.dtype == np.uint8
        for inst in item.instances:
            assert inst.mask.shape == (h, w) and inst.mask.dtype == bool
            assert inst.mask.flags.c_contiguous


def test_grayscale_png_becomes_three_equal_channels(src):
    image = src.load(1).image
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(
        image[..., 1], image[..., 2]
    )


def test_rgb_channel_order(fx, src):
    on_disk = cv2.cvtColor(cv2.imread(str(fx.image_root / "coffee.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(src.load(2).image, on_disk)


def test_decoded_masks_match_drawn_shapes(fx, src):
    for i in range(len(src)):
        item = src.load(i)
        assert [inst.ann_id for inst in item.instances] == fx.anns_of(file_of(src, i))
        for inst in item.instances:
            want = fx.expected[inst.ann_id]
            assert inst.category == fx.categories[inst.ann_id]
            if inst.ann_id in fx.approximate:
                grown = cv2.dilate(want.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                iou = (inst.mask & want).sum() / (inst.mask | want).sum()
                assert iou > 0.9 and not (inst.mask & ~grown).any()
            else:
                np.testing.assert_array_equal(inst.mask, want, err_msg=f"annotation {inst.ann_id}")


def test_multipart_polygon_has_both_parts_and_nothing_between(src):
    (inst,) = [m for m in src.load(0).instances if m.ann_id == 2]
    assert inst.mask[15, 75] and inst.mask[55, 110]
    assert not inst.mask[30, 100]


def test_crowd_is_never_an_instance_and_is_ignored(fx, src):
    ids = {inst.ann_id for i in range(len(src)) for inst in src.load(i).instances}
    assert 4 not in ids and 7 not in ids
    for i in range(len(src)):
        item = src.load(i)
        want = fx.ignore.get(file_of(src, i))
        if want is None:
            assert item.ignore is None
        else:
            assert item.ignore.dtype == bool
            np.testing.assert_array_equal(item.ignore, want)


def test_instance_counts_match_loads_without_decoding(src):
    counts = src.instance_counts()
    assert counts.dtype == np.int32
    assert counts.tolist() == [len(src.load(i).instances) for i in range(len(src))]
    assert counts.tolist() == [3, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "dropped"),
    [
        ({"min_area_frac": 0.01}, {6, 9}),  # 16 of 9600 px, 40 of 4096 px
        ({"max_area_frac": 0.5}, {8}),  # 2560 px of 4096
        ({"min_side": 3}, {9}),  # 2 px wide (the 4x4 square stays)
        ({"categories": [1]}, {2, 5, 8, 9}),
    ],
)
def test_filters(fx, kwargs, dropped):
    filtered = CocoSource(fx.ann_file, fx.image_root, **kwargs)
    kept = {inst.ann_id for i in range(len(filtered)) for inst in filtered.load(i).instances}
    assert kept == set(fx.expected) - dropped
    loaded = [len(filtered.load(i).instances) for i in range(len(filtered))]
    assert filtered.instance_counts().tolist() == loaded


def test_fingerprint_tracks_filters_not_location(fx, src, tmp_path):
    again = CocoSource(fx.ann_file, fx.image_root)
    assert again.fingerprint() == src.fingerprint()
    assert CocoSource(fx.ann_file, fx.image_root, min_side=2).fingerprint() != src.fingerprint()
    moved = tmp_path / "moved.json"
    moved.write_bytes(fx.ann_file.read_bytes())
    assert CocoSource(moved, fx.image_root).fingerprint() == src.fingerprint()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_area_frac": 0.5, "max_area_frac": 0.1},
        {"max_area_frac": 1.5},
        {"min_side": -1},
        {"categories": [1, 42]},
    ],
)
def test_bad_filter_values_are_config_errors(fx, kwargs):
    with pytest.raises(ConfigError):
        CocoSource(fx.ann_file, fx.image_root, **kwargs)


def test_index_is_compact_and_independent_of_json_order(fx, src, tmp_path):
    idx = src.index
    assert idx.rles.dtype == np.uint8 and idx.rles.ndim == 1
    assert idx.num_annotations == len(fx.expected) + 2  # + two crowd regions
    assert idx.iscrowd.sum() == 2
    doc = json.loads(fx.ann_file.read_text())
    doc["images"].reverse()
    doc["annotations"] = doc["annotations"][1::2] + doc["annotations"][::2]
    other = tmp_path / "shuffled.json"
    other.write_text(json.dumps(doc))
    shuffled = CocoIndex.build(other)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(shuffled, name), getattr(idx, name), err_msg=name)


def test_bbox_and_area_are_measured_on_the_mask(fx, src):
    idx = src.index
    j = int(np.flatnonzero(np.asarray(idx.ann_ids) == 1)[0])
    assert idx.areas[j] == fx.expected[1].sum() == 600
    np.testing.assert_allclose(idx.bboxes[j], [10, 10, 30, 20])


@pytest.mark.parametrize("mmap", [True, False])
def test_index_save_load_roundtrip(src, tmp_path, mmap):
    src.index.save(tmp_path / "idx")
    loaded = CocoIndex.load(tmp_path / "idx", mmap=mmap)
    assert_same_index(loaded, src.index)
    assert isinstance(loaded.rles, np.memmap) == mmap
    assert loaded.file_name(0) == "astronaut.jpg"


def test_load_of_incomplete_index_dir_is_source_error(tmp_path):
    with pytest.raises(SourceError, match="no readable COCO index"):
        CocoIndex.load(tmp_path)


def test_cached_source_builds_once_and_pickles_paths_only(fx, src, tmp_path, monkeypatch):
    cached = CocoSource(fx.ann_file, fx.image_root, cache_dir=tmp_path / "cache")
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert (entry / "meta.json").is_file()
    assert isinstance(cached.index.rles, np.memmap)
    assert_same_index(cached.index, src.index)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("index rebuilt although cached")

    monkeypatch.setattr(CocoIndex, "build", no_rebuild)
    again = CocoSource(fx.ann_file, fx.image_root, cache_dir=tmp_path / "cache", min_side=1)
    blob = pickle.dumps(again)
    assert len(blob) < 2000
    restored = pickle.loads(blob)
    assert isinstance(restored.index.rles, np.memmap)
    assert restored.fingerprint() == again.fingerprint()
    for i in range(len(src)):
        a, b = src.load(i), restored.load(i)
        assert a.key == b.key
        assert a.image.tobytes() == b.image.tobytes()
        assert [m.mask.tobytes() for m in a.instances] == [m.mask.tobytes() for m in b.instances]
        assert (a.ignore is None) == (b.ignore is None)


def test_cache_is_rebuilt_when_the_json_changes(fx, tmp_path):
    ann = tmp_path / "instances.json"
    ann.write_bytes(fx.ann_file.read_bytes())
    CocoSource(ann, fx.image_root, cache_dir=tmp_path / "cache")
    doc = json.loads(ann.read_text())
    doc["annotations"] = [a for a in doc["annotations"] if a["id"] != 1]
    ann.write_text(json.dumps(doc))
    changed = CocoSource(ann, fx.image_root, cache_dir=tmp_path / "cache")
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2
    assert changed.instance_counts().tolist() == [2, 2, 2]


def test_uncached_source_pickles(src):
    restored = pickle.loads(pickle.dumps(src))
    assert restored.load(2).image.tobytes() == src.load(2).image.tobytes()


def test_fsspec_urls(fx, src):
    mem = fsspec.filesystem("memory")
    for name in ("astronaut.jpg", "camera.png", "coffee.png"):
        mem.pipe(f"/synth-coco/images/{name}", (fx.image_root / name).read_bytes())
    remote = CocoSource(f"file://{fx.ann_file}", "memory://synth-coco/images")
    for i in range(len(src)):
        assert remote.load(i).image.tobytes() == src.load(i).image.tobytes()
    mem.rm("/synth-coco", recursive=True)


def test_malformed_annotations_are_excluded_and_reported(bad, fx):
    source = CocoSource(bad.ann_file, bad.image_root)
    reported = {where: reason for where, reason in source.problems}
    assert len(source.problems) == len(MALFORMED_CASES)
    for _case, (aid, fragment) in bad.malformed.items():
        reason = reported[f"instances.json: annotation {aid}"]
        assert fragment in reason and reason.endswith("; fix or drop it")
        assert "\n" not in reason
    assert source.instance_counts()[:3].tolist() == [4, 2, 2]  # + the kept duplicate
    kept = {inst.ann_id for i in range(3) for inst in source.load(i).instances}
    assert kept == set(fx.expected) | {MALFORMED_CASES["duplicate_id"][0]} == set(bad.expected)


@pytest.mark.parametrize("case", sorted(MALFORMED_CASES))
def test_strict_raises_one_line_error_naming_the_annotation(tmp_path, case):
    one = write_coco_fixture(tmp_path, malformed=[case])
    aid, fragment = MALFORMED_CASES[case]
    with pytest.raises(SourceError) as err:
        CocoSource(one.ann_file, one.image_root, strict=True)
    message = str(err.value)
    assert message.startswith(f"instances.json: annotation {aid}: ")
    assert fragment in message and "\n" not in message


def test_strict_with_cache_raises_too(bad, tmp_path):
    with pytest.raises(SourceError, match="instances.json: annotation"):
        CocoSource(bad.ann_file, bad.image_root, strict=True, cache_dir=tmp_path)


def test_corrupt_and_missing_images_raise_source_error_naming_the_file(bad):
    source = CocoSource(bad.ann_file, bad.image_root)
    keys = [source.image_key(i) for i in range(len(source))]
    for name in bad.broken_images:
        i = keys.index(f"coco:{name.split('.')[0]}")
        with pytest.raises(SourceError, match=name):
            source.load(i)
    source.load(0)


def test_image_size_disagreeing_with_json_is_source_error(tmp_path):
    one = write_coco_fixture(tmp_path)
    cv2.imwrite(str(one.image_root / "camera.png"), np.zeros((10, 12), np.uint8))
    source = CocoSource(one.ann_file, one.image_root)
    with pytest.raises(
        SourceError, match=r"camera.png: image is 10x12 but instances.json says 64x64"
    ):
        source.load(1)


def test_load_index_out_of_range(src):
    with pytest.raises(IndexError):
        src.load(3)
    with pytest.raises(IndexError):
        src.load_resized(-1, (8, 8))


def assert_same_item(a: SourceImage, b: SourceImage) -> None:
    assert a.key == b.key
    np.testing.assert_array_equal(a.image, b.image)
    assert [(i.ann_id, i.category) for i in a.instances] == [
        (i.ann_id, i.category) for i in b.instances
    ]
    for x, y in zip(a.instances, b.instances, strict=True):
        assert y.mask.dtype == bool and y.mask.flags.c_contiguous
        np.testing.assert_array_equal(x.mask, y.mask, err_msg=f"annotation {x.ann_id}")
    assert (a.ignore is None) == (b.ignore is None)
    if a.ignore is not None:
        np.testing.assert_array_equal(a.ignore, b.ignore)


@pytest.mark.parametrize("size", [(64, 64), (17, 33), (200, 150), (96, 128), (3, 2)])
@pytest.mark.parametrize("kwargs", [{}, {"categories": [1]}, {"min_side": 3}])
def test_load_resized_equals_resizing_load(fx, size, kwargs):
    source = CocoSource(fx.ann_file, fx.image_root, **kwargs)
    for i in range(len(source)):
        assert_same_item(resize_source_image(source.load(i), size), source.load_resized(i, size))


def test_load_resized_errors(bad):
    source = CocoSource(bad.ann_file, bad.image_root)
    with pytest.raises(ValueError, match="size"):
        source.load_resized(0, (0, 4))
    keys = [source.image_key(i) for i in range(len(source))]
    for name in bad.broken_images:
        with pytest.raises(SourceError, match=name):
            source.load_resized(keys.index(f"coco:{name.split('.')[0]}"), (8, 8))


def test_rle_not_covering_the_image_is_source_error(src):
    index = src.index
    start, stop = int(index.ann_offsets[0]), int(index.ann_offsets[1])
    h, w = int(index.heights[0]), int(index.widths[0])
    lo, hi = int(index.rle_offsets[start]), int(index.rle_offsets[stop])
    with pytest.raises(SourceError, match="RLE covers"):
        sample_rles(
            np.asarray(index.rles[lo:hi]),
            np.asarray(index.rle_offsets[start : stop + 1], np.int64) - lo,
            index.bboxes[start:stop],
            np.arange(stop - start),
            (h + 1, w),
            (8, 8),
            ann_ids=index.ann_ids[start:stop],
            source=index.source,
        )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "file not found"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a COCO instances file"),
        (b'{"images": [], "categories": []}', "no 'annotations' list"),
        (
            b'{"images": [], "categories": [], "annotations": [{"segments_info": []}]}',
            "panoptic",
        ),
    ],
)
def test_unusable_annotation_files(tmp_path, content, match):
    path = tmp_path / "instances.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=match):
        CocoSource(path, tmp_path)


def test_bad_image_entries_are_reported(tmp_path):
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 10, "width": 10},
            {"id": 1, "file_name": "b.jpg", "height": 10, "width": 10},
            {"id": 2, "file_name": "c.jpg", "height": 0, "width": 10},
            {"id": 3, "file_name": "a.jpg", "height": 10, "width": 10},
            {"file_name": "d.jpg"},
        ],
        "annotations": [],
        "categories": [],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    idx = CocoIndex.build(path)
    assert len(idx) == 1
    reasons = [f"{w}: {r}" for w, r in idx.problems]
    assert any("image 1: id is used by more than one image" in r for r in reasons)
    assert any("image 2: size 0x10 is not positive" in r for r in reasons)
    assert any("image 3: file_name 'a.jpg' is also image 1" in r for r in reasons)
    assert any("images[4]: needs integer 'id'" in r for r in reasons)


def test_self_intersection_basics():
    assert find_self_intersection(np.array([[0, 0], [10, 10], [10, 0], [0, 10]])) == (5.0, 5.0)
    assert find_self_intersection(np.array([[0, 0], [10, 0], [10, 10], [0, 10]])) is None
    # Repeated vertices and an explicitly closed ring are not crossings.
    ring = np.array([[0, 0], [10, 0], [10, 0], [10, 10], [0, 10], [0, 0]])
    assert find_self_intersection(ring) is None
    # A vertex touching another edge is not a proper crossing.
    touch = np.array([[0, 0], [10, 0], [10, 10], [5, 0.0], [0, 10]])
    assert find_self_intersection(touch) is None
    assert find_self_intersection(np.array([[0, 0], [10, 0], [5, 5]])) is None


def _brute_force_crosses(p: np.ndarray) -> bool:
    n = len(p)

    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            a, b, c, d = p[i], p[(i + 1) % n], p[j], p[(j + 1) % n]
            if orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0:
                return True
    return False


def test_batched_self_intersection_agrees_with_brute_force():
    rng = np.random.default_rng(7)
    polys = [rng.uniform(0, 100, (int(rng.integers(3, 25)), 2)) for _ in range(80)]
    for _ in range(80):
        n = int(rng.integers(3, 70))
        angle = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(10, 50, n)
        polys.append(np.stack([50 + radius * np.cos(angle), 50 + radius * np.sin(angle)], 1))
    crosses, points = find_self_intersections(
        np.concatenate(polys), np.array([len(p) for p in polys])
    )
    expected = np.array([_brute_force_crosses(p) for p in polys])
    np.testing.assert_array_equal(crosses, expected)
    assert expected[:80].any() and not expected[80:].any()
    assert np.isfinite(points[crosses]).all() and np.isnan(points[~crosses]).all()
