"""The training loop end to end on CPU: learning, exact resume, DDP (gloo), predictor, CLI."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth.cli import main as cli
from synth.errors import ConfigError, SynthError
from synth.store import StoreReader
from synth.train.checkpoint import build_model, load_checkpoint
from synth.train.config import AugConfig, TrainConfig
from synth.train.data import StoreBatches, make_loader
from synth.train.loop import evaluate, launch, train
from synth.train.predictor import ModelPredictor

TINY = {"encoder": "resnet18", "decoder_channels": (32, 16, 16, 8, 8), "amp": False}


def _config(store: str, out: Path, **kw) -> TrainConfig:
    base = {"workers": 0, "progress": False, "log_every": 1, "lr": 1e-3, "schedule": "constant"}
    return TrainConfig(store=store, out=str(out), **{**TINY, **base, **kw})


def _losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


@pytest.fixture(scope="module")
def trained(toy_store, tmp_path_factory):
    """200 steps on the toy store, plus the same model's validation before any training."""
    out = tmp_path_factory.mktemp("run")
    cfg = _config(toy_store, out, size=64, batch_size=8, epochs=10, max_steps=200, val_fraction=0.2)
    torch.manual_seed(cfg.seed)
    from synth.model import MetaUAS

    untrained = MetaUAS(cfg.model_config())
    val = StoreBatches(toy_store, 16, ranges=[(256, 320)], shuffle=False)
    cpu = torch.device("cpu")
    before = evaluate(
        untrained,
        make_loader(val, workers=0, device=cpu),
        val,
        size=64,
        device=cpu,
        loss="bce",
        amp=False,
    )
    with pytest.warns(UserWarning, match="random weights"):
        result = train(cfg)
    return result, before, out


@pytest.mark.slow
def test_training_takes_pixel_auroc_well_above_chance(trained):
    result, before, out = trained
    assert result.step == 200
    assert before["pixel_auroc"] < 0.8 and before["pixel_ap"] < 0.3
    assert result.val["pixel_auroc"] > 0.88
    assert result.val["pixel_ap"] > 0.5
    assert json.loads((out / "result.json").read_text())["step"] == 200
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val/pixel_auroc" in r for r in records)
    assert all(r["samples_per_s"] > 0 for r in records if "loss" in r)


