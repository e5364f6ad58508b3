"""Learned inpainters: TorchScript and ONNX models with LaMa's (image, mask) convention.

The models are tiny and exported by the tests themselves: ``ConstFill`` paints every pixel one
colour (ignoring the mask, so only the wrapper's compositing keeps the rest of the image) and
``MeanFill`` fills the hole with the mean colour of each image's unmasked pixels (so batched
and single calls must agree per image). Both assert the input contract inside the model.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from synth.edits import changed_pixels
from synth.edits import inpaint_torch as learned
from synth.edits.inpaint import INPAINTERS, create_inpainter
from synth.edits.inpaint_torch import OnnxInpainter, TorchScriptInpainter
from synth.errors import ConfigError
from synth.manifest import load_manifest, parse_manifest
from synth.sample import Catalog, realize

from .photos import ellipse, photo

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")

COLOUR = (40, 160, 220)


class ConstFill(torch.nn.Module):
    """Returns ``COLOUR`` everywhere; ``size`` > 0 also demands a fixed square input."""

    def __init__(self, size: int = 0) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("rgb", torch.tensor(COLOUR, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert image.dtype == torch.float32 and mask.dtype == torch.float32
        assert image.shape[1] == 3 and mask.shape[1] == 1
        assert image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0, "not padded to 8"
        assert self.size == 0 or (image.shape[2] == self.size and image.shape[3] == self.size)
        assert bool(image.min() >= 0) and bool(image.max() <= 1)
        assert bool(((mask == 0) | (mask == 1)).all())
        return (self.rgb / 255).expand(image.shape[0], 3, image.shape[2], image.shape[3])


class MeanFill(torch.nn.Module):
    """Fills the hole with the mean colour of the image's unmasked pixels (per image)."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0, "not padded to 8"
        keep = 1 - mask
        total = (image * keep).sum(dim=(2, 3), keepdim=True)
        mean = total / keep.sum(dim=(2, 3), keepdim=True).clamp(min=1)
        return image * keep + mean * mask


