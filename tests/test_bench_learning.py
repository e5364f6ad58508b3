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
    preset_top, preset_aug = bench.preset_options("cpu")
    assert top == {**preset_top, "loss": "bce+dice", "align_levels": 4, "amp": False}
    assert aug == {**preset_aug, "misalign_p": 0.9, "scale": (1.0, 2.0)}
    assert bench.parse_train_options([]) == (preset_top, preset_aug)
    # the benchmark's own options and budget are not the preset's fields here
    assert not set(preset_top) & {*bench.OWN_OPTIONS, *bench.BUDGET_FIELDS}
    assert bench.parse_train_options(["fusion=concat"])[0]["fusion"] == "concat"
    assert bench.parse_train_options(["distance_levels="])[0]["distance_levels"] == ()
    with pytest.raises(SynthError, match="--train 'nonsense=1'"):
        bench.parse_train_options(["nonsense=1"])
    assert bench.parse_train_options(["distance_levels=1,2"])[0]["distance_levels"] == (1, 2)
    with pytest.raises(SynthError, match="--train 'lr=3e-4'.*--lr"):
        bench.parse_train_options(["lr=3e-4"])


@pytest.mark.slow
def test_one_tiny_run_prints_floor_trained_seeds_and_the_paired_verdict(bench, tmp_path, capsys):
    coco = write_coco_fixture(tmp_path / "coco").root
    textures = tmp_path / "textures"
    textures.mkdir()
    for name in ("brick", "grass", "gravel"):
        assert cv2.imwrite(str(textures / f"{name}.png"), getattr(data, name)())
    anomaly = make_mvtec(tmp_path / "anomaly")
    out = tmp_path / "learning.json"
    cache = tmp_path / "cache"
    base = ["--coco", str(coco), "--textures", str(textures), "--data", str(anomaly)]
    base += ["--n", "32", "--build-size", "64", "--size", "32", "--batch", "4", "--warmup", "1"]
    base += ["--eval-size", "32", "--device", "cpu", "--workdir", str(tmp_path / "work")]
    base += ["--mix", "local_texture=1,exchange=1", "--cache", str(cache), "--boot", "200"]
    args = [*base, "--steps", "3", "--curve-every", "2", "--train-seeds", "0,1"]
    result = bench.main([*args, "--json", str(out), "--maps", str(tmp_path / "maps.png")])
    table = capsys.readouterr().out
    labels = ["floor (feature distance)", "untrained (step 0)", "trained, seed 0"]
    labels += ["trained, seed 1", "trained, 2 seeds"]
    for row in labels:
        assert f"| bottle | {row} |" in table and f"| **mean** | {row} |" in table
    assert "| MVTec AD (paper, for scale) |" in table and "| 94.6 |" in table
    assert "| trained, 2 seeds | " in table and "worst set P-ROC" in table
    assert "paired bootstrap, trained (training seeds 0,1) minus floor" in table
    assert "learning: the trained model " in table and "seed 1: " in table
    doc = json.loads(out.read_text())
    assert doc["manifest"]["mix"] == {"local_texture": 0.5, "exchange": 0.5}
    assert doc["categories"] == ["bottle", "cable"] == result["categories"]
    assert set(doc["rows"]) == set(labels)
    floor = doc["rows"]["floor (feature distance)"]["mean"]
    assert len(floor["P-ROC"]) == 2 and 0 <= floor["P-ROC"][0] <= 100
    # the seeds' row is the mean of the two seeds' means, ± their spread
    seeds = [doc["rows"][f"trained, seed {s}"]["mean"]["P-ROC"][0] for s in (0, 1)]
    both = doc["rows"]["trained, 2 seeds"]["mean"]["P-ROC"]
    assert both[0] == pytest.approx(sum(seeds) / 2) and both[1] == pytest.approx(
        abs(seeds[0] - seeds[1]) / 2
    )
    # the worst set is the set with the lowest difference to the floor
    versus = doc["versus_floor"]["trained, seed 0"]["P-ROC"]
    assert versus["worst"] == min(versus["per_set"].values())
    for where in ("mean", "bottle", "cable"):
        d = doc["paired"]["pooled"][where]["P-ROC"]
        assert d["low"] <= d["high"] and d["verdict"] in ("beats", "ties", "loses")
        assert d["verdict"] == ("beats" if d["low"] > 0 else "loses" if d["high"] < 0 else "ties")
    assert set(doc["paired"]["per_seed"]) == {"0", "1"}
    assert doc["train_config"]["schedule_steps"] == 3 and doc["train_config"]["max_steps"] == 3
    # the curve scores the step-2 checkpoint of each seed's run, then the final model
    assert [c["step"] for c in doc["curves"]["1"]] == [2, 3]
    assert doc["curves"]["1"][-1]["P-ROC"] == doc["rows"]["trained, seed 1"]["mean"]["P-ROC"]
    assert "| seed | step | mean P-ROC |" in table and "| 1 | 2 |" in table
    # 3 anomalous images of each of 2 categories, 5 tiles of 32 px, under a 20 px header
    assert cv2.imread(str(tmp_path / "maps.png")).shape == (20 + 6 * 32, 5 * 32, 3)
    assert len(list(cache.glob("floor-*.pkl"))) == 1

    # --reuse adds nothing to train when every seed's config, evaluation and code are the same
    reused = bench.main([*args, "--reuse"])
    assert reused["timings"]["train_s"] == 0 and reused["rows"] == result["rows"]

    # a budget in minutes: steps from a timed probe of the same config; the store is reused,
    # and so are the floor's scores
    again = bench.main([*base, "--minutes", "0.05", "--train-seeds", "3"])
    assert again["manifest"] == doc["manifest"] and again["timings"]["build_s"] < 30
    assert again["rows"]["floor (feature distance)"] == doc["rows"]["floor (feature distance)"]
    steps = again["train_config"]["max_steps"]
    assert steps >= 1 and again["train_config"]["schedule_steps"] == steps
    assert "trained, seed 3" in again["rows"] and "trained, 1 seed" not in again["rows"]
    assert again["paired"]["per_seed"] == {}

    # a run that ships the weights' moving average also scores its raw weights, paired
    ema = bench.main([*base, "--steps", "2", "--train-seeds", "4", "--train", "ema=0.5"])
    avg, raw = ema["rows"]["trained, seed 4"], ema["rows"]["trained, seed 4, raw weights"]
    assert avg != raw  # after 2 steps the average is (w1 + w2) / 2, not w2
    d = ema["average_vs_raw"]["mean"]["P-ROC"]
    assert d["diff"] == pytest.approx(avg["mean"]["P-ROC"][0] - raw["mean"]["P-ROC"][0], abs=0.5)
    assert "moving average (what the checkpoint ships, ema 0.5) minus the raw" in (
        capsys.readouterr().out
    )
    assert doc["average_vs_raw"] == {} and "raw weights" not in " ".join(doc["rows"])


