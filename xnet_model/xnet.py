"""xNet assembly (section 3.3): E -> RS -> mixing -> reversed pre-trained D -> PFP -> heads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig, resolve
from .decoder import FPNDecoder, ReversedDecoder
from .encoder import Encoder
from .files import default_file_mode
from .metadata import ModelMetadata
from .modules import PFP, RS, DenseHeads, LateralLinks, upscale_factor

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class XNet(nn.Module):
    """One class for every Table-1 row; `cfg` chooses decoder kind, mixing, FP and PFP.

    `forward(image)` takes a normalised (N, 3, H, W) batch and returns a dict with `depth`
    (N, 1, H, W metres) and/or `semantic` (N, K, H, W logits) at the input resolution.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        hidden = cfg.rs.hidden_ratio
        self.encoder = Encoder(cfg.encoder)
        enc_c, enc_s = self.encoder.channels, self.encoder.strides
        self.lateral: LateralLinks | None = None
        self.rs_mix: RS | None = None
        self.pfp: PFP | None = None
        self.rs_out: RS | None = None

        if cfg.decoder.kind == "fpn":
            self.decoder = FPNDecoder(cfg.decoder, enc_c, enc_s)
            width = cfg.pfp.out_channels or cfg.pfp.channels or self.decoder.out_channels
        else:
            self.decoder = ReversedDecoder(cfg.decoder, cfg.mixing)
            dec = self.decoder
            if cfg.mixing == "stem":  # RS(E) has the stem output's shape
                self.rs_mix = RS(enc_c[-1], dec.stem_channels,
                                 upscale_factor(enc_s[-1], dec.stem_stride), hidden)
            else:  # RS(E) is a full-resolution 3-channel map, like the image
                self.rs_mix = RS(enc_c[-1], 3, upscale_factor(enc_s[-1], 1), hidden)
            if cfg.feature_pyramid:
                self.lateral = LateralLinks(enc_c, enc_s, dec.channels[:-1], dec.strides[:-1])
            width = cfg.pfp.channels or dec.stem_channels
            if cfg.pfp.enabled:
                out = cfg.pfp.out_channels or width
                self.pfp = PFP(dec.channels, dec.strides, width, out, cfg.pfp.scale, hidden)
                width = out
        if self.pfp is None:  # the decoder's output straight to full resolution
            self.rs_out = RS(self.decoder.out_channels, width, self.decoder.out_stride, hidden)
        self.heads = DenseHeads(
            width,
            cfg.depth.max_depth if cfg.depth else None,
            cfg.semantic.num_classes if cfg.semantic else None,
        )

    @property
    def size_multiple(self) -> int:
        """The input height/width multiple the network needs: the lcm of the encoder strides
        (32 for ConvNeXt/Swin, the patch size 14 for a DINOv2 ViT, whose paper inputs are
        476x644). The predictor, the trainer and `metadata.network_size` round free sizes up
        to it. The decoder takes any size: feature maps that do not divide are resized."""
        return math.lcm(*self.encoder.strides)

    @property
    def exact_size_multiple(self) -> int:
        """Sizes at which every encoder and decoder feature map divides exactly, which a
        dynamic-shape graph needs (torch.export: at other sizes the resizes of odd maps become
        shape guards that fail). A multiple of `size_multiple`: 224 for DINOv2 + ConvNeXt."""
        return math.lcm(self.size_multiple, *self.decoder.strides)

    @property
    def meta(self) -> ModelMetadata:
        """Class names, palette, depth range, input size, normalisation (see metadata.py)."""
        return ModelMetadata.from_config(self.cfg, self.size_multiple)

    def mix(self, e: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Section 3.2: mix the encoder's last feature map into the decoder's image path."""
        return self.decoder.mix(e, image, self.rs_mix)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        size = image.shape[-2:]
        stages = self.decoder(image, self.encoder(image), self.rs_mix, self.lateral)
        y = self.pfp(stages, size) if self.pfp is not None else self.rs_out(stages[-1], size)
        return self.heads(y)

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None,
             half: bool = False) -> Path:
        """Write `model.safetensors` + `config.json`; `load_model(directory)` rebuilds it.

        `half` stores floating tensors as fp16 (half the size; loading casts back to fp32).
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "xnet_config": self.cfg.to_json()})
        # safetensors creates its file owner-only (0600); a model is shared like any other file
        tmp.chmod(default_file_mode())
        tmp.replace(directory / WEIGHTS_FILE)
        doc = {"model": self.cfg.to_dict(), **(extra or {})}
        (directory / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
        return directory


def build_model(spec=None, **overrides) -> XNet:
    """Build an xNet from a variant name, config file, dict or `ModelConfig` (config.resolve)."""
    return XNet(resolve(spec, **overrides))
