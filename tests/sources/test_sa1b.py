"""Sa1bSource on tiny SA-1B-format tars written here: reads, filters, cache, problems, edits."""

from __future__ import annotations

import json
import pickle

import fsspec
import numpy as np
import pytest

import synth.index.tarset as tarset
from synth.errors import ConfigError, SourceError
from synth.manifest import parse_manifest
from synth.sample import Catalog, realize
from synth.sources import create_source, index_plan
from synth.sources.base import ImageSource
from synth.sources.resize import resize_source_image
from synth.sources.sa1b import Sa1bSource
from tests.sa1b_fixture import BAD_CASES, write_sa1b_corpus, write_tar

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_sa1b_corpus(tmp_path_factory.mktemp("sa1b"), n_tars=2, per_tar=3)


@pytest.fixture()
def src(fx, tmp_path):
    return Sa1bSource([str(t) for t in fx.tars], str(tmp_path / "cache"), max_masks=9)


def _stems(fx) -> list[str]:
    return [s for stems in fx.stems for s in stems]


def test_loads_pixels_and_masks_straight_from_the_tars(fx, src):
    assert isinstance(src, ImageSource)
    assert len(src) == 6 and src.group_sizes().tolist() == [3, 3]
    assert src.instance_counts().tolist() == [5] * 6 and src.problems == ()
    for i, stem in enumerate(_stems(fx)):
        item = src.load(i)
        assert item.key == f"sa1b:{stem}" == src.image_key(i)
        np.testing.assert_array_equal(item.image, fx.images[stem])
        assert item.ignore is None
        expected = fx.masks[stem]
        assert [inst.ann_id for inst in item.instances] == [aid for aid, *_ in expected]
        for inst, (_, mask, _, _) in zip(item.instances, expected, strict=True):
            np.testing.assert_array_equal(inst.mask, mask)
            assert inst.category == 0


@pytest.mark.parametrize("size", [(32, 40), (60, 80), (90, 70)])
def test_load_resized_equals_resizing_load(src, size):
    for i in range(len(src)):
        got, ref = src.load_resized(i, size), resize_source_image(src.load(i), size)
        np.testing.assert_array_equal(got.image, ref.image)
        assert [x.ann_id for x in got.instances] == [x.ann_id for x in ref.instances]
        for a, b in zip(got.instances, ref.instances, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)


def test_filters_and_cap(fx, tmp_path):
    cache = str(tmp_path / "cache")
    tars = [str(t) for t in fx.tars]
    capped = Sa1bSource(tars, cache, max_masks=2)
    for i, stem in enumerate(_stems(fx)):
        ranked = sorted(fx.masks[stem], key=lambda m: (-m[2], -m[3], -m[1].sum(), m[0]))
        want = sorted(aid for aid, *_ in ranked[:2])
        assert [x.ann_id for x in capped.load(i).instances] == want
    big = Sa1bSource(tars, cache, min_area_frac=0.02, min_side=10)
    for i, stem in enumerate(_stems(fx)):
        want = [
            aid
            for aid, m, _, _ in fx.masks[stem]
            if m.sum() >= 0.02 * m.size and min(np.ptp(np.nonzero(m), axis=1) + 1) >= 10
        ]
        assert [x.ann_id for x in big.load(i).instances] == want
    scored = Sa1bSource(tars, cache, min_predicted_iou=0.8, min_stability_score=0.9)
    for i, stem in enumerate(_stems(fx)):
        want = [aid for aid, _, iou, stab in fx.masks[stem] if iou >= 0.8 and stab >= 0.9]
        assert [x.ann_id for x in scored.load(i).instances] == want
        assert scored.instance_counts()[i] == len(want)
    none = Sa1bSource(tars, cache, min_predicted_iou=0.99)
    assert none.eligible_items().size == 0 and none.load(0).instances == ()
    fps = {s.fingerprint() for s in (capped, big, scored, none)}
    assert len(fps) == 4


def test_pickles_without_its_open_indexes(src):
    src.load(0)
    clone = pickle.loads(pickle.dumps(src))
    assert not clone._open and clone.fingerprint() == src.fingerprint()
    np.testing.assert_array_equal(clone.load(4).image, src.load(4).image)


def test_indexes_are_reused_until_a_tar_changes(tmp_path, monkeypatch):
    fx = write_sa1b_corpus(tmp_path / "tars", n_tars=2, per_tar=2)
    cache = str(tmp_path / "cache")
    first = Sa1bSource(str(tmp_path / "tars" / "*.tar"), cache)
    built = []
    real = tarset.build_index
    monkeypatch.setattr(tarset, "build_index", lambda ref: built.append(ref.name) or real(ref))
    assert Sa1bSource(str(tmp_path / "tars" / "*.tar"), cache, max_masks=3).fingerprint()
    assert built == []  # other filters: counted again from the cached indexes, none rebuilt
    write_sa1b_corpus(tmp_path / "other", n_tars=1, per_tar=1)
    fx.tars[1].write_bytes((tmp_path / "other" / "sa_000000.tar").read_bytes())
    second = Sa1bSource(str(tmp_path / "tars" / "*.tar"), cache)
    assert built == ["sa_000001.tar"]  # only the changed tar is read again
    assert len(second) == 3 and second.fingerprint() != first.fingerprint()
    assert index_plan("sa1b", tars=str(tmp_path / "tars" / "*.tar"), cache_dir=cache) is None


