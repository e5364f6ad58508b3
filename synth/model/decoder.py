"""UNet-style decoder with scSE attention, as in the released MetaUAS (via smp's Unet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (Roy et al., 2018)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.cse = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cse(x) + x * self.sse(x)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DecoderBlock(nn.Module):
    """Upsample to the skip's size (or ``size``), concatenate the skip, two 3x3 convolutions."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.att_in = SCSE(cin + cskip) if cskip else nn.Identity()
        self.conv = nn.Sequential(_conv_bn_relu(cin + cskip, cout), _conv_bn_relu(cout, cout))
        self.att_out = SCSE(cout)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = self.att_in(torch.cat([x, skip], dim=1))
        return self.att_out(self.conv(x))


class UNetDecoder(nn.Module):
    """Decodes L feature maps (shallow to deep) into a 1-channel logit map at input size.

    Block i (deepest first) upsamples to the next shallower level and fuses it; the last block
    has no skip and upsamples to the input resolution, so the head predicts every pixel.

    Args:
        channels: channels of each fused encoder level, shallow to deep.
        decoder_channels: output channels of the L blocks, deepest first (len == L).
    """

    def __init__(self, channels: list[int], decoder_channels: list[int]):
        super().__init__()
        if len(decoder_channels) != len(channels):
            raise ValueError(f"{len(decoder_channels)} decoder channels for {len(channels)} levels")
        skips = [*reversed(channels[:-1]), 0]
        cin = [channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(cin, skips, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], 1, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        skips = [*reversed(features[:-1]), None]
        x = features[-1]
        for block, skip in zip(self.blocks, skips, strict=True):
            x = block(x, skip, tuple(skip.shape[-2:]) if skip is not None else size)
        return self.head(x)
