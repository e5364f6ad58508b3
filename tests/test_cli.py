"""The command line: preview on the fly and from a store, info, verify, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from synth.build import build
from synth.cli import main
from synth.manifest import load_manifest
from tests.conftest import write_manifest


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    m = load_manifest(write_manifest(d / "m.yaml", n=12))
    url = d / "s.zarr"
    build(m, str(url), workers=1, progress=False)
    return url


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_preview_on_the_fly_png_and_gallery(tmp_path):
    out, gal = tmp_path / "p.png", tmp_path / "gal"
    r = _run(
        "preview",
        "--source",
        "samples",
        "-n",
        "4",
        "-o",
        str(out),
        "--html",
        str(gal),
        "--size",
        "48x64",
        "--cols",
        "2",
    )
    assert r.exit_code == 0, r.output
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 2 * 48 and img.shape[1] > 2 * 3 * 64
    page = (gal / "index.html").read_text()
    assert page.count("<tr>") == 5  # header + 4 triples
    for src in re.findall(r'src="([^"]+)"', page):
        assert (gal / src).is_file()


def test_preview_kinds_filter_shows_only_those(tmp_path):
    gal = tmp_path / "g"
    r = _run(
        "preview",
        "-n",
        "6",
        "-o",
        str(tmp_path / "p.png"),
        "--html",
        str(gal),
        "--kinds",
        "cutpaste,none",
        "--size",
        "48",
    )
    assert r.exit_code == 0, r.output
    kinds = re.findall(r"<b>([a-z_]+)</b>", (gal / "index.html").read_text())
    assert len(kinds) == 6 and set(kinds) <= {"cutpaste", "none"}


def test_preview_from_store(store, tmp_path):
    out = tmp_path / "s.png"
    r = _run("preview", str(store), "-n", "4", "-o", str(out), "--seed", "1")
    assert r.exit_code == 0, r.output
    assert "4 triples" in r.output and cv2.imread(str(out)) is not None


def test_preview_by_kind_shows_every_kind_in_the_store(store, tmp_path):
    from synth.store import StoreReader

    reader = StoreReader(str(store))
    present = {reader.kinds[k] for k in reader.meta()["kind"]}
    gal = tmp_path / "g"
    r = _run(
        "preview",
        str(store),
        "-n",
        str(len(present)),
        "--by-kind",
        "-o",
        str(tmp_path / "k.png"),
        "--html",
        str(gal),
    )
    assert r.exit_code == 0, r.output
    shown = re.findall(r"<b>([a-z_]+)</b>", (gal / "index.html").read_text())
    assert set(shown) == present


def test_info_reports_counts_and_provenance(store):
    r = _run("info", str(store))
    assert r.exit_code == 0, r.output
    assert "samples    12 / 12 at 64x64" in r.output
    assert "manifest   test" in r.output and "mask area" in r.output
    r = _run("info", str(store), "--json")
    assert '"samples_present": 12' in r.output


def test_verify_passes_then_catches_a_tampered_mask(store, tmp_path):
    r = _run("verify", str(store), "--spot-checks", "4")
    assert r.exit_code == 0 and "0 problem(s)" in r.output, r.output
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    g = zarr.open_group(str(bad), mode="r+")
    areas = g["meta/mask_area"][:]
    i = int(np.argmax(areas))
    g["mask"][i] = np.zeros_like(g["mask"][i])
    r = CliRunner().invoke(main, ["verify", str(bad), "--spot-checks", "4"])
    assert r.exit_code == 1
    assert f"mask_area wrong for samples [{i}]" in r.output


def test_bad_manifest_is_one_line_error(tmp_path):
    p = write_manifest(tmp_path / "bad.yaml", mix={"none": 0.5})
    r = CliRunner().invoke(main, ["build", str(p), "-o", str(tmp_path / "x.zarr")])
    assert r.exit_code == 2
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "bad.yaml: mix: probabilities sum to 0.5" in errors[0]
    assert "Traceback" not in r.output


def test_not_a_store_is_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["info", str(tmp_path / "nothing.zarr")])
    assert r.exit_code == 2 and r.output.startswith("error: ")


def test_train_defaults_are_the_configs(monkeypatch):
    """``synth train STORE --out OUT`` builds exactly ``TrainConfig(STORE, OUT)``."""
    import synth.train.loop as loop
    from synth.train.config import TrainConfig

    seen = {}

    def launch(config, gpus):
        seen.update(config=config, gpus=gpus)
        return SimpleNamespace(step=0, checkpoint="runs/x/last.pt", val={})

    monkeypatch.setattr(loop, "launch", launch)
    assert _run("train", "s.zarr", "--out", "runs/x").exit_code == 0
    assert seen["config"] == TrainConfig(store="s.zarr", out="runs/x") and seen["gpus"] == 1
    assert _run("train", "s.zarr", "--out", "o", "--distance-levels", "1,2,3,4").exit_code == 0
    assert seen["config"].distance_levels == (1, 2, 3, 4)


def test_train_preset_sets_its_fields_and_typed_options_win(monkeypatch):
    """``--preset cpu`` trains the recipe the learning benchmark measured; an option typed on
    the command line still overrides the preset, and ``--help`` names every preset."""
    import dataclasses

    import synth.train.loop as loop
    from synth.train.config import TrainConfig
    from synth.train.presets import PRESETS

    seen = {}

    def launch(config, gpus):
        seen.update(config=config)
        return SimpleNamespace(step=0, checkpoint="runs/x/last.pt", val={})

    monkeypatch.setattr(loop, "launch", launch)
    cpu = PRESETS["cpu"]
    assert _run("train", "s.zarr", "--out", "o", "--preset", "cpu").exit_code == 0
    base = TrainConfig(store="s.zarr", out="o")
    want = dataclasses.replace(base, **cpu.train, aug=dataclasses.replace(base.aug, **cpu.aug))
    assert seen["config"] == want and seen["config"].aug.ignore_unseen
    args = ["--preset", "cpu", "--lr", "1e-3", "--elastic", "0.2", "--fusion", "difference"]
    assert _run("train", "s.zarr", "--out", "o", *args).exit_code == 0
    got = seen["config"]
    assert (got.lr, got.aug.elastic, got.fusion) == (1e-3, 0.2, "difference")
    assert got.size == cpu.train["size"] and got.aug.misalign_p == cpu.aug["misalign_p"]
    nuisance = ["--misalign-kinds", "exchange,appearance_paste", "--ignore-unseen"]
    assert cpu.aug["misalign_kinds"] != ("exchange", "appearance_paste")
    assert _run("train", "s.zarr", "--out", "o", *nuisance).exit_code == 0
    assert seen["config"].aug.misalign_kinds == ("exchange", "appearance_paste")
    assert seen["config"].aug.ignore_unseen
    # the paper preset is TrainConfig's own defaults
    assert _run("train", "s.zarr", "--out", "o", "--preset", "paper").exit_code == 0
    assert seen["config"] == base
    help_text = " ".join(_run("train", "--help").output.split())
    assert all(f"{name}:" in help_text for name in PRESETS)
    bad = _run("train", "s.zarr", "--out", "o", "--preset", "gpu")
    assert bad.exit_code == 2 and "'gpu' is not one of" in bad.output
