"""``synth predict``'s raw score maps: the .npy is the map behind the heat map, the 16-bit PNG
inverts with its recorded offset/scale, and the CLI wires ``--raw`` (tiny random models, CPU)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth.cli import main as cli
from synth.errors import SynthError
from synth.train.predict import (
    PNG16_MAX,
    RAW_FORMATS,
    Prediction,
    decode_png16,
    heatmap_image,
    predict_files,
)
from synth.train.predictor import ModelPredictor

TINY = {"encoder": "resnet18", "size": 64, "decoder_channels": (32, 16, 16, 8, 8)}
QUERY_HW = (48, 72)  # not the model's 64x64: maps come back at query size


def _images(rng: np.random.Generator, hw=QUERY_HW) -> tuple[np.ndarray, np.ndarray]:
    """A smooth RGB prompt and the same image with a bright square: a query with a defect."""
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    prompt = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    query = prompt.copy()
    query[hw[0] // 4 : hw[0] // 2, hw[1] // 4 : hw[1] // 2] = 255
    return prompt, query


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    return path


@pytest.fixture(scope="module")
def model() -> ModelPredictor:
    """A random-init MetaUAS: its sigmoid outputs are probabilities."""
    from synth.model import MetaUAS, ModelConfig

    torch.manual_seed(0)
    net = MetaUAS(ModelConfig(**TINY))  # encoder_weights "random": no download, no warning
    return ModelPredictor(net, "cpu")


@pytest.fixture(scope="module")
def floor() -> ModelPredictor:
    """The feature-distance floor on a random encoder: scores, not probabilities."""
    return ModelPredictor.feature_distance("resnet18", "random", 64, device="cpu")


class _Scores:
    """A predictor whose maps are far outside [0, 1] (as logits or distances can be)."""

    def predict(self, prompts: np.ndarray, queries: np.ndarray) -> np.ndarray:
        h, w = queries.shape[1:3]
        ramp = np.linspace(-3.0, 5.0, h * w, dtype=np.float32).reshape(1, h, w)
        return np.repeat(ramp, len(queries), axis=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("pair")
    prompt, query = _images(np.random.default_rng(0))
    return _write(d / "p.png", prompt), _write(d / "q.png", query), prompt, query


def test_npy_is_the_map_the_heat_map_shows(model, pair, tmp_path):
    p_path, q_path, prompt, query = pair
    (r,) = predict_files(model, str(p_path), str(q_path), str(tmp_path / "heat.png"))
    assert r.raw == str(tmp_path / "heat.raw.npy")
    assert (r.raw_offset, r.raw_scale) == (None, None)
    raw = np.load(r.raw)
    assert raw.dtype == np.float32 and raw.shape == QUERY_HW
    np.testing.assert_array_equal(raw, model.predict(prompt[None], query[None])[0])
    assert raw.min() >= 0.0 and raw.max() <= 1.0  # sigmoid probabilities
    assert r.score == float(raw.max())
    written = cv2.imread(r.heatmap, cv2.IMREAD_UNCHANGED)
    assert written.tobytes() == heatmap_image(raw).tobytes()


def test_png16_of_probabilities_inverts_with_scale_one(model, pair, tmp_path):
    p_path, q_path, prompt, query = pair
    (r,) = predict_files(model, str(p_path), str(q_path), str(tmp_path / "h.png"), raw="png16")
    assert r.raw == str(tmp_path / "h.raw.png") and (r.raw_offset, r.raw_scale) == (0.0, 1.0)
    side = json.loads((tmp_path / "h.raw.json").read_text())
    assert side["offset"] == 0.0 and side["scale"] == 1.0 and side["probability"] is True
    assert side["decode"] == "score = offset + value / 65535 * scale"
    values = cv2.imread(r.raw, cv2.IMREAD_UNCHANGED)
    assert values.dtype == np.uint16 and values.shape == QUERY_HW
    want = model.predict(prompt[None], query[None])[0]
    np.testing.assert_array_equal(values, np.rint(want.astype(np.float64) * PNG16_MAX))
    got = side["offset"] + values / 65535 * side["scale"]
    assert np.abs(got - want).max() <= 1 / 65535


def test_png16_of_distances_records_their_range(floor, pair, tmp_path):
    p_path, q_path, prompt, query = pair
    (r,) = predict_files(floor, str(p_path), str(q_path), str(tmp_path / "h.png"), raw="png16")
    want = floor.predict(prompt[None], query[None])[0]
    assert r.raw_offset == float(want.min())
    assert r.raw_scale == pytest.approx(float(want.max() - want.min()), rel=1e-6)
    side = json.loads((tmp_path / "h.raw.json").read_text())
    assert side["probability"] is False and side["shape"] == list(QUERY_HW)
    assert (side["offset"], side["scale"]) == (r.raw_offset, r.raw_scale)
    values = cv2.imread(r.raw, cv2.IMREAD_UNCHANGED)
    assert values.min() == 0 and values.max() == PNG16_MAX  # the range uses all 16 bits
    got = decode_png16(values, side["offset"], side["scale"])
    assert np.abs(got - want).max() <= side["scale"] / 65535


def test_raw_maps_are_not_clipped_like_the_heat_map(pair, tmp_path):
    p_path, q_path, _, _ = pair
    (r,) = predict_files(_Scores(), str(p_path), str(q_path), str(tmp_path / "n.png"))
    raw = np.load(r.raw)
    assert raw.min() == -3.0 and raw.max() == 5.0 and r.score == 5.0
    written = cv2.imread(r.heatmap, cv2.IMREAD_UNCHANGED)
    assert written.tobytes() == heatmap_image(raw).tobytes()
    (r16,) = predict_files(
        _Scores(), str(p_path), str(q_path), str(tmp_path / "s.png"), raw="png16"
    )
    assert (r16.raw_offset, r16.raw_scale) == (-3.0, 8.0)
    got = decode_png16(cv2.imread(r16.raw, cv2.IMREAD_UNCHANGED), r16.raw_offset, r16.raw_scale)
    assert np.abs(got - raw).max() <= 8.0 / 65535


def test_folders_list_raw_maps_in_scores_csv(model, tmp_path):
    rng = np.random.default_rng(1)
    for name, hw in (("a.png", (32, 40)), ("b.jpg", (40, 32))):
        prompt, query = _images(rng, hw)
        _write(tmp_path / "p" / name, prompt)
        _write(tmp_path / "q" / name, query)
    out = tmp_path / "out"
    results = predict_files(model, str(tmp_path / "p"), str(tmp_path / "q"), str(out), raw="png16")
    assert [Path(r.raw).name for r in results] == ["a.raw.png", "b.raw.png"]
    assert [cv2.imread(r.raw, cv2.IMREAD_UNCHANGED).shape for r in results] == [(32, 40), (40, 32)]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert list(rows[0]) == [
        "prompt",
        "query",
        "heatmap",
        "score",
        "raw",
        "raw_offset",
        "raw_scale",
    ]
    assert [(row["raw"], float(row["raw_offset"]), float(row["raw_scale"])) for row in rows] == [
        (r.raw, r.raw_offset, r.raw_scale) for r in results
    ]
    assert (out / "a.raw.json").is_file() and (out / "b.raw.json").is_file()

    none = predict_files(
        model, str(tmp_path / "p"), str(tmp_path / "q"), str(tmp_path / "o2"), raw="none"
    )
    assert all(r.raw is None for r in none)
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a.png", "b.png", "scores.csv"]
    assert all(row["raw"] == "" for row in csv.DictReader((tmp_path / "o2" / "scores.csv").open()))


def test_bad_raw_and_clashing_outputs_are_one_line_errors(model, tmp_path):
    prompt, query = _images(np.random.default_rng(2), (32, 32))
    for name in ("x.png", "x.jpg"):  # both would write x.png and x.raw.npy
        _write(tmp_path / "p" / name, prompt)
        _write(tmp_path / "q" / name, query)
    with pytest.raises(SynthError, match="two query images would write this file"):
        predict_files(model, str(tmp_path / "p"), str(tmp_path / "q"), str(tmp_path / "o"))
    with pytest.raises(SynthError, match="use one of npy, png16, none"):
        predict_files(
            model, str(tmp_path / "p"), str(tmp_path / "q"), str(tmp_path / "o"), raw="tif"
        )
    assert Prediction("p", "q", "h", 0.5).raw is None


def _predict_cli(pair, out: Path, *extra: str):
    p_path, q_path, _, _ = pair
    args = ["predict", "--prompt", str(p_path), "--query", str(q_path), "-o", str(out)]
    args += ["--baseline", "feature-distance", "--encoder", "resnet18"]
    args += ["--encoder-weights", "random", "--size", "64", "--device", "cpu", *extra]
    torch.manual_seed(0)  # the same random encoder in every call
    return CliRunner().invoke(cli, args)


def test_cli_raw_option(pair, tmp_path):
    default = _predict_cli(pair, tmp_path / "d.png")
    assert default.exit_code == 0, default.output
    assert np.load(tmp_path / "d.raw.npy").shape == QUERY_HW
    assert default.output.strip().split("\t")[2] == str(tmp_path / "d.png")

    png16 = _predict_cli(pair, tmp_path / "s.png", "--raw", "png16")
    assert png16.exit_code == 0, png16.output
    side = json.loads((tmp_path / "s.raw.json").read_text())
    values = cv2.imread(str(tmp_path / "s.raw.png"), cv2.IMREAD_UNCHANGED)
    got = decode_png16(values, side["offset"], side["scale"])
    assert np.abs(got - np.load(tmp_path / "d.raw.npy")).max() <= side["scale"] / 65535

    none = _predict_cli(pair, tmp_path / "n.png", "--raw", "none")
    assert none.exit_code == 0 and not list(tmp_path.glob("n.raw.*"))

    bad = CliRunner().invoke(
        cli, ["predict", "--prompt", "a", "--query", "b", "-o", "c", "--raw", "f32"]
    )
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    errors = [ln for ln in bad.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "--raw" in errors[0] and "'f32' is not one of" in errors[0]
    choices = next(p for p in cli.commands["predict"].params if p.name == "raw").type.choices
    assert tuple(choices) == RAW_FORMATS