def test_an_index_removed_from_the_cache_is_rebuilt_on_first_use(fx, tmp_path):
    cache = tmp_path / "cache"
    first = Sa1bSource([str(t) for t in fx.tars], str(cache))
    for f in cache.rglob("*.idx"):
        f.unlink()
    again = Sa1bSource([str(t) for t in fx.tars], str(cache))  # the summary is still there
    np.testing.assert_array_equal(again.load(4).image, fx.images[_stems(fx)[4]])
    assert [f.parent.name for f in cache.rglob("*.idx")] == ["tar-index-v1"]  # image 4's tar
    assert again.fingerprint() == first.fingerprint() and again.load(0).instances
    assert len(list(cache.rglob("*.idx"))) == 2


def test_tar_lists_globs_and_their_errors(fx, tmp_path):
    cache = str(tmp_path / "cache")
    one = Sa1bSource(str(fx.tars[1]), cache)
    both = Sa1bSource(str(fx.tars[0].parent / "sa_*.tar"), cache)
    listed = Sa1bSource([str(fx.tars[1]), str(fx.tars[0]), str(fx.tars[1])], cache)
    assert len(one) == 3 and len(both) == len(listed) == 6
    assert both.fingerprint() == listed.fingerprint()  # URL order, duplicates dropped
    with pytest.raises(SourceError, match=r"nope\.tar: tar not found; check the path"):
        Sa1bSource([str(fx.tars[0]), str(fx.tars[0].parent / "nope.tar")], cache)
    with pytest.raises(SourceError, match=r"x_\*\.tar: no tar matches this pattern"):
        Sa1bSource(str(fx.tars[0].parent / "x_*.tar"), cache)
    with pytest.raises(SourceError, match="is a folder, not a tar"):
        Sa1bSource(str(fx.tars[0].parent), cache)
    with pytest.raises(ConfigError, match="tars: 7; give a path, URL or glob"):
        Sa1bSource(7, cache)
    with pytest.raises(ConfigError, match=r"'sa1b': unknown field\(s\) min_iou"):
        create_source("sa1b", tars=str(fx.tars[0]), cache_dir=cache, min_iou=0.5)
    with pytest.raises(ConfigError, match=r"'sa1b': missing field\(s\) cache_dir"):
        create_source("sa1b", tars=str(fx.tars[0]))


def test_tars_and_cache_on_an_fsspec_filesystem(fx):
    fs = fsspec.filesystem("memory")
    for t in fx.tars:
        fs.pipe_file(f"/synth-sa1b/{t.name}", t.read_bytes())
    src = Sa1bSource("memory://synth-sa1b/*.tar", "memory://synth-sa1b-cache", max_masks=9)
    assert len(src) == 6 and fs.exists("/synth-sa1b-cache/tar-index-v1")
    for i, stem in enumerate(_stems(fx)):
        np.testing.assert_array_equal(src.load(i).image, fx.images[stem])
    url = src.tar_set.refs[0].url
    assert url.startswith("memory://") and url.endswith("/synth-sa1b/sa_000000.tar")


def test_bad_data_is_counted_and_strict_stops(tmp_path):
    fx = write_sa1b_corpus(tmp_path / "tars", n_tars=2, per_tar=3, bad=list(BAD_CASES))
    cache = str(tmp_path / "cache")
    src = Sa1bSource(str(tmp_path / "tars" / "*.tar"), cache)
    reasons = " | ".join(f"{w}: {r}" for w, r in src.problems)
    for case, fragment in BAD_CASES.items():
        if case != "corrupt_jpeg":
            assert fragment in reasons, case
    assert len(src.problems) == 4 and len(src) == 5
    bad = _stems(fx).index(fx.bad["corrupt_jpeg"])
    with pytest.raises(SourceError, match=r"sa_000000\.tar: sa_2\.jpg: cannot decode image"):
        src.load(bad)
    with pytest.raises(SourceError, match=r"sa_000000\.tar: sa_1\.json: annotation 0: RLE size"):
        Sa1bSource(str(tmp_path / "tars" / "*.tar"), cache, strict=True)


