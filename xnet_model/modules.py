"""The building blocks of xNet's section 3: Re-Shape (RS), Post Feature Pyramid (PFP), heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize to `size` when the shapes differ (odd input sizes, stride-14 ViTs)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def upscale_factor(src_stride: float, dst_stride: float) -> int:
    """Integer PixelShuffle factor from stride `src_stride` to `dst_stride` (never below 1).

    Non-integer ratios (a stride-14 ViT into a stride-4 stem) round up; the exact size is then
    reached by `resize_to`.
    """
    return max(1, math.ceil(src_stride / dst_stride - 1e-6))


class RS(nn.Module):
    """Re-Shape: LayerNorm over channels -> 2-layer MLP (GELU) -> PixelShuffle(r).

    Maps (N, C_in, h, w) to (N, C_out, r*h, r*w); with `size`, the result is resized to exactly
    that spatial size.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int, hidden_ratio: float = 1.0):
        super().__init__()
        hidden = max(1, round(hidden_ratio * max(in_channels, out_channels)))
        self.scale = scale
        self.norm = nn.LayerNorm(in_channels)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_channels * scale * scale)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # channels-last for LayerNorm and Linear
        x = self.fc2(self.act(self.fc1(self.norm(x))))
        x = self.shuffle(x.permute(0, 3, 1, 2))
        return x if size is None else resize_to(x, size)


class PFP(nn.Module):
    """Post Feature Pyramid: RS each stage output to 1/`scale`, concat, fuse to full res."""

    def __init__(self, stage_channels: list[int], stage_strides: list[int], channels: int,
                 out_channels: int, scale: int = 4, hidden_ratio: float = 1.0):
        super().__init__()
        self.scale = scale
        self.reshape = nn.ModuleList(
            RS(c, channels, upscale_factor(s, scale), hidden_ratio)
            for c, s in zip(stage_channels, stage_strides)
        )
        self.fuse = RS(channels * len(stage_channels), out_channels, scale, hidden_ratio)

    def forward(self, stages: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        common = (math.ceil(size[0] / self.scale), math.ceil(size[1] / self.scale))
        x = torch.cat([rs(f, common) for rs, f in zip(self.reshape, stages)], dim=1)
        return self.fuse(x, size)


class DenseHeads(nn.Module):
    """Linear-probe heads: a 1x1 conv per task. Depth = sigmoid * max_depth (metres)."""

    def __init__(self, in_channels: int, max_depth: float | None, num_classes: int | None):
        super().__init__()
        self.max_depth = max_depth
        self.depth = nn.Conv2d(in_channels, 1, 1) if max_depth is not None else None
        self.semantic = nn.Conv2d(in_channels, num_classes, 1) if num_classes else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.depth is not None:
            out["depth"] = torch.sigmoid(self.depth(x)) * self.max_depth
        if self.semantic is not None:
            out["semantic"] = self.semantic(x)
        return out


class LateralLinks(nn.Module):
    """Encoder -> decoder feature-pyramid connections (eq. 2): F_i + proj(E at the same stride).

    Each target (a decoder feature map) takes the encoder feature whose stride is closest.
    """

    def __init__(self, enc_channels: list[int], enc_strides: list[int],
                 dst_channels: list[int], dst_strides: list[int]):
        super().__init__()
        self.sources = [
            min(range(len(enc_strides)), key=lambda j, s=s: abs(math.log(enc_strides[j] / s)))
            for s in dst_strides
        ]
        self.proj = nn.ModuleList(
            nn.Conv2d(enc_channels[j], c, 1) for j, c in zip(self.sources, dst_channels)
        )

    def forward(self, i: int, x: torch.Tensor, enc: list[torch.Tensor]) -> torch.Tensor:
        return x + resize_to(self.proj[i](enc[self.sources[i]]), x.shape[-2:])
