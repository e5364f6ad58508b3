"""``benchmarks/learning.py``: recipe options, and one tiny end-to-end run on fixture data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import pytest
from skimage import data

from synth.errors import SynthError

from .coco_fixture import write_coco_fixture
from .evaluation.conftest import make_mvtec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_learning", REPO / "benchmarks" / "learning.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mix_weights_are_rescaled_and_bad_ones_refused(bench):
    assert bench.parse_mix("local_texture=3,exchange=1") == {
        "local_texture": 0.75,
        "exchange": 0.25,
    }
    for bad in ("local_texture", "local_texture=-1", "a=0"):
        with pytest.raises(SynthError, match="--mix"):
            bench.parse_mix(bad)


def test_edit_parameters_override_the_papers(bench):
    mix = {"local_texture": 0.5, "exchange": 0.5}
    params = bench.edit_params(mix, ["local_texture.scale_exp_range=[0,3]", "exchange.x=1"])
    assert params["local_texture"]["scale_exp_range"] == [0, 3]
    assert params["local_texture"]["n_augment"] == 3  # the paper's, kept
    assert params["exchange"] == {"x": 1} and "appearance_paste" not in params
    with pytest.raises(SynthError, match="--edit"):
        bench.edit_params(mix, ["cutpaste.mode=scar"])


def test_texture_bases_add_the_textures_as_a_plain_source(bench):
    paper = bench.image_sources("/c", "/t", 0.0)
    assert [s["kind"] for s in paper] == ["coco"]
    assert paper[0]["ann_file"] == "/c/annotations/instances.json"
    both = bench.image_sources("/c", "/t", 0.5)
    assert both[0] == paper[0]
    assert both[1] == {"name": "dtd_bases", "kind": "plain", "root": "/t", "weight": 0.5}
    with pytest.raises(SynthError, match="--texture-bases -1"):
        bench.image_sources("/c", "/t", -1)


def test_train_options_are_typed_by_their_defaults(bench):
    top, aug = bench.parse_train_options(
        ["loss=bce+dice", "align_levels=4", "amp=false", "aug.misalign_p=0.9", "aug.scale=1,2"]
    )
    assert top == {"loss": "bce+dice", "align_levels": 4, "amp": False, **bench.BENCH_TRAIN}
    assert aug == {"misalign_p": 0.9, "elastic": 0.0, "scale": (1.0, 2.0)}
    assert bench.parse_train_options([]) == (bench.BENCH_TRAIN, bench.BENCH_AUG)
    assert bench.parse_train_options(["distance_levels="])[0]["distance_levels"] == ()
    with pytest.raises(SynthError, match="--train 'nonsense=1'"):
        bench.parse_train_options(["nonsense=1"])
    assert bench.parse_train_options(["distance_levels=1,2"])[0] == {"distance_levels": (1, 2)}
    with pytest.raises(SynthError, match="--train 'lr=3e-4'.*--lr"):
        bench.parse_train_options(["lr=3e-4"])


@pytest.mark.slow
def test_one_tiny_run_prints_floor_untrained_and_trained(bench, tmp_path, capsys):
    coco = write_coco_fixture(tmp_path / "coco").root
    textures = tmp_path / "textures"
    textures.mkdir()
    for name in ("brick", "grass", "gravel"):
        assert cv2.imwrite(str(textures / f"{name}.png"), getattr(data, name)())
    anomaly = make_mvtec(tmp_path / "anomaly")
    out = tmp_path / "learning.json"
    base = ["--coco", str(coco), "--textures", str(textures), "--data", str(anomaly)]
    base += ["--n", "32", "--build-size", "64", "--size", "32", "--batch", "4", "--warmup", "1"]
    base += ["--eval-size", "32", "--device", "cpu", "--workdir", str(tmp_path / "work")]
    base += ["--mix", "local_texture=1,exchange=1"]
    args = [*base, "--steps", "3", "--curve-every", "2", "--json", str(out)]
    result = bench.main([*args, "--maps", str(tmp_path / "maps.png")])
    table = capsys.readouterr().out
    for row in ("floor (feature distance)", "untrained (step 0)", "trained (3 steps)"):
        assert f"| bottle | {row} |" in table and f"| **mean** | {row} |" in table
    assert "| MVTec AD (paper, for scale) |" in table and "| 94.6 |" in table
    assert "learning: trained model" in table
    doc = json.loads(out.read_text())
    assert doc["manifest"]["mix"] == {"local_texture": 0.5, "exchange": 0.5}
    assert doc["categories"] == ["bottle", "cable"] == result["categories"]
    assert set(doc["rows"]) == {
        "floor (feature distance)",
        "untrained (step 0)",
        "trained (3 steps)",
    }
    floor = doc["rows"]["floor (feature distance)"]["mean"]
    assert len(floor["P-ROC"]) == 2 and 0 <= floor["P-ROC"][0] <= 100
    assert doc["train_config"]["schedule_steps"] == 3 and doc["train_config"]["max_steps"] == 3
    # the curve scores the step-2 checkpoint of the same run, then the final model
    assert [c["step"] for c in doc["curve"]] == [2, 3]
    assert doc["curve"][-1]["P-ROC"] == doc["rows"]["trained (3 steps)"]["mean"]["P-ROC"]
    assert "| step | mean P-ROC |" in table and "| 2 |" in table
    # 3 anomalous images of each of 2 categories, 6 tiles of 32 px, under a 20 px header
    assert cv2.imread(str(tmp_path / "maps.png")).shape == (20 + 6 * 32, 6 * 32, 3)

    # a budget in minutes: steps from a timed probe of the same config; the store is reused
    again = bench.main([*base, "--minutes", "0.05"])
    assert again["manifest"] == doc["manifest"] and again["timings"]["build_s"] < 30
    steps = again["train_config"]["max_steps"]
    assert steps >= 1 and again["train_config"]["schedule_steps"] == steps
    assert f"trained ({steps} steps)" in again["rows"]


def test_missing_inputs_are_one_line_errors(bench, tmp_path):
    with pytest.raises(SystemExit, match="--data .*: no such folder"):
        bench.main(["--data", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="--coco .*: no such folder"):
        bench.main(["--data", str(make_mvtec(tmp_path / "a")), "--coco", str(tmp_path / "x")])
    recipe = ["--manifest", "m.yaml", "--texture-bases", "0"]
    with pytest.raises(SystemExit, match="--texture-bases change the built-in recipe"):
        bench.main(["--data", str(tmp_path / "a"), *recipe])