def test_sources_name_coco_camvid_or_both(bench):
    assert bench.parse_sources("camvid,coco") == ("coco", "camvid")
    with pytest.raises(SynthError, match="--sources 'ade'"):
        bench.parse_sources("ade")
    both = bench.image_sources("/c", "/t", 1.0, camvid="/v")
    assert [s["kind"] for s in both] == ["coco", "folder", "plain"]
    assert both[1]["root"] == "/v" and both[1]["min_area_frac"] == both[0]["min_area_frac"]
    assert both[2]["weight"] == 2.0  # as often as the two instance sources together
    alone = bench.image_sources("/c", "/t", 1.0, camvid="/v", coco_too=False)
    assert [s["name"] for s in alone] == ["camvid", "dtd_bases"] and alone[1]["weight"] == 1.0


def test_missing_inputs_are_one_line_errors(bench, tmp_path):
    with pytest.raises(SystemExit, match="--data .*: no such folder"):
        bench.main(["--data", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="--coco .*: no such folder"):
        bench.main(["--data", str(make_mvtec(tmp_path / "a")), "--coco", str(tmp_path / "x")])
    recipe = ["--manifest", "m.yaml", "--texture-bases", "0"]
    with pytest.raises(SystemExit, match="--texture-bases change the built-in recipe"):
        bench.main(["--data", str(tmp_path / "a"), *recipe])