def test_an_rle_that_does_not_cover_the_image_fails_its_load_only(tmp_path):
    from tests.sa1b_fixture import jpeg, photo, rect_masks, sa1b_json

    hw = (60, 80)
    doc = json.loads(sa1b_json(1, "a.jpg", hw, rect_masks(0, (50, 80), 2)))
    for ann in doc["annotations"]:
        ann["segmentation"]["size"] = list(hw)  # says 60x80, covers 50x80
    members = [("a.jpg", jpeg(photo(0, hw))), ("a.json", json.dumps(doc).encode())]
    src = Sa1bSource(str(write_tar(tmp_path / "c.tar", members)), str(tmp_path / "cache"))
    for load in (src.load, lambda i: src.load_resized(i, (30, 40))):
        with pytest.raises(SourceError, match="annotation 0 RLE covers 4000 pixels, not 60x80"):
            load(0)


@pytest.mark.parametrize("kind", sorted(__import__("synth.edits", fromlist=["EDITS"]).EDITS))
def test_every_edit_runs_on_it(fx, tmp_path_factory, kind):
    from synth.edits import changed_pixels

    cache = tmp_path_factory.getbasetemp() / "sa1b-edits-cache"
    m = parse_manifest(
        {
            "name": "sa1b",
            "seed": 3,
            "n": 3,
            "size": [48, 64],
            "shard_size": 3,
            "sources": {
                "images": [
                    {
                        "name": "sa1b",
                        "kind": "sa1b",
                        "tars": [str(t) for t in fx.tars],
                        "cache_dir": str(cache),
                        "min_area_frac": 0.005,
                    }
                ],
                "textures": [{"name": "tex", "kind": "samples"}],
            },
            "mix": {kind: 1.0},
        },
        base_dir=None,
    )
    catalog = Catalog.open(m)
    for i in range(m.n):
        spec, triple, skipped, _ = realize(m, catalog, i)
        assert spec.kind == kind and not skipped
        assert triple.mask.shape == (48, 64)
        np.testing.assert_array_equal(
            changed_pixels(triple.prompt, triple.query), triple.mask.astype(bool)
        )


def test_shipped_manifest_parses_with_tars_resolved_against_it():
    import inspect
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((repo / "manifests" / "sa1b.yaml").read_text())
    raw["sources"]["textures"] = [{"name": "tex", "kind": "samples"}]  # DTD is not here
    m = parse_manifest(raw, base_dir=repo / "manifests")
    (spec,) = m.images
    assert spec.kind == "sa1b"
    assert spec.options["tars"] == str(repo / "manifests" / "data" / "sa1b" / "sa_*.tar")
    assert set(spec.options) <= set(inspect.signature(Sa1bSource).parameters)


def test_preview_and_gallery_on_the_fly(fx, tmp_path):
    import yaml
    from click.testing import CliRunner

    from synth.cli import main

    doc = {
        "name": "sa1b-preview",
        "n": 4,
        "size": [48, 64],
        "shard_size": 4,
        "sources": {
            "images": [
                {
                    "name": "sa1b",
                    "kind": "sa1b",
                    "tars": [str(t) for t in fx.tars],
                    "cache_dir": str(tmp_path / "cache"),
                }
            ],
            "textures": [{"name": "tex", "kind": "samples"}],
        },
    }
    man = tmp_path / "m.yaml"
    man.write_text(yaml.safe_dump(doc))
    out, gallery = tmp_path / "p.png", tmp_path / "g"
    r = CliRunner().invoke(
        main,
        [
            "preview",
            str(man),
            "-n",
            "4",
            "-o",
            str(out),
            "--html",
            str(gallery),
            "--kinds",
            "exchange,disappearance_inpaint",
        ],
    )
    assert r.exit_code == 0, r.output
    assert out.is_file() and (gallery / "index.html").is_file()
    assert len(list((gallery / "img").glob("*-overlay.png"))) == 4


def test_s3_tars_are_stamped_by_etag_and_read_by_range(fx, moto_s3, monkeypatch):
    import fsspec.config

    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": moto_s3}}
    monkeypatch.setitem(fsspec.config.conf, "s3", opts)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
    for t in fx.tars:
        fs.pipe_file(f"synth-test/sa1b/{t.name}", t.read_bytes())
    src = Sa1bSource("s3://synth-test/sa1b/*.tar", "s3://synth-test/cache", max_masks=9)
    assert [r.url for r in src.tar_set.refs] == [f"s3://synth-test/sa1b/{t.name}" for t in fx.tars]
    assert all(r.stamp.startswith("ETag:") for r in src.tar_set.refs)
    assert len(fs.ls("synth-test/cache/tar-index-v1")) == 3  # two indexes and the sets folder
    for i, stem in enumerate(_stems(fx)):
        item = src.load_resized(i, (30, 40))
        np.testing.assert_array_equal(item.image, resize_source_image(src.load(i), (30, 40)).image)
        assert [x.ann_id for x in item.instances] == [a for a, *_ in fx.masks[stem]]
    listed = Sa1bSource(
        [f"s3://synth-test/sa1b/{t.name}" for t in fx.tars], "s3://synth-test/cache"
    )
    assert listed.tar_set.refs == src.tar_set.refs
