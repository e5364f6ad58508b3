"""Manifest validation: every mistake is caught up front with the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synth.build import layout_for
from synth.errors import ConfigError
from synth.manifest import default_manifest, load_manifest, parse_manifest
from synth.store import DEFAULT_CODEC, Codec

REPO = Path(__file__).resolve().parents[1]


def _base() -> dict:
    return {
        "n": 8,
        "sources": {
            "images": [{"name": "s", "kind": "samples"}],
            "textures": [{"name": "t", "kind": "samples"}],
        },
    }


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"n": "ten"}, r"manifest.n: expected an integer"),
        ({"n": 0}, r"manifest.n: 0 is below the minimum 1"),
        ({"size": [8, 8]}, r"size: \[8, 8\] outside"),
        ({"size": "big"}, r"size: expected an int or \[height, width\]"),
        ({"mix": {"none": 0.5, "local_texture": 0.4}}, r"mix: probabilities sum to 0.9, not 1"),
        ({"mix": {"teleport": 1.0}}, r"mix.teleport: unknown edit kind"),
        ({"mix": {"none": -1.0, "cutpaste": 2.0}}, r"mix.none: -1.0 must be a probability"),
        ({"edits": {"local_texture": {"weight_rnage": [0, 1]}}}, r"edits.local_texture: unknown"),
        ({"codec": {"jpeg": 90}}, r"codec: .*lossless"),
        (
            {"codec": {"name": "lz5"}},
            r"codec.name: 'lz5' unknown; use one of blosc-lz4, zstd, none",
        ),
        ({"codec": {"name": "zstd", "level": 30}}, r"codec.level: 30 for zstd; .* in 0..22"),
        ({"codec": {"name": "blosc-lz4", "level": 0}}, r"codec.level: 0 for blosc-lz4; .* 1..9"),
        ({"codec": {"name": "none", "level": "3"}}, r"codec.level: '3' for none; .* 0..0"),
        ({"sampling": {"mode": False}}, r"sampling.mode: False; use one of pooled, independent"),
        ({"sampling": {"pool": 3}}, r"sampling: .*; use \{mode: pooled\|independent\}"),
        ({"codec": {"name": "zstd", "zstd_level": 3}}, r"codec: .*use \{name: blosc-lz4\|zstd"),
        ({"version": 2}, r"version: 2 unsupported"),
        ({"sources": {"images": []}}, r"sources.images: empty"),
        ({"sources": {"images": [{"name": "s"}]}}, r"sources.images\[0\].kind: missing"),
        ({"sources": {"videos": []}}, r"sources: unknown key"),
    ],
)
def test_bad_manifests_name_field_and_fix(patch, message):
    raw = {**_base(), **patch}
    with pytest.raises(ConfigError, match=message) as e:
        parse_manifest(raw, base_dir=None)
    assert "\n" not in str(e.value)


def test_codec_choice_defaults_and_old_spelling():
    assert parse_manifest(_base(), base_dir=None).codec == Codec.of(DEFAULT_CODEC)
    for codec, want in [
        ({"name": "zstd"}, Codec("zstd", 2)),
        ({"name": "blosc-lz4", "level": 5}, Codec("blosc-lz4", 5)),
        ({"name": "none"}, Codec("none", 0)),
        ({"zstd_level": 7}, Codec("zstd", 7)),  # format-1 manifests keep their meaning
    ]:
        m = parse_manifest({**_base(), "codec": codec}, base_dir=None)
        assert m.codec == want and m.to_dict()["codec"] == want.to_dict()
        assert parse_manifest(m.to_dict(), base_dir=None) == m
    assert layout_for(m).codec == Codec("zstd", 7)


def test_texture_edits_need_a_texture_source():
    raw = _base()
    raw["sources"] = {"images": [{"name": "s", "kind": "samples"}]}
    raw["mix"] = {"local_texture": 1.0}
    with pytest.raises(ConfigError, match="sources.textures: empty but mix uses"):
        parse_manifest(raw, base_dir=None)


def test_missing_path_is_named(tmp_path):
    raw = _base()
    raw["sources"]["images"] = [
        {"name": "c", "kind": "coco", "ann_file": "nope.json", "image_root": "."}
    ]
    with pytest.raises(ConfigError, match=r"sources.images\[0\].ann_file: path .*nope.json"):
        parse_manifest(raw, base_dir=tmp_path)


def test_relative_paths_resolve_against_manifest_dir(tmp_path):
    (tmp_path / "imgs").mkdir()
    raw = _base()
    raw["sources"]["images"] = [{"name": "p", "kind": "proposals", "root": "imgs"}]
    m = parse_manifest(raw, base_dir=tmp_path)
    assert m.images[0].options["root"] == str(tmp_path / "imgs")


def test_yaml_errors_name_the_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("n: 3\nsources: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_manifest(p)
    with pytest.raises(ConfigError, match="manifest file not found"):
        load_manifest(tmp_path / "absent.yaml")


def test_fingerprint_tracks_content_and_roundtrips():
    a = parse_manifest(_base(), base_dir=None)
    b = parse_manifest(a.to_dict(), base_dir=None)
    assert a.fingerprint() == b.fingerprint()
    assert a.with_overrides(seed=1).fingerprint() != a.fingerprint()
    assert a.with_overrides(size="32x48").size == (32, 48)


@pytest.mark.parametrize("name", ["demo.yaml", "metauas-coco2017.yaml"])
def test_shipped_manifests_parse(name):
    raw = yaml.safe_load((REPO / "manifests" / name).read_text())
    m = parse_manifest(raw, base_dir=None) if name == "demo.yaml" else None
    if m is not None:
        assert abs(sum(m.mix.values()) - 1) < 1e-9 and m.n >= 200
    else:
        raw["sources"] = _base()["sources"]  # COCO/DTD paths are not on test machines
        parse_manifest(raw, base_dir=None)


def test_default_manifest_is_valid():
    m = default_manifest(n=4, size=(48, 64))
    assert m.size == (48, 64) and m.n == 4 and m.textures
