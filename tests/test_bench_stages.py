"""``benchmarks/build.py --stages`` wraps synth's stage functions by name: keep the names valid."""

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
