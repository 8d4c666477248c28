"""Decoder D: the pre-trained classifier reused in its original order, and the FPN baseline.

Both decoders have one call signature, `decoder(image, enc, rs_mix, lateral) -> stages`, so every
Table-1 row runs the same `XNet.forward`: `stages` are the feature maps in the order computed,
and `stages[-1]` (channels `out_channels`, stride `out_stride`) is the decoder's output. A
decoder uses what its design reads: the reversed decoder the image (mixed with RS(E) by
`rs_mix`, section 3.2) and the FP links; the FPN baseline the encoder features only.
"""

from __future__ import annotations

import torch
from timm.models.convnext import ConvNeXtBlock
from torch import nn

from .config import DecoderConfig
from .modules import resize_to
from .weights import create_timm


class ReversedDecoder(nn.Module):
    """A timm hierarchical classifier's stem and four stages, in their original downsampling
    order (eq. 1), so its ImageNet weights load unchanged. Its classifier head is dropped."""

    def __init__(self, cfg: DecoderConfig, mixing: str = "stem"):
        super().__init__()
        self.mixing = mixing  # stem (xNet), image (xNet-I) or none (section 3.2)
        kwargs = dict(cfg.kwargs)
        if cfg.drop_path_rate:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        # The head is dropped: built without its fc, any classifier (1000, 21841 or 10 classes)
        # loads, and its head.fc tensors are ignored like an encoder's.
        kwargs.setdefault("num_classes", 0)
        classifier, self.load_report = create_timm(cfg.name, cfg.pretrained, **kwargs)
        if not (hasattr(classifier, "stem") and hasattr(classifier, "stages")):
            raise ValueError(
                f"decoder {cfg.name!r} has no .stem and .stages: use a hierarchical timm "
                "classifier such as the ConvNeXt / ConvNeXtV2 family"
            )
        self.stem = classifier.stem
        self.stages = nn.ModuleList(classifier.stages)
        info = classifier.feature_info[-len(self.stages):]
        self.channels = [f["num_chs"] for f in info]  # stage output widths
        self.strides = [f["reduction"] for f in info]
        # The stem feeds stage 0, which keeps its resolution in the ConvNeXt family.
        self.stem_channels, self.stem_stride = self.channels[0], self.strides[0]
        self.out_channels, self.out_stride = self.channels[-1], self.strides[-1]

    def mix(self, e: torch.Tensor, image: torch.Tensor, rs_mix: nn.Module) -> torch.Tensor:
        """Section 3.2: mix the encoder's last feature map `e` into the image path."""
        if self.mixing == "stem":  # xNet: RS(E) * D.stem(I)
            s = self.stem(image)
            return rs_mix(e, s.shape[-2:]) * s
        if self.mixing == "image":  # xNet-I: D.stem(RS(E) * I)
            return self.stem(rs_mix(e, image.shape[-2:]) * image)
        return self.stem(rs_mix(e, image.shape[-2:]))  # no mixing: D.stem(RS(E))

    def forward(self, image: torch.Tensor, enc: list[torch.Tensor], rs_mix: nn.Module,
                lateral: nn.Module | None = None) -> list[torch.Tensor]:
        """Run the four stages on the mixed stem output; return every stage output.

        With `lateral` (FP ablation), stage i's output gets encoder features before stage i+1.
        """
        x = self.mix(enc[-1], image, rs_mix)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(x)
            if lateral is not None and i < len(self.stages) - 1:
                x = lateral(i, x, enc)
        return outs


class FPNDecoder(nn.Module):
    """Table-1 baseline: random-init top-down FPN, F = D_i(E_i + up(F)) (eq. 2), whose stages
    are ConvNeXt blocks with the classifier's widths and depths in reverse (coarse -> fine)."""

    def __init__(self, cfg: DecoderConfig, enc_channels: list[int], enc_strides: list[int]):
        super().__init__()
        with torch.device("meta"):  # read the classifier's shape only
            classifier, _ = create_timm(cfg.name, False)
        widths = [f["num_chs"] for f in classifier.feature_info][-4:]
        depths = [len(s.blocks) for s in classifier.stages][-4:]
        enc_channels, self.enc_strides = enc_channels[-4:], enc_strides[-4:]
        self.lateral = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(enc_channels, widths))
        self.top_down = nn.ModuleList(
            nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(widths) - 1)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(w, drop_path=cfg.drop_path_rate) for _ in range(d)])
            for w, d in zip(widths, depths)
        )
        self.channels, self.strides = widths, list(self.enc_strides)
        self.out_channels, self.out_stride = self.channels[0], self.strides[0]

    def forward(self, image: torch.Tensor, enc: list[torch.Tensor],
                rs_mix: nn.Module | None = None,
                lateral: nn.Module | None = None) -> list[torch.Tensor]:
        """Top-down levels, coarse to fine; the last (stride `out_stride`) is the output. The
        baseline reads the encoder features only: `image`, `rs_mix` and `lateral` are unused."""
        enc = enc[-4:]
        x = self.stages[-1](self.lateral[-1](enc[-1]))
        outs = [x]
        for i in range(len(enc) - 2, -1, -1):
            lat = self.lateral[i](enc[i])
            x = self.stages[i](lat + resize_to(self.top_down[i](x), lat.shape[-2:]))
            outs.append(x)
        return outs
