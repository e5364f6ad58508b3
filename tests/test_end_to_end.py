"""The whole product in one go: build a store, train on it, predict and evaluate with it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth.cli import main
from tests.conftest import write_manifest
from tests.evaluation.conftest import make_mvtec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny MetaUAS trained for a few steps on a store that `synth build` made."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("e2e")
    man = write_manifest(d / "m.yaml", n=32, shard_size=8)
    r = CliRunner().invoke(
        main, ["build", str(man), "-o", str(d / "s.zarr"), "--workers", "1", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    args = ["train", str(d / "s.zarr"), "--out", str(d / "run"), "--encoder", "resnet18"]
    args += ["--size", "64", "--decoder-channels", "32,16,16,8,8", "--batch-size", "8"]
    args += ["--max-steps", "3", "--workers", "0", "--no-progress", "--val-fraction", "0.25"]
    args += ["--device", "cpu"]
    with pytest.warns(UserWarning, match="random weights"):
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    ckpt = d / "run" / "last.pt"
    assert ckpt.is_file()
    return ckpt


def test_predict_one_pair(checkpoint, tmp_path):
    from skimage import data

    img = cv2.resize(data.astronaut(), (80, 64))
    q = img.copy()
    q[20:40, 30:50] = 255
    cv2.imwrite(str(tmp_path / "p.png"), img[..., ::-1])
    cv2.imwrite(str(tmp_path / "q.png"), q[..., ::-1])
    r = CliRunner().invoke(
        main,
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--prompt",
            str(tmp_path / "p.png"),
            "--query",
            str(tmp_path / "q.png"),
            "-o",
            str(tmp_path / "heat.png"),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    heat = cv2.imread(str(tmp_path / "heat.png"))
    assert heat is not None and heat.shape[:2] == (64, 80)
    name, score, path = r.output.strip().split("\t")
    assert name.endswith("q.png") and path.endswith("heat.png") and 0.0 <= float(score) <= 1.0


def test_eval_with_a_trained_checkpoint(checkpoint, tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(root),
            "--dataset",
            "mvtec",
            "--prompt-seed",
            "1,3",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
            "--save-maps",
            str(tmp_path / "maps"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "| **mean** |" in r.output and "convention: standard" in r.output
    result = json.loads((out / "eval.json").read_text())
    assert result
    metrics = [v for v in _numbers(result)]
    assert metrics and all(0.0 <= v <= 100.0 for v in metrics if not np.isnan(v))
    assert any((tmp_path / "maps").rglob("*.png"))


def _numbers(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            metric = k in ("I-ROC", "I-PR", "I-F1max", "P-ROC", "P-PR", "P-F1max", "P-PRO")
            if metric and isinstance(v, (int, float)):
                yield float(v)
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_predictor_runs_at_another_input_size(checkpoint):
    from synth.errors import SynthError
    from synth.train.predictor import ModelPredictor

    p = ModelPredictor.from_checkpoint(str(checkpoint), "cpu", size=(96, 128))
    assert p.size == (96, 128)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    maps = p.predict(imgs, imgs[::-1].copy())
    assert maps.shape == (2, 40, 50) and maps.dtype == np.float32
    with pytest.raises(SynthError, match="multiples of 32"):
        ModelPredictor.from_checkpoint(str(checkpoint), "cpu", size=(50, 50))
