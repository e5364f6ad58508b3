"""The frozen timm backbone shared by prompt and query (MetaUAS keeps it fixed).

Weights come from one of three places, chosen explicitly: timm's own download (``pretrained``),
a local file loaded through timm's loader with ``weights_only`` semantics (``weights_path``), or
random init (tests, demos, or a model whose weights arrive with a synth checkpoint).
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
        kwargs: dict = {"features_only": True}
        if weights_path:
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)})
        else:
            kwargs["pretrained"] = pretrained
        try:
            self.body = timm.create_model(name, **kwargs)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise ConfigError(f"encoder {name!r}: not a timm model name") from e
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise SynthError(
                f"encoder {name!r}: cannot load its weights ({first}); is the file for this model?"
            ) from e
        except (OSError, ValueError) as e:
            where = weights_path or "the Hugging Face hub"
            raise SynthError(
                f"encoder {name!r}: cannot load pretrained weights from {where} "
                f"({e.__class__.__name__}: {e}); offline, download them elsewhere and pass "
                "--encoder-weights PATH"
            ) from e
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
