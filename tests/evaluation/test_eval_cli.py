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
