"""MetaUAS: one-prompt anomaly segmentation as change segmentation (Gao, NeurIPS 2024)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from synth.errors import ConfigError
from synth.model.align import ALIGN_INITS, ALIGNMENTS, build_align
from synth.model.decoder import UNetDecoder
from synth.model.encoder import FrozenEncoder
from synth.model.feature_distance import check_levels, level_distances, mean_upsampled

#: Where the learnable affine on the distance prior starts (``MetaUAS.decode``). On synthetic
#: pairs the mean nearest-prompt distance of lite0 at 128 px has a median of 0.03 on unchanged
#: pixels (90th percentile 0.16) and 0.32 on changed ones, so the prior starts as a sensible
#: logit (about -2 and +1), not a saturated one.
_PRIOR_SCALE, _PRIOR_SHIFT = 10.0, 0.2
#: How query and prompt features reach the decoder (``ModelConfig.fusion``).
FUSIONS = ("concat", "difference")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored as plain data in every checkpoint.

    Attributes:
        encoder: timm model name of the frozen backbone.
        size: square input resolution the model is trained and run at.
        align: ``soft`` (released model), ``hard`` or ``none`` (ablations).
        align_levels: how many of the deepest feature levels are aligned and fused with the
            prompt; shallower levels pass query features only, as skips.
        decoder_channels: output channels of the decoder blocks, deepest first. When the
            encoder has fewer levels than entries, the first ones are used.
        align_init: how soft alignment starts (``synth.model.align.SoftAlign``): ``matching``
            (each query position attends to similar prompt features from step 0) or
            ``random`` (PyTorch's default init).
        distance_levels: encoder levels whose nearest-prompt cosine distance (the training-free
            floor, ``synth.model.feature_distance``) the model is given: as one more decoder
            input channel at each such level, and, averaged and upsampled, as a prior added to
            the logits through a learnable scale and shift. The decoder's head starts at zero,
            so the untrained model ranks pixels exactly as the floor does and training learns
            a correction to it. Empty: the paper's model.
        fusion: what the decoder sees of each level. ``concat`` (the paper): the query's
            features, next to the aligned prompt's where the level is aligned. ``difference``:
            only how the query differs from its prompt, the channelwise ``|q - a|`` of the
            unit-normalised query and aligned prompt features at aligned levels, and nothing of
            the query alone (a shallower level passes only its distance channel, or no skip).
            Raw query features let the decoder learn what *looks like* an edit in synthetic
            data (pasted boundaries, blended textures), a saliency prior that fires on normal
            parts of a real object; differences keep every learned cue a comparison.
    """

    encoder: str = "efficientnet_b4"
    size: int = 256
    align: str = "soft"
    align_levels: int = 3
    decoder_channels: tuple[int, ...] = field(default=(256, 128, 64, 64, 48))
    align_init: str = "matching"
    distance_levels: tuple[int, ...] = ()
    fusion: str = "concat"

    def __post_init__(self) -> None:
        if self.align not in ALIGNMENTS:
            raise ConfigError(f"align {self.align!r}: use one of {', '.join(ALIGNMENTS)}")
        if self.align_init not in ALIGN_INITS:
            raise ConfigError(
                f"align_init {self.align_init!r}: use one of {', '.join(ALIGN_INITS)}"
            )
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion {self.fusion!r}: use one of {', '.join(FUSIONS)}")
        if self.size < 32:
            raise ConfigError(f"size {self.size}: use at least 32 pixels")
        if self.align_levels < 1:
            raise ConfigError(f"align_levels {self.align_levels}: use at least 1")
        object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        object.__setattr__(self, "distance_levels", tuple(int(c) for c in self.distance_levels))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        d["distance_levels"] = list(self.distance_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model config: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


class MetaUAS(nn.Module):
    """Frozen encoder, alignment at the deepest levels, concatenation, UNet decoder, logit head.

    Args:
        config: the architecture.
        encoder_weights: the encoder's weights spec (``synth.model.weights``): ``random``
            (the default: a checkpoint brings its own), ``auto``, ``pypi``, ``hub`` or a path.
    """

    def __init__(self, config: ModelConfig, *, encoder_weights: str = "random"):
        super().__init__()
        self.encoder = FrozenEncoder(config.encoder, weights=encoder_weights)
        chans = self.encoder.channels
        n = len(chans)
        if len(config.decoder_channels) < n:
            raise ConfigError(
                f"decoder_channels {list(config.decoder_channels)}: encoder {config.encoder} has "
                f"{n} levels; give at least {n} values"
            )
        levels = min(config.align_levels, n)
        self.config = dataclasses.replace(
            config, decoder_channels=config.decoder_channels[:n], align_levels=levels
        )
        self.fused = list(range(n - levels, n))
        self.align = nn.ModuleDict(
            {str(i): build_align(config.align, chans[i], config.align_init) for i in self.fused}
        )
        self.distance_levels = (
            check_levels(config.distance_levels, n) if config.distance_levels else ()
        )
        fused_chans = [
            self._fused_channels(i, c) + (i in self.distance_levels) for i, c in enumerate(chans)
        ]
        self.decoder = UNetDecoder(fused_chans, list(self.config.decoder_channels))
        if self.distance_levels:
            nn.init.zeros_(self.decoder.head.weight)
            nn.init.zeros_(self.decoder.head.bias)
            self.prior_log_scale = nn.Parameter(torch.tensor(math.log(_PRIOR_SCALE)))
            self.prior_shift = nn.Parameter(torch.tensor(_PRIOR_SHIFT))

    def _fused_channels(self, level: int, channels: int) -> int:
        """Feature channels level ``level`` gives the decoder, before its distance channel."""
        if self.config.fusion == "difference":
            return channels if level in self.fused else 0
        return channels * (2 if level in self.fused else 1)

    @property
    def embed_dim(self) -> int:
        return self.encoder.channels[-1]

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Change logits (B, 1, H, W) of ``query`` against ``prompt``, both (B, 3, H, W) in [0, 1].

        Both images go through the encoder as one batch (one kernel launch per layer).
        """
        B = query.shape[0]
        feats = self.encoder(torch.cat([prompt, query], dim=0))
        distances = self.distances(feats, B)
        return self.decode(self.fuse(feats, B, distances), distances, tuple(query.shape[-2:]))

    def distances(self, features: list[torch.Tensor], batch: int) -> dict[int, torch.Tensor]:
        """The float32 nearest-prompt distance at each of ``distance_levels`` (none without)."""
        return level_distances(features, batch, self.distance_levels)

    def fuse(
        self, features: list[torch.Tensor], batch: int, distances: dict[int, torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per level, the query's features (the second ``batch`` rows), concatenated with the
        aligned prompt features (the first ``batch`` rows) where the level is aligned, and
        with the level's nearest-prompt distance where ``distances`` has one. With
        ``fusion="difference"`` the query and aligned prompt features are replaced by their
        normalised absolute difference, and a level with nothing to give has no channels
        (the decoder then upsamples past it without a skip)."""
        difference = self.config.fusion == "difference"
        fused: list[torch.Tensor] = []
        for i, f in enumerate(features):
            p, q = f[:batch], f[batch:]
            parts = [] if difference else [q]
            if str(i) in self.align:
                a = self.align[str(i)](q, p)
                if difference:
                    parts.append((F.normalize(q, dim=1) - F.normalize(a, dim=1)).abs())
                else:
                    parts.append(a)
            if i in distances:
                parts.append(distances[i].to(q.dtype))
            fused.append(torch.cat(parts, dim=1) if parts else q[:, :0])
        return fused

    def decode(
        self,
        fused: list[torch.Tensor],
        distances: dict[int, torch.Tensor],
        size: tuple[int, int],
    ) -> torch.Tensor:
        """The decoder's logits at ``size``, plus the distance prior where the model has one."""
        logits = self.decoder(fused, size)
        if not distances:
            return logits
        prior = mean_upsampled(list(distances.values()), size)
        return logits + self.prior_log_scale.exp() * (prior - self.prior_shift)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptor (B, D): the average-pooled deepest encoder feature."""
        return self.encoder.embed(images)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, learnable) parameter counts, as the paper reports them (22.1M / 4.6M)."""
    total = sum(p.numel() for p in model.parameters())
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, learnable