@pytest.mark.slow
def test_predictor_protocol_and_predict_cli(trained, toy_store, tmp_path):
    result, _, _ = trained
    pred = ModelPredictor.from_checkpoint(result.checkpoint, device="cpu")
    assert pred.size == (64, 64)
    data = StoreReader(toy_store).read_range(300, 304)
    prob = pred.predict(data["prompt"], data["query"])
    assert prob.dtype == np.float32 and prob.shape == (4, 64, 64)
    assert prob.min() >= 0 and prob.max() <= 1
    big = np.stack([cv2.resize(x, (80, 96)) for x in data["query"]])
    assert pred.predict(big, big).shape == (4, 96, 80)
    emb = pred.embed(data["query"])
    assert emb.dtype == np.float32 and emb.shape == (4, 512)

    folder_p, folder_q = tmp_path / "p", tmp_path / "q"
    folder_p.mkdir(), folder_q.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder_p / f"{i}.png"), data["prompt"][i][..., ::-1])
        cv2.imwrite(str(folder_q / f"{i}.png"), data["query"][i][..., ::-1])
    runner = CliRunner()
    one = runner.invoke(
        cli,
        [
            "predict",
            "--prompt",
            str(folder_p / "0.png"),
            "--query",
            str(folder_q / "0.png"),
            "-c",
            result.checkpoint,
            "-o",
            str(tmp_path / "heat.png"),
            "--device",
            "cpu",
        ],
    )
    assert one.exit_code == 0, one.output
    assert cv2.imread(str(tmp_path / "heat.png")).shape == (64, 64, 3)
    score = float(one.output.split("\t")[1])
    assert score == pytest.approx(
        float(pred.predict(data["prompt"][:1], data["query"][:1]).max()), abs=0.02
    )
    many = runner.invoke(
        cli,
        [
            "predict",
            "--prompt",
            str(folder_p),
            "--query",
            str(folder_q),
            "-c",
            result.checkpoint,
            "-o",
            str(tmp_path / "heat"),
            "--device",
            "cpu",
        ],
    )
    assert many.exit_code == 0, many.output
    assert len((tmp_path / "heat" / "scores.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize(("distance_levels", "ema"), [((), 0.0), ((1, 2), 0.9)])
def test_resume_reproduces_the_uninterrupted_run(small_store, tmp_path, distance_levels, ema):
    # 6 batches/epoch, 2 per step: the stop at step 2 is mid-epoch, the resume crosses epochs.
    common = {"size": 32, "batch_size": 8, "grad_accum": 2, "epochs": 3, "val_fraction": 0.36}
    common.update(distance_levels=distance_levels, ema=ema)
    aug = AugConfig(perspective=0.05)
    full_out, part_out = tmp_path / "full", tmp_path / "part"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = train(_config(small_store, full_out, aug=aug, max_steps=6, **common))
        train(_config(small_store, part_out, aug=aug, max_steps=2, **common))
        ckpt = load_checkpoint(part_out / "last.pt")
        assert ckpt["position"] == {"step": 2, "epoch": 0, "batch": 4}
        with pytest.raises(ConfigError, match="--resume"):
            train(_config(small_store, part_out, aug=aug, max_steps=6, **common))
        resumed = train(_config(small_store, part_out, aug=aug, max_steps=6, resume=True, **common))
    assert full.step == resumed.step == 6 and full.epoch == resumed.epoch == 2
    a, b = _losses(full_out), _losses(part_out)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-7), step
    pa, pb = load_checkpoint(full_out / "last.pt"), load_checkpoint(part_out / "last.pt")
    for key in ("model", "ema") if ema else ("model",):
        for k, v in pa[key].items():
            assert torch.allclose(v.float(), pb[key][k].float(), atol=1e-6), (key, k)
    assert ("ema" in pa) == bool(ema) and pa.get("ema_updates") == (6 if ema else None)
    assert resumed.val == pytest.approx(full.val, rel=1e-5)
    assert pa["model_config"]["distance_levels"] == list(distance_levels)
    assert ("prior_shift" in pa["model"]) == bool(distance_levels)


def test_checkpoints_ship_the_moving_average_of_the_weights(small_store, tmp_path):
    """With ``ema`` the average after step 2 is decay * w1 + (1 - decay) * w2 (the first
    update copies w1), across a resume; prediction and validation use the average."""
    common = {"size": 32, "batch_size": 8, "epochs": 3, "ema": 0.75, "val_store": small_store}
    out = tmp_path / "ema"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(small_store, out, max_steps=1, **common))
        w1 = load_checkpoint(out / "last.pt")["model"]
        result = train(_config(small_store, out, max_steps=2, resume=True, **common))
    ckpt = load_checkpoint(out / "last.pt")
    w2, avg = ckpt["model"], ckpt["ema"]
    assert ckpt["ema_updates"] == 2 and set(avg) == set(w2)
    moved = 0
    for k, v in avg.items():
        if not v.is_floating_point():
            continue
        assert torch.allclose(v, 0.75 * w1[k] + 0.25 * w2[k], atol=1e-6), k
        moved += not torch.equal(w1[k], w2[k])
    assert moved > 10  # the weights did change between the steps, so the check has teeth
    # the average never feeds back: without it the run reaches the same raw weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_config(small_store, tmp_path / "plain", max_steps=2, **{**common, "ema": 0.0}))
    plain = load_checkpoint(tmp_path / "plain" / "last.pt")
    assert "ema" not in plain
    for k, v in plain["model"].items():
        assert torch.equal(v, w2[k]), k
    predictor = ModelPredictor.from_checkpoint(str(out / "last.pt"), device="cpu")
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, avg[k]), k
    for k, v in build_model(ckpt, average=False).state_dict().items():
        assert torch.equal(v, w2[k]), k
    val = StoreBatches(small_store, 8, shuffle=False)
    cpu = torch.device("cpu")
    loader = make_loader(val, workers=0, device=cpu)
    shipped = evaluate(predictor.model, loader, val, size=32, device=cpu, loss="bce", amp=False)
    assert result.val == pytest.approx(shipped, rel=1e-5)
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(store="s", out="o", ema=1.0).validate()
    with pytest.raises(ConfigError, match="ema"):
        train(_config(small_store, out, max_steps=3, resume=True, **{**common, "ema": 0.5}))


