"""The training-free floor: how far each query feature is from its best match in the prompt.

A frozen ImageNet encoder already knows what looks alike. For each query position and each of a
few feature levels, take 1 minus the highest cosine similarity to *any* prompt position (so a
shifted or rotated prompt costs nothing), upsample the map to the input size, and average the
levels. No parameter is learned, so a trained MetaUAS that cannot beat this on real defects has
learned nothing that the encoder did not already give it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from synth.errors import ConfigError
from synth.model.encoder import FrozenEncoder

#: Encoder levels (0 = shallowest, stride 2) averaged by default: strides 4, 8, 16 and 32,
#: every level but the stride-2 edges (``docs/evaluation.md`` compares the choices).
DEFAULT_LEVELS = (1, 2, 3, 4)
#: Similarity entries computed at once (bounds memory at large sizes and shallow levels).
_CHUNK_ELEMENTS = 1 << 23


def nearest_cosine_distance(query: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """1 - max cosine similarity of each query position to any prompt position.

    Args:
        query: (B, C, h, w) features.
        prompt: (B, C, h', w') features of the same images' prompts.

    Returns:
        (B, 1, h, w) distances in [0, 2].
    """
    B, _, h, w = query.shape
    q = F.normalize(query.float().flatten(2), dim=1).transpose(1, 2)  # (B, Nq, C)
    p = F.normalize(prompt.float().flatten(2), dim=1)  # (B, C, Np)
    rows = max(1, _CHUNK_ELEMENTS // max(1, p.shape[-1]))
    best = torch.cat(
        [
            torch.stack([(q[b, s : s + rows] @ p[b]).amax(dim=1) for b in range(B)])
            for s in range(0, q.shape[1], rows)
        ],
        dim=1,
    )
    return (1.0 - best).view(B, 1, h, w)


def check_levels(levels: Sequence[int], n: int) -> tuple[int, ...]:
    """``levels`` as distinct ints in 0..n-1, or a one-line error saying what fits."""
    levels = tuple(int(v) for v in levels)
    if not levels or len(set(levels)) != len(levels) or not all(0 <= v < n for v in levels):
        raise ConfigError(
            f"feature-distance levels {list(levels)}: use distinct levels in 0..{n - 1} "
            f"(the encoder has {n}), e.g. 1,2,3"
        )
    return levels


def level_distances(
    features: Sequence[torch.Tensor], batch: int, levels: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Per level, the nearest-prompt cosine distance (B, 1, h, w) of a joint encoder pass whose
    first ``batch`` rows are prompts and the rest queries.

    Computed in float32 also under autocast: near 1, bf16 cosines come in steps of 0.004, so
    1 - cosine would lose the small distances that separate a subtle defect from a normal
    (a small distance cast to bf16 afterwards keeps its relative precision)."""
    with torch.autocast(features[0].device.type, enabled=False):
        return {
            i: nearest_cosine_distance(features[i][batch:], features[i][:batch]) for i in levels
        }


def mean_upsampled(maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The maps, bilinearly upsampled to ``size``, averaged: the floor's score."""
    out = torch.zeros(maps[0].shape[0], 1, *size, device=maps[0].device)
    for d in maps:
        out += F.interpolate(d.float(), size=size, mode="bilinear", align_corners=False)
    return out / len(maps)


class FeatureDistance(nn.Module):
    """Anomaly scores (B, 1, H, W) of a query against its prompt, with nothing learned.

    Args:
        encoder: the frozen encoder (the same one a trained model would use).
        size: the square input size it runs at (the protocol resizes images to it).
        levels: encoder levels averaged, 0 = shallowest.
    """

    #: The output is a score, not a logit: predictors must not apply a sigmoid.
    outputs_logits = False

    def __init__(self, encoder: FrozenEncoder, size: int, levels: Sequence[int] = DEFAULT_LEVELS):
        super().__init__()
        self.encoder = encoder
        self.size = int(size)
        self.levels = check_levels(levels, len(encoder.channels))

    @property
    def embed_dim(self) -> int:
        return self.encoder.channels[-1]

    def forward(self, prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Mean over ``levels`` of the upsampled nearest-prompt cosine distance."""
        B = query.shape[0]
        feats = self.encoder(torch.cat([prompt, query], dim=0))
        maps = level_distances(feats, B, self.levels)
        return mean_upsampled(list(maps.values()), tuple(query.shape[-2:]))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptor (B, D), as ``MetaUAS.embed``: the pooled deepest feature."""
        return self.encoder.embed(images)
