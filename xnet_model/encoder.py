"""Encoder E: any timm backbone through `features_only`, channels and strides from feature_info."""

from __future__ import annotations

import torch
from torch import nn

from .config import EncoderConfig
from .weights import LoadReport, create_timm


class Encoder(nn.Module):
    """Multi-scale features, always NCHW (Swin's channels-last output is permuted)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        kwargs = dict(cfg.kwargs)
        if cfg.out_indices is not None:
            kwargs["out_indices"] = tuple(cfg.out_indices)
        if cfg.img_size is not None:
            kwargs["img_size"] = tuple(cfg.img_size)
        if cfg.drop_path_rate:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        self.body, self.load_report = create_timm(
            cfg.name, cfg.pretrained, features_only=True, **kwargs
        )
        info = self.body.feature_info
        self.channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(image)
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return feats

    @property
    def report(self) -> LoadReport | None:
        return self.load_report
