"""Format 2 stores still work: every reading command reads them, build refuses to extend them
in one line, and ``synth convert`` rewrites them as format 3 with the same samples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth import store as zs
from synth.cli import main
from synth.convert import convert_store
from synth.errors import SynthError
from synth.info import store_info, verify_store
from synth.train.data import StoreBatches
from tests.conftest import store_digest, write_manifest
from tests.format2_fixture import write_format2_toy_store
from tests.train.store_fixture import write_toy_store

FIELDS = (*zs.PIXEL_FIELDS, *zs.META_FIELDS)


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("f2") / "old.zarr")
    write_format2_toy_store(url, n=20, size=32, shard_size=8, seed=4)
    return url


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_every_reader_reads_a_format_2_store(old, tmp_path):
    ref = str(tmp_path / "new.zarr")
    write_toy_store(ref, n=20, size=32, shard_size=8, seed=4)  # the same triples, format 3
    want = zs.StoreReader(ref).read_range(0, 20, FIELDS)
    for backend in ("tensorstore", "zarr"):
        r = zs.StoreReader(old, backend=backend)
        assert r.format_version == 2
        got = r.read_indices([19, 0, 8, 8], FIELDS)
        for f in FIELDS:
            np.testing.assert_array_equal(got[f], want[f][[19, 0, 8, 8]], err_msg=f"{backend} {f}")
    for backend in ("direct", "tensorstore"):
        ds = StoreBatches(old, 6, seed=1, backend=backend)
        assert (ds.fast is not None) == (backend == "direct")
        ds.set_epoch(0)
        for b in ds:
            idx = b["index"].numpy()
            for f in zs.PIXEL_FIELDS:
                assert torch.equal(b[f], torch.from_numpy(want[f][idx])), (backend, f)
    records = zs.shard_records(old)
    assert sorted(records) == [0, 1, 2]
    assert records[0]["skipped"] == [
        {
            "input": "toy[3]",
            "reason": "toy.png: cannot decode image; replace it",
            "uses": [[0, 0], [1, 2]],
        }
    ]


def test_info_verify_and_preview_read_format_2(old, tmp_path):
    info = store_info(old)
    assert info["format_version"] == 2 and info["samples_present"] == 20
    assert set(info["bytes"]) == {"prompt", "query", "mask"} and info["source_problems"] is None
    assert info["skipped_uses"] == 2
    r = _run("info", old)
    assert r.exit_code == 0, r.output
    assert "(format 2," in r.output and "toy[3] (x2)" in r.output and "not recorded" in r.output
    assert verify_store(old).ok
    r = _run("verify", old)
    assert r.exit_code == 0 and "0 problem(s)" in r.output, r.output
    r = _run("preview", old, "-n", "3", "-o", str(tmp_path / "p.png"))
    assert r.exit_code == 0 and "3 triples" in r.output, r.output


def test_build_into_a_format_2_store_is_refused_in_one_line(old, tmp_path):
    man = write_manifest(tmp_path / "m.yaml", n=20)
    before = store_digest(old)
    r = _run("build", str(man), "-o", old, "--workers", "1", "--no-progress")
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "a format 2 store" in errors[0]
    assert f"synth convert {old} NEW" in errors[0] and "Traceback" not in r.output
    assert store_digest(old) == before


def test_convert_keeps_every_sample_and_record(old, tmp_path):
    new = str(tmp_path / "conv.zarr")
    r = _run("convert", old, new, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "3 converted now" in r.output and "fewer bytes" in r.output
    a, b = zs.StoreReader(old), zs.StoreReader(new)
    assert b.format_version == 3 and b.layout.codec == zs.Codec()
    np.testing.assert_equal(a.read_range(0, 20, FIELDS), b.read_range(0, 20, FIELDS))
    assert zs.shard_records(old) == zs.shard_records(new)
    attrs = b.attrs
    assert attrs["converted_from"] == {
        "format_version": 2,
        "codec": {"name": "blosc-lz4", "level": 9},
        "manifest_hash": "0123456789abcdef",
    }
    assert attrs["kinds"] == a.kinds
    assert verify_store(new).ok
    # a second run finds every shard present and rewrites nothing
    before = store_digest(new)
    again = convert_store(old, new, progress=False)
    assert again.converted == 0 and again.present == 3
    assert store_digest(new) == before


def test_convert_resumes_and_takes_a_codec(tmp_path):
    old = str(tmp_path / "old.zarr")
    write_format2_toy_store(old, n=20, size=32, shard_size=8, seed=4, skip_shards=(2,))
    new = str(tmp_path / "conv.zarr")
    s = convert_store(old, new, codec=zs.Codec("blosc-lz4", 5), progress=False)
    assert (s.converted, s.missing_in_source) == (2, 1) and "incomplete" in s.render()
    assert zs.StoreReader(new).layout.codec == zs.Codec("blosc-lz4", 5)
    assert "complete" not in zs.read_attrs(new)
    with pytest.raises(SynthError, match="already format 3"):
        convert_store(new, str(tmp_path / "x.zarr"), progress=False)
    other = str(tmp_path / "other.zarr")
    write_toy_store(other, n=8, size=16, shard_size=4)
    with pytest.raises(SynthError, match="holds another store; pass --overwrite"):
        convert_store(old, other, progress=False)
    assert convert_store(old, other, overwrite=True, progress=False).converted == 2


def test_train_reads_a_format_2_store(old, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["train", old, "--out", str(out), "--encoder", "resnet18", "--size", "32"]
    args += ["--decoder-channels", "16,16,8,8,8", "--batch-size", "4", "--max-steps", "2"]
    args += ["--workers", "0", "--no-progress", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # offline: random encoder weights
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output