def test_checkpoints_never_execute_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "synth-metauas/1", "model": Evil()}, bad)
    legacy = tmp_path / "evil.pkl"
    legacy.write_bytes(pickle.dumps({"format": "synth-metauas/1", "model": Evil()}, protocol=2))
    with pytest.raises(SynthError, match="not a loadable"):
        load_checkpoint(legacy)
    with pytest.raises(SynthError, match="not a loadable"):
        load_checkpoint(bad)
    with pytest.raises(SynthError):
        ModelPredictor.from_checkpoint(str(bad), device="cpu")
    assert not marker.exists()


def test_config_round_trip_and_validation(small_store, tmp_path):
    cfg = TrainConfig(
        store="s.zarr",
        out="o",
        aug=AugConfig(scale=(0.9, 1.1), swap_kinds=("blob",)),
        distance_levels=(1, 2, 3),
    )
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "lr_rate": 1})
    for bad in ({"loss": "l2"}, {"val_fraction": 1.5}, {"batch_size": 0}, {"align": "x"}):
        with pytest.raises(ConfigError):
            TrainConfig(store="s", out="o", **bad).validate()
    with pytest.raises(ConfigError, match="swap_kinds"):
        bad_kinds = AugConfig(swap_kinds=("nope",))
        train(_config(small_store, tmp_path / "o", size=32, batch_size=8, aug=bad_kinds))


def test_tensorboard_without_the_package_is_a_clear_error(small_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        train(_config(small_store, tmp_path / "tb", size=32, batch_size=8, tensorboard=True))


@pytest.mark.slow
def test_ddp_gloo_two_processes_run_one_epoch(small_store, tmp_path):
    cfg = _config(
        small_store,
        tmp_path / "ddp",
        size=32,
        batch_size=8,
        epochs=1,
        val_fraction=0.2,
        device="cpu",
    )
    result = launch(cfg, nproc=2)
    # 60 training samples over 2 ranks: 30 each, ceil(30 / 8) = 4 steps.
    assert result.step == 4 and result.epoch == 1
    assert 0.0 <= result.val["pixel_auroc"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["world"] == 2 and len(ckpt["rng"]["aug"]) == 2
    assert not torch.equal(ckpt["rng"]["aug"][0], ckpt["rng"]["aug"][1])


def test_train_cli_is_a_thin_wrapper(small_store, tmp_path):
    out = tmp_path / "cli"
    args = ["train", small_store, "--out", str(out), "--encoder", "resnet18", "--size", "32"]
    args += ["--decoder-channels", "32,16,16,8,8", "--batch-size", "8", "--max-steps", "2"]
    args += ["--workers", "0", "--no-progress", "--val-fraction", "0.2", "--swap-kinds", "blob"]
    args += ["--scale", "0.9,1.1", "--loss", "bce+dice", "--device", "cpu"]
    with pytest.warns(UserWarning, match="random weights"):
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and "pixel_auroc" in result.output
    saved = TrainConfig.load(out / "config.json")
    assert saved.aug.scale == (0.9, 1.1) and saved.aug.swap_kinds == ("blob",)
    assert saved.loss == "bce+dice" and saved.max_steps == 2
    bad = CliRunner().invoke(cli, [*args[:3], str(tmp_path / "other"), "--val-fraction", "1.5"])
    assert bad.exit_code == 2 and "val_fraction" in bad.output


def test_progress_bar_spans_the_whole_budget_not_one_epoch(small_store, tmp_path, capsys):
    # 75 samples in batches of 8: 10 steps per epoch, so 14 steps cross an epoch and the bar
    # must count to 14 (its ETA is the run's), resuming from where it stopped.
    cfg = _config(small_store, tmp_path / "bar", size=32, batch_size=8, epochs=5, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(dataclasses.replace(cfg, max_steps=4))
        first = capsys.readouterr().err
        train(dataclasses.replace(cfg, max_steps=14, resume=True))
    resumed = capsys.readouterr().err
    assert "4/4" in first and "/14" not in first
    assert "4/14" in resumed and "14/14" in resumed and "train, epoch 1:" in resumed
