"""What a store's bytes depend on: code fingerprint, package versions, the refusals."""

from __future__ import annotations

import shutil

import pytest

from synth import provenance
from synth.errors import SynthError


def test_code_fingerprint_follows_the_generator_modules_only(tmp_path):
    pkg = tmp_path / "synth"
    shutil.copytree(provenance.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    base = provenance.code_fingerprint(pkg)
    assert base == provenance.code_fingerprint(provenance.PACKAGE_DIR)
    assert len(base) == 16
    cli = pkg / "cli.py"
    cli.write_text(cli.read_text() + "\n# not part of the generator\n")
    assert provenance.code_fingerprint(pkg) == base
    local = pkg / "edits" / "local.py"
    local.write_text(local.read_text().replace("(0.2, 1.0)", "(0.3, 1.0)", 1))
    changed = provenance.code_fingerprint(pkg)
    assert changed != base
    (pkg / "edits" / "extra.py").write_text("X = 1\n")
    assert provenance.code_fingerprint(pkg) not in (base, changed)


def test_generator_records_code_and_byte_packages():
    gen = provenance.generator()
    assert gen["code"] == provenance.code_fingerprint()
    assert {"numpy", "zarr", "numcodecs"} <= set(gen["packages"])
    assert "dask" not in gen["packages"]  # schedules the work, never shapes its bytes
    assert set(gen["packages"]) <= set(provenance.versions())


def test_generator_changes_names_each_difference():
    a = {"code": "aaaa", "packages": {"numpy": "2.1.0", "zarr": "3.1.0"}}
    assert provenance.generator_changes(a, a) == []
    b = {"code": "bbbb", "packages": {"numpy": "2.2.0", "pycocotools": "2.0.8"}}
    assert provenance.generator_changes(a, b) == [
        "synth code aaaa -> bbbb",
        "numpy 2.1.0 -> 2.2.0",
        "pycocotools absent -> 2.0.8",
        "zarr 3.1.0 -> absent",
    ]


def test_check_resume_refuses_changed_sources_and_generator():
    gen = provenance.generator()
    attrs = {"fingerprints": {"coco": "1111", "tex": "2222"}, "generator": gen}
    provenance.check_resume("s.zarr", attrs, {"coco": "1111", "tex": "2222"})
    provenance.check_resume("s.zarr", attrs, None)
    with pytest.raises(SynthError, match=r"s\.zarr: .*source 'coco' 1111 -> 9999.*--overwrite"):
        provenance.check_resume("s.zarr", attrs, {"coco": "9999", "tex": "2222"})
    older = {**attrs, "generator": {**gen, "packages": {**gen["packages"], "numpy": "1.0"}}}
    with pytest.raises(SynthError, match=r"numpy 1\.0 -> "):
        provenance.check_resume("s.zarr", older, {"coco": "1111", "tex": "2222"})
    unrecorded = {"fingerprints": attrs["fingerprints"]}  # a store from before the record
    provenance.check_resume("s.zarr", unrecorded, {"coco": "1111", "tex": "2222"})


def test_check_worker_refuses_a_different_generator():
    provenance.check_worker(provenance.generator())
    other = {**provenance.generator(), "code": "0123456789abcdef"}
    with pytest.raises(SynthError, match=r"worker on .*synth code 0123456789abcdef -> .*every"):
        provenance.check_worker(other)
