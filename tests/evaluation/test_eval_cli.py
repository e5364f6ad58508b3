"""``synth eval`` through click's CliRunner with the fake predictor patched in."""

from __future__ import annotations

import json

from click.testing import CliRunner

from synth.cli import main
from synth.evaluation import predictor as predictor_mod


def _patch(monkeypatch, fake):
    seen = {}

    def load(checkpoint, device="auto", size=None):
        seen.update(checkpoint=checkpoint, device=device, size=size)
        return fake

    monkeypatch.setattr(predictor_mod, "load_predictor", load)
    return seen


def test_eval_prints_table_and_writes_files(monkeypatch, fake_predictor, mvtec_tree, tmp_path):
    seen = _patch(monkeypatch, fake_predictor)
    out, maps = tmp_path / "out", tmp_path / "maps"
    args = [
        "eval",
        "--checkpoint",
        "model.ckpt",
        "--data",
        str(mvtec_tree),
        "--dataset",
        "mvtec",
        "--prompt-seed",
        "1,3",
        "--convention",
        "paper",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--save-maps",
        str(maps),
        "--categories",
        "cable",
        "--no-progress",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert seen == {"checkpoint": "model.ckpt", "device": "cpu", "size": None}
    assert "convention: paper (MetaUAS code)" in r.stdout
    assert "| category | I-ROC | I-PR | I-F1max | P-ROC | P-PR | P-F1max | P-PRO |" in r.stdout
    assert "| cable |" in r.stdout and "| **mean** |" in r.stdout and "bottle" not in r.stdout
    doc = json.loads((out / "eval.json").read_text())
    assert doc["config"]["checkpoint"] == "model.ckpt" and doc["runs"] == ["seed 1", "seed 3"]
    assert (out / "eval_summary.csv").is_file() and (out / "eval_images.csv").is_file()
    assert len(list(maps.glob("cable_*.png"))) == 6


def test_eval_errors_are_one_line(monkeypatch, fake_predictor, tmp_path):
    _patch(monkeypatch, fake_predictor)
    r = CliRunner().invoke(
        main,
        [
            "eval",
            "--checkpoint",
            "m",
            "--data",
            str(tmp_path / "none"),
            "--dataset",
            "visa",
            "--no-progress",
        ],
    )
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "not a directory" in r.stderr
    r = CliRunner().invoke(
        main, ["eval", "--checkpoint", "m", "--data", str(tmp_path), "--size", "huge"]
    )
    assert r.exit_code == 2 and "--size" in r.stderr


def test_eval_nearest_on_folder_layout(monkeypatch, fake_predictor, folder_tree):
    _patch(monkeypatch, fake_predictor)
    r = CliRunner().invoke(
        main,
        [
            "eval",
            "--checkpoint",
            "m",
            "--data",
            str(folder_tree),
            "--dataset",
            "folder",
            "--prompt-select",
            "nearest",
            "--image-score",
            "topk",
            "--size",
            "40x48",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "prompts: nearest — nearest (1 run)" in r.stdout
    assert "evaluated at 40x48 (model input 32x32)" in r.stdout


def test_eval_baseline_feature_distance_runs_the_protocol(mvtec_tree, tmp_path):
    """The training-free floor goes through the same protocol, metrics and table."""
    out = tmp_path / "out"
    args = ["eval", "--baseline", "feature-distance", "--encoder", "tf_efficientnet_lite0"]
    args += ["--data", str(mvtec_tree), "--size", "64", "--prompt-seed", "1,2,3"]
    args += ["--device", "cpu", "--no-progress", "--out", str(out), "--levels", "2,3"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "| **mean** |" in r.stdout and "(model input 64x64)" in r.stdout
    doc = json.loads((out / "eval.json").read_text())
    assert doc["config"]["baseline"] == "feature-distance" and doc["config"]["levels"] == [2, 3]
    # the fixture's defects are bright squares on smooth backgrounds: the floor finds them
    assert doc["summary"]["mean"]["P-ROC"]["mean"] > 0.8


def test_eval_needs_exactly_one_of_checkpoint_and_baseline(mvtec_tree):
    for extra in ([], ["--checkpoint", "m", "--baseline", "feature-distance"]):
        r = CliRunner().invoke(main, ["eval", "--data", str(mvtec_tree), *extra])
        assert r.exit_code == 2 and "give --checkpoint or --baseline" in r.stderr
    r = CliRunner().invoke(
        main,
        ["eval", "--baseline", "feature-distance", "--encoder", "resnet18"]
        + ["--data", str(mvtec_tree), "--size", "64"],
    )
    assert r.exit_code == 2 and "no pretrained weights for resnet18" in r.stderr
    r = CliRunner().invoke(
        main,
        ["eval", "--baseline", "feature-distance", "--select-encoder", "tf_efficientnet_lite0"]
        + ["--data", str(mvtec_tree), "--size", "64"],
    )
    assert r.exit_code == 2 and "--prompt-select nearest" in r.stderr


def test_nearest_prompts_with_another_encoder(monkeypatch, fake_predictor, mvtec_tree, tmp_path):
    _patch(monkeypatch, fake_predictor)
    out = tmp_path / "out"
    args = ["eval", "--checkpoint", "m", "--data", str(mvtec_tree), "--prompt-select", "nearest"]
    args += ["--select-encoder", "tf_efficientnet_lite0", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(main, [*args, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "eval.json").read_text())
    assert doc["config"]["select_encoder"] == "tf_efficientnet_lite0"
    # the fixture's training images differ by brightness: the pretrained encoder's nearest
    # prompt is a training image of the query's own category
    import csv

    with open(out / "eval_images.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(f"/{row['category']}/train/" in row["prompt"] for row in rows)