class WrongShape(torch.nn.Module):
    """Breaks the contract: returns one channel."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image[:, :1]


def export(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def export_onnx(path: Path) -> Path:
    """An ONNX ``ConstFill`` built node by node (no exporter needed): image * 0 + colour."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    colour = np.array(COLOUR, np.float32).reshape(1, 3, 1, 1) / 255
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["image", "zero"], ["blank"]),
            helper.make_node("Add", ["blank", "colour"], ["inpainted"]),
        ],
        "const_fill",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, "H", "W"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", 1, "H", "W"]),
        ],
        [helper.make_tensor_value_info("inpainted", TensorProto.FLOAT, ["B", 3, "H", "W"])],
        initializer=[
            numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
            numpy_helper.from_array(colour, "colour"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "const": export(ConstFill(), d / "const.pt"),
        "const64": export(ConstFill(64), d / "const64.pt"),
        "mean": export(MeanFill(), d / "mean.pt"),
        "wrong": export(WrongShape(), d / "wrong.pt"),
    }


def ts(path: Path, **kw: object) -> TorchScriptInpainter:
    return create_inpainter({"kind": "torchscript", "path": str(path), "device": "cpu", **kw})


def test_registered_and_torch_free_until_first_use(models):
    assert INPAINTERS["torchscript"] is TorchScriptInpainter
    assert INPAINTERS["onnx"] is OnnxInpainter
    code = (
        "import sys\n"
        "from synth.edits.inpaint import create_inpainter\n"
        f"create_inpainter({{'kind': 'torchscript', 'path': {str(models['const'])!r}}})\n"
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_disappearance_inpaint_through_sample(kind, models, tmp_path):
    model = tmp_path / ("model.pt" if kind == "torchscript" else "model.onnx")
    if kind == "torchscript":
        model.write_bytes(models["const"].read_bytes())
    else:
        export_onnx(model)
    doc = {
        "name": "learned",
        "seed": 11,
        "n": 8,
        "size": [50, 60],  # not multiples of 8: the padding path runs too
        "shard_size": 4,
        "sources": {"images": [{"name": "samples", "kind": "samples"}]},
        "mix": {"disappearance_inpaint": 1.0},
        "inpainter": {"kind": kind, "path": model.name, "device": "cpu", "batch_size": 4},
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    manifest = load_manifest(tmp_path / "m.yaml")
    assert manifest.inpainter["path"] == str(model)
    catalog = Catalog.open(manifest)
    filled = 0
    for i in range(3):
        spec, t, _, _ = realize(manifest, catalog, i)
        assert spec.kind == "disappearance_inpaint"
        mask = t.mask.astype(bool)
        np.testing.assert_array_equal(mask, changed_pixels(t.prompt, t.query))
        np.testing.assert_array_equal(t.prompt, catalog.load_image(spec.base, (50, 60)).image)
        assert (t.query[mask] == COLOUR).all()
        np.testing.assert_array_equal(t.query[~mask], t.prompt[~mask])
        assert t.info["inpainter"].startswith(
            f"{type(catalog.inpainter).__name__}(path='{model.name}'"
        )
        filled += int(mask.sum())
    assert filled > 0


def test_only_the_hole_changes_and_padding_is_cropped(models):
    img = photo("astronaut", 50, 70)
    before = img.copy()
    hole = ellipse(50, 70, 0.5, 0.4, 0.2, 0.25)
    out = ts(models["const"])(img, hole)
    np.testing.assert_array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], img[~hole])
    assert (out[hole] == COLOUR).all()
    np.testing.assert_array_equal(ts(models["const"])(img, np.zeros((50, 70), bool)), img)


def test_mean_fill_colour_matches_numpy(models):
    img = photo("coffee", 64, 64)
    hole = ellipse(64, 64, 0.5, 0.5, 0.25, 0.3)
    out = ts(models["mean"])(img, hole)
    want = img[~hole].astype(np.float64).mean(axis=0)
    got = out[hole].astype(np.float64)
    assert np.abs(got - want).max() <= 1.0
    assert len(np.unique(out[hole], axis=0)) == 1


def test_fixed_input_size_resizes_there_and_back(models):
    inp = ts(models["const64"], input_size=64)
    for h, w in ((50, 70), (100, 90)):
        img = photo("chelsea", h, w)
        hole = ellipse(h, w, 0.5, 0.5, 0.2, 0.2)
        out = inp(img, hole)
        np.testing.assert_array_equal(out[~hole], img[~hole])
        assert (out[hole] == COLOUR).all()


def test_batch_equals_single(models):
    inp = ts(models["mean"], batch_size=2)
    shapes = [(64, 64), (50, 70), (64, 64), (50, 70), (64, 64), (64, 64)]
    names = ["astronaut", "coffee", "chelsea", "rocket", "coffee", "rocket"]
    images = [photo(n, h, w) for n, (h, w) in zip(names, shapes, strict=True)]
    masks = [ellipse(h, w, 0.3 + 0.08 * k, 0.5, 0.2, 0.15) for k, (h, w) in enumerate(shapes)]
    masks[4] = np.zeros((64, 64), bool)
    single = [inp(i, m) for i, m in zip(images, masks, strict=True)]
    run, calls = inp._load(), []

    def spy(x: np.ndarray, m: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return run(x, m)

    inp._runner = spy
    batched = inp.inpaint_batch(images, masks)
    for a, b in zip(single, batched, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(batched[4], images[4])
    assert sorted(calls) == [(1, 64, 64, 3), (2, 56, 72, 3), (2, 64, 64, 3)]


def test_pickles_as_spec_and_reloads_once_per_process(models, monkeypatch):
    inp = ts(models["mean"])
    img, hole = photo("astronaut", 48, 48), ellipse(48, 48, 0.5, 0.5, 0.2, 0.2)
    want = inp(img, hole)
    blob = pickle.dumps(inp)
    assert len(blob) < 600
    monkeypatch.setattr(learned, "_RUNNERS", {})  # as in a fresh worker process
    copy = pickle.loads(blob)
    assert copy._runner is None and copy.spec() == inp.spec()
    np.testing.assert_array_equal(copy(img, hole), want)
    assert len(learned._RUNNERS) == 1
    assert pickle.loads(blob)._load() is copy._load()


def test_bad_files_name_the_path(models, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=r"inpainter\.path: .*nope\.pt.* not found"):
        ts(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"garbage\.pt.*not a TorchScript archive"):
        ts(garbage)
    ckpt = tmp_path / "big-lama.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    with pytest.raises(ConfigError, match=r"big-lama\.ckpt.*torch\.save checkpoint.*jit\.trace"):
        ts(ckpt)
    with pytest.raises(ConfigError, match=r"const\.pt.*not an ONNX model"):
        create_inpainter({"kind": "onnx", "path": str(models["const"])})
    doc = {
        "name": "x",
        "seed": 0,
        "n": 1,
        "size": [32, 32],
        "shard_size": 1,
        "sources": {"images": [{"name": "samples", "kind": "samples"}]},
        "mix": {"disappearance_inpaint": 1.0},
        "inpainter": {"kind": "torchscript", "path": "missing.pt"},
    }
    with pytest.raises(ConfigError, match=r"inpainter\.path.*missing\.pt"):
        parse_manifest(doc, base_dir=tmp_path)


def test_contract_violation_is_a_config_error(models):
    img, hole = photo("astronaut", 32, 32), ellipse(32, 32, 0.5, 0.5, 0.2, 0.2)
    with pytest.raises(ConfigError, match=r"wrong\.pt.*returned shape \[1, 1, 32, 32\]"):
        ts(models["wrong"])(img, hole)
    with pytest.raises(ConfigError, match=r"const64\.pt.*failed on input 1x3x32x32"):
        ts(models["const64"])(img, hole)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"device": "tpu"}, "inpainter.device"),
        ({"batch_size": 0}, "inpainter.batch_size"),
        ({"batch_size": True}, "inpainter.batch_size"),
        ({"input_size": 12}, "inpainter.input_size"),
        ({"input_size": [64]}, "inpainter.input_size"),
        ({"input_size": [64, 0]}, "inpainter.input_size"),
        ({"precision": "fp16"}, "bad arguments"),
    ],
)
def test_bad_arguments(models, spec, match):
    with pytest.raises(ConfigError, match=match):
        create_inpainter({"kind": "torchscript", "path": str(models["const"]), **spec})


def test_cuda_without_cuda_fails_at_first_use(models, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(learned, "_RUNNERS", {})
    inp = create_inpainter({"kind": "torchscript", "path": str(models["const"]), "device": "cuda"})
    img, hole = photo("astronaut", 32, 32), ellipse(32, 32, 0.5, 0.5, 0.2, 0.2)
    with pytest.raises(ConfigError, match=r"inpainter\.device: 'cuda' but CUDA is not available"):
        inp(img, hole)
    auto = create_inpainter({"kind": "torchscript", "path": str(models["const"]), "device": "auto"})
    assert (auto(img, hole)[hole] == COLOUR).all()


def test_onnx_cuda_without_provider_fails_at_first_use(tmp_path, monkeypatch):
    path = export_onnx(tmp_path / "model.onnx")
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    inp = create_inpainter({"kind": "onnx", "path": str(path), "device": "cuda"})
    img, hole = photo("astronaut", 32, 32), ellipse(32, 32, 0.5, 0.5, 0.2, 0.2)
    with pytest.raises(ConfigError, match=r"inpainter\.device: 'cuda'.*CUDAExecutionProvider"):
        inp(img, hole)
