"""The frozen timm backbone shared by prompt and query (MetaUAS keeps it fixed).

Weights come from one of three places, chosen explicitly: timm's own download (``pretrained``),
a local file (``weights_path``: a timm checkpoint of the same architecture, ``.pth``/``.bin``
read with ``weights_only`` or ``.safetensors``), or random init (tests, demos, or a model whose
weights arrive with a synth checkpoint). A local file must match exactly: timm's own loader
would quietly accept a related architecture's weights (e.g. resnet34's into resnet18).
"""

from __future__ import annotations

import torch
from torch import nn

from synth.errors import ConfigError, SynthError


class FrozenEncoder(nn.Module):
    """A timm ``features_only`` backbone that never trains.

    The encoder stays in eval mode even when its parent is put in train mode, so BatchNorm
    statistics keep their pretrained values, and it runs without autograd: no activations are
    kept for backward, which roughly halves training memory.

    Args:
        name: any timm model name that supports ``features_only``.
        pretrained: let timm fetch its default pretrained weights (needs network or a warm
            Hugging Face cache).
        weights_path: a local checkpoint (``.pth``/``.safetensors``) of the *full* timm model.
    """

    def __init__(self, name: str, *, pretrained: bool = False, weights_path: str | None = None):
        super().__init__()
        import timm

        if pretrained and weights_path:
            raise ConfigError("encoder: give either --pretrained or --encoder-weights, not both")
        try:
            self.body = timm.create_model(name, features_only=True, pretrained=pretrained)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise ConfigError(f"encoder {name!r}: not a timm model name") from e
            raise
        except (OSError, ValueError) as e:
            raise SynthError(
                f"encoder {name!r}: cannot fetch pretrained weights from the Hugging Face hub "
                f"({e.__class__.__name__}: {e}); offline, download them elsewhere and pass "
                "--encoder-weights PATH"
            ) from e
        if weights_path:
            _load_weights_file(self.body, name, str(weights_path))
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.body.eval()
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())
        cfg = getattr(self.body, "pretrained_cfg", {}) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Ignore ``mode``: a frozen encoder keeps its BatchNorm statistics."""
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features (shallow to deep) of ``images``: float RGB in [0, 1], (B, 3, H, W)."""
        with torch.no_grad():
            return self.body((images - self.mean) / self.std)


def _load_weights_file(body: nn.Module, name: str, path: str) -> None:
    """Load a full-model timm checkpoint into the ``features_only`` ``body``, exactly."""
    import timm
    from timm.models import load_state_dict

    try:
        state = load_state_dict(path, weights_only=True)
    except FileNotFoundError:
        raise SynthError(f"--encoder-weights {path}: no such file") from None
    except Exception as e:  # unpickling or format errors of a foreign file
        raise SynthError(f"--encoder-weights {path}: not a loadable weights file ({e})") from e
    with torch.device("meta"):
        architecture = set(timm.create_model(name, pretrained=False).state_dict())
    needed = set(body.state_dict())
    foreign = sorted(set(state) - architecture)
    missing = sorted(needed - set(state))
    if foreign or missing:
        what = f"{len(foreign)} unknown keys (e.g. {foreign[0]})" if foreign else ""
        what += (", " if foreign and missing else "") + (
            f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else ""
        )
        raise SynthError(
            f"--encoder-weights {path}: not a checkpoint of timm's {name} ({what}); use that "
            "model's own weights file"
        )
    try:
        body.load_state_dict({k: state[k] for k in needed})
    except RuntimeError as e:
        raise SynthError(
            f"--encoder-weights {path}: shapes differ from timm's {name} "
            f"({str(e).strip().splitlines()[-1]})"
        ) from e
