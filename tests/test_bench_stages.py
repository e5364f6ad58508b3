"""``benchmarks/build.py``: ``--stages`` wraps synth's stage functions by name (keep the names
valid), and the naive side reads what synth reads, with synth's one-line errors."""

from __future__ import annotations

import importlib.util
import os
import pkgutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

import synth.sources.coco as coco
from synth.edits import EDITS
from synth.errors import SynthError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    """``benchmarks/build.py`` as a module, without leaving its one-thread settings behind."""
    threads, omp = cv2.getNumThreads(), os.environ.get("OMP_NUM_THREADS")
    spec = importlib.util.spec_from_file_location("bench_build", REPO / "benchmarks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cv2.setNumThreads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    return module


def test_stage_timers_wrap_every_stage_and_restore_it(bench, tmp_path):
    originals = {label: pkgutil.resolve_name(target) for label, target in bench.STAGES}
    edit_fns = {k: e.fn for k, e in EDITS.items()}
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((4, 6, 3), 255, np.uint8))
    totals: dict[str, float] = defaultdict(float)
    with bench.stage_timers(totals):
        for label, target in bench.STAGES:
            assert pkgutil.resolve_name(target) is not originals[label], label
            assert pkgutil.resolve_name(target).__wrapped__ is originals[label], label
        assert all(EDITS[k].fn is not fn for k, fn in edit_fns.items())
        coco.decode_bgr(coco.read_bytes(str(photo)), str(photo))
    assert set(totals) == {"  read bytes", "  decode JPEG"}
    assert all(t > 0 for t in totals.values())
    assert {label: pkgutil.resolve_name(target) for label, target in bench.STAGES} == originals
    assert {k: e.fn for k, e in EDITS.items()} == edit_fns


def test_print_stages_adds_edits_other_and_the_ceiling(bench, capsys):
    runs = [
        {
            "draw specs": 1.0,
            "load images": 2.0,
            "  decode JPEG": 1.5,
            "  cutpaste": 3.0,
            "  none": 1.0,
            "encode shard": 0.5,
            "total": 10.0,
        },
    ]
    table = bench.print_stages(runs, n=1000, naive_ms=55.0)
    assert table["edits"] == pytest.approx(4.0)
    assert table["other"] == pytest.approx(10.0 - 1.0 - 2.0 - 4.0 - 0.5)
    assert table["total"] == pytest.approx(10.0)
    assert table["ceiling_ratio"] == pytest.approx(55.0 / (1.5 + 4.0))
    assert table["needed_ratio"] == pytest.approx(55.0 / (1.5 + 4.0 + 0.5))
    out = capsys.readouterr().out
    assert "  cutpaste" in out
    assert "10x asks for 5.50 ms per triple" in out


def test_needed_stages_are_timed_rows(bench):
    labels = {label for label, _ in bench.STAGES}
    assert set(bench.NEEDED_STAGES) <= labels
    assert not {"draw specs", "load images", "  read bytes", "  decode JPEG"} & set(
        bench.NEEDED_STAGES
    )


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools
def test_naive_side_reads_dtd_class_folders_like_synth(bench, tmp_path, monkeypatch):
    """DTD keeps one folder per class: the naive side must open the files synth lists."""
    import shutil

    from PIL import Image

    ann, img_dir, flat = bench._fixture(tmp_path / "fx")
    dtd = tmp_path / "dtd"
    for f in sorted(flat.iterdir()):
        (dtd / f.stem).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(f, dtd / f.stem / f"{f.stem}_{k:04d}.png")
    m = bench._manifest(ann, img_dir, dtd, n=12, shard=12, size=64)
    textures = bench._naive_catalog(m).textures[0]
    listed = {str(dtd / textures.path(i)) for i in range(len(textures))}
    assert len(listed) == 6
    opened: list[str] = []
    real = Image.open

    def spy(fp, *args, **kwargs):
        opened.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    out = tmp_path / "naive"
    out.mkdir()
    bench.naive_build(m, out, range(12))
    assert len(list(out.glob("*.png"))) == 36  # every triple, none dropped
    used = {p for p in opened if p.startswith(str(dtd))}
    assert used and used <= listed


def test_bad_coco_path_is_one_line_error(bench, tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "build.py"), "--coco", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: --coco {tmp_path / 'nope'}: no images/ folder; pass a folder holding images/ "
        "and annotations/instances.json"
    ]
    (tmp_path / "coco" / "images").mkdir(parents=True)
    ann, img_dir, tex_dir, _ = bench._inputs(tmp_path / "coco", tmp_path / "dtd", tmp_path)
    with pytest.raises(SynthError, match=r"ann_file: path .*instances\.json' does not exist"):
        bench._manifest(ann, img_dir, tex_dir, n=4, shard=4, size=64)
