"""Real COCO annotations (the shared 64-image train2017 subset); skipped when it is absent."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from synth.sources.coco import CocoSource

COCO64 = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco64"

pytestmark = [
    pytest.mark.skipif(
        not (COCO64 / "annotations" / "instances.json").is_file(),
        reason="shared coco64 not present",
    ),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def coco64(tmp_path_factory):
    cache = tmp_path_factory.mktemp("coco64-cache")
    return CocoSource(COCO64 / "annotations" / "instances.json", COCO64 / "images", cache_dir=cache)


def test_index_matches_the_json(coco64):
    doc = json.loads((COCO64 / "annotations" / "instances.json").read_text())
    crowd = sum(a["iscrowd"] for a in doc["annotations"])
    assert len(coco64) == len(doc["images"]) == 64
    assert coco64.problems == ()
    assert coco64.index.num_annotations == len(doc["annotations"])
    assert int(coco64.instance_counts().sum()) == len(doc["annotations"]) - crowd
    json_area = {a["id"]: a["area"] for a in doc["annotations"]}
    ours = np.asarray(coco64.index.areas, float)
    theirs = np.array([json_area[int(i)] for i in coco64.index.ann_ids])
    assert np.median(np.abs(ours - theirs) / theirs) < 0.02


def test_loads_real_images_with_crowd_as_ignore(coco64):
    restored = pickle.loads(pickle.dumps(coco64))
    index = coco64.index
    crowd_images = np.unique(index.annotation_image()[np.asarray(index.iscrowd)])
    for i in [0, int(crowd_images[0])]:
        item = restored.load(i)
        assert item.image.shape[:2] == (coco64.index.heights[i], coco64.index.widths[i])
        assert len(item.instances) == coco64.instance_counts()[i]
        for inst in item.instances:
            assert inst.mask.any()
    assert restored.load(int(crowd_images[0])).ignore.any()


def test_load_resized_equals_resizing_load_on_real_masks(coco64):
    from synth.sources.resize import resize_source_image

    crowd_images = np.unique(coco64.index.annotation_image()[np.asarray(coco64.index.iscrowd)])
    for i in sorted({0, 7, 31, 63, int(crowd_images[0])}):
        for size in [(256, 256), (224, 300)]:
            want = resize_source_image(coco64.load(i), size)
            got = coco64.load_resized(i, size)
            np.testing.assert_array_equal(got.image, want.image)
            assert [m.ann_id for m in got.instances] == [m.ann_id for m in want.instances]
            for x, y in zip(got.instances, want.instances, strict=True):
                np.testing.assert_array_equal(x.mask, y.mask)
            assert (got.ignore is None) == (want.ignore is None)
            if want.ignore is not None:
                np.testing.assert_array_equal(got.ignore, want.ignore)
