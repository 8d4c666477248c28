"""Typed model configuration: dataclasses, YAML/JSON loading, and the named variants.

Every ambiguity of the paper's text is a field here (see docs/architecture.md); `resolve` is the
one place that fills defaults and checks values.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .typed import ConfigError, build

Pretrained = bool | str  # False | True (timm hub) | path to a local .pth/.safetensors

MIXING_MODES = ("stem", "image", "none")
DECODER_KINDS = ("pretrained", "fpn")


@dataclass
class EncoderConfig:
    name: str = "convnext_atto"
    pretrained: Pretrained = False
    # Feature indices passed to timm's features_only; None = the last four (ViT: four evenly
    # spaced blocks, see timm's `forward_intermediates`).
    out_indices: list[int] | None = None
    img_size: list[int] | None = None  # [H, W]; needed by Swin / ViT position embeddings
    drop_path_rate: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments


@dataclass
class DecoderConfig:
    # "pretrained": a timm hierarchical classifier's stem + 4 stages in their original order
    # (eq. 1, the reversed decoder). "fpn": the Table-1 baseline, a random-init top-down FPN
    # whose stages are ConvNeXt blocks with the classifier's widths and depths, reversed.
    kind: Literal["pretrained", "fpn"] = "pretrained"
    name: str = "convnext_atto"
    pretrained: Pretrained = False
    drop_path_rate: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RSConfig:
    # Hidden width of the RS module's 2-layer MLP = ratio * max(in, out) channels.
    hidden_ratio: float = 1.0


@dataclass
class PFPConfig:
    enabled: bool = True
    scale: int = 4  # common resolution 1/scale that the four stage outputs are reshaped to
    channels: int | None = None  # per-stage RS output width; None = the decoder's stem width
    out_channels: int | None = None  # fused full-resolution width; None = channels


@dataclass
class DepthHeadConfig:
    max_depth: float = 10.0  # metres; depth = sigmoid(conv1x1) * max_depth
    min_depth: float = 1e-3


@dataclass
class SemanticHeadConfig:
    num_classes: int = 150
    class_names: list[str] | None = None
    palette: list[list[int]] | None = None  # K x RGB; None = a fixed deterministic palette
    ignore_index: int = 255


@dataclass
class DataConfig:
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Network input [H, W]. None = the image's own size rounded up to the encoder's stride.
    input_size: list[int] | None = None
    # The canonical camera (Metric3D, label space): the depth head predicts depth as a camera
    # of this fx (pixels of the image the network sees) would, and the Predictor maps it to
    # the real camera's fx (xnet_model/camera.py). None = a single-camera model, as before.
    canonical_focal: float | None = None


@dataclass
class ModelConfig:
    name: str = "xnet"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # "stem": xNet, RS(E) * D.stem(I). "image": xNet-I, D.stem(RS(E) * I).
    # "none": D.stem(RS(E)), the +Rev/+22k/+PFP/-FP rows before mixing was introduced.
    mixing: Literal["stem", "image", "none"] = "stem"
    feature_pyramid: bool = False  # encoder -> decoder FP connections (eq. 2); off in xNet
    rs: RSConfig = field(default_factory=RSConfig)
    pfp: PFPConfig = field(default_factory=PFPConfig)
    depth: DepthHeadConfig | None = field(default_factory=DepthHeadConfig)
    semantic: SemanticHeadConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def tasks(self) -> list[str]:
        return [t for t in ("depth", "semantic") if getattr(self, t) is not None]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------------
# Named variants: the paper's models, the Table-1 ablation rows, and CPU-size models.
# Each is a partial dict merged over the dataclass defaults by `resolve`.

PAPER_MODELS: dict[str, dict[str, Any]] = {
    # Table 2 / 4: NYU, Swin-L (22k) x ConvNeXtV2-T
    "swinl_x_convnextv2t_nyu": {
        "encoder": {"name": "swin_large_patch4_window12_384", "img_size": [480, 640]},
        "decoder": {"name": "convnextv2_tiny.fcmae_ft_in22k_in1k"},
        "depth": {"max_depth": 10.0},
        "data": {"input_size": [480, 640]},
    },
    # Table 2 / 3: DINOv2-L x ConvNeXtV2-B
    "dinov2l_x_convnextv2b_nyu": {
        "encoder": {"name": "vit_large_patch14_dinov2", "img_size": [476, 644]},
        "decoder": {"name": "convnextv2_base.fcmae_ft_in22k_in1k"},
        "depth": {"max_depth": 10.0},
        "data": {"input_size": [476, 644]},
    },
    "dinov2l_x_convnextv2b_kitti": {
        "encoder": {"name": "vit_large_patch14_dinov2", "img_size": [350, 1218]},
        "decoder": {"name": "convnextv2_base.fcmae_ft_in22k_in1k"},
        "depth": {"max_depth": 80.0},
        "data": {"input_size": [350, 1218]},
    },
    # Table 3 / 6: Swin-L x ConvNeXt-B (KITTI, KB crop 352 x 1216)
    "swinl_x_convnextb_kitti": {
        "encoder": {"name": "swin_large_patch4_window12_384", "img_size": [352, 1216]},
        "decoder": {"name": "convnext_base.fb_in22k"},
        "depth": {"max_depth": 80.0},
        "data": {"input_size": [352, 1216]},
    },
    # Table 7 / 8: Swin-L x ConvNeXt-L segmentation
    "swinl_x_convnextl_ade20k": {
        "encoder": {"name": "swin_large_patch4_window12_384", "img_size": [512, 512]},
        "decoder": {"name": "convnext_large.fb_in22k"},
        "depth": None,
        "semantic": {"num_classes": 150},
        "data": {"input_size": [512, 512]},
    },
    "swinl_x_convnextl_cityscapes": {
        "encoder": {"name": "swin_large_patch4_window12_384", "img_size": [512, 1024]},
        "decoder": {"name": "convnext_large.fb_in22k"},
        "depth": None,
        "semantic": {"num_classes": 19},
        "data": {"input_size": [512, 1024]},
    },
    # Section 5: ConvNeXt-T x ConvNeXt-T (the ablation backbone), NYU depth
    "convnextt_x_convnextt": {
        "encoder": {"name": "convnext_tiny"},
        "decoder": {"name": "convnext_tiny"},
        "depth": {"max_depth": 10.0},
        "data": {"input_size": [480, 640]},
    },
    # CPU-size models for tests, the demo and benchmarks
    "atto_x_atto": {
        "encoder": {"name": "convnext_atto"},
        "decoder": {"name": "convnext_atto"},
        "depth": {"max_depth": 10.0},
        "data": {"input_size": [240, 320]},
    },
    "atto_x_atto_multitask": {
        "encoder": {"name": "convnext_atto"},
        "decoder": {"name": "convnext_atto"},
        "depth": {"max_depth": 10.0},
        "semantic": {"num_classes": 10},
        "data": {"input_size": [240, 320]},
    },
}

# Table 1, first group: each row is a set of overrides on any base model.
ABLATION_ROWS: dict[str, dict[str, Any]] = {
    "fpn": {"decoder": {"kind": "fpn", "pretrained": False}, "feature_pyramid": True,
            "mixing": "none", "pfp": {"enabled": False}},
    "rev": {"decoder": {"kind": "pretrained", "pretrained": False}, "feature_pyramid": True,
            "mixing": "none", "pfp": {"enabled": False}},
    "rev_pretrained": {"decoder": {"kind": "pretrained"}, "feature_pyramid": True,
                       "mixing": "none", "pfp": {"enabled": False}},
    "rev_pretrained_pfp": {"decoder": {"kind": "pretrained"}, "feature_pyramid": True,
                           "mixing": "none", "pfp": {"enabled": True}},
    "no_fp": {"decoder": {"kind": "pretrained"}, "feature_pyramid": False, "mixing": "none",
              "pfp": {"enabled": True}},
    "xnet_i": {"decoder": {"kind": "pretrained"}, "feature_pyramid": False, "mixing": "image",
               "pfp": {"enabled": True}},
    "xnet": {"decoder": {"kind": "pretrained"}, "feature_pyramid": False, "mixing": "stem",
             "pfp": {"enabled": True}},
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve(spec: str | dict[str, Any] | ModelConfig | None = None,
            ablation: str | None = None, **overrides: Any) -> ModelConfig:
    """The one place that turns a name, dict or file into a checked `ModelConfig`.

    `spec` is a variant name from PAPER_MODELS, a path to a YAML/JSON file, a dict, or a config.
    A file or dict may name its base with `variant:` and its Table-1 row with `ablation:`.
    """
    if isinstance(spec, ModelConfig):
        data = spec.to_dict()
    elif spec is None:
        data = {}
    elif isinstance(spec, dict):
        data = dict(spec)
    elif spec in PAPER_MODELS:
        data = {"variant": spec}
    else:
        data = load_mapping(spec)
        data = data.get("model", data)
    variant = data.pop("variant", None)
    ablation = ablation or data.pop("ablation", None)
    base: dict[str, Any] = {}
    if variant is not None:
        if variant not in PAPER_MODELS:
            raise ConfigError(f"unknown variant {variant!r}; known: {sorted(PAPER_MODELS)}")
        base = deep_merge(PAPER_MODELS[variant], {"name": variant})
    if ablation is not None:
        if ablation not in ABLATION_ROWS:
            raise ConfigError(f"unknown ablation row {ablation!r}; known: {sorted(ABLATION_ROWS)}")
        base = deep_merge(base, ABLATION_ROWS[ablation])
    merged = deep_merge(deep_merge(base, data), overrides)
    cfg = build(ModelConfig, merged)
    _validate(cfg)
    return cfg


def _validate(cfg: ModelConfig) -> None:
    if cfg.mixing not in MIXING_MODES:
        raise ConfigError(f"mixing: {cfg.mixing!r} is not one of {MIXING_MODES}")
    if cfg.decoder.kind not in DECODER_KINDS:
        raise ConfigError(f"decoder.kind: {cfg.decoder.kind!r} is not one of {DECODER_KINDS}")
    if cfg.decoder.kind == "fpn" and cfg.mixing != "none":
        raise ConfigError("decoder.kind 'fpn' has no stem to mix into: set mixing: none")
    if not cfg.tasks:
        raise ConfigError("the model needs at least one head: depth and/or semantic")
    if cfg.depth is not None and not cfg.depth.max_depth > cfg.depth.min_depth > 0:
        raise ConfigError("depth: need max_depth > min_depth > 0")
    if cfg.semantic is not None:
        k = cfg.semantic.num_classes
        if k < 1 or k > 65535:
            raise ConfigError(f"semantic.num_classes: {k} must be in [1, 65535]")
        for key in ("class_names", "palette"):
            value = getattr(cfg.semantic, key)
            if value is not None and len(value) != k:
                raise ConfigError(f"semantic.{key}: has {len(value)} entries, expected {k}")
    if cfg.pfp.scale < 1 or cfg.pfp.scale & (cfg.pfp.scale - 1):
        raise ConfigError(f"pfp.scale: {cfg.pfp.scale} must be a power of two")
    if cfg.rs.hidden_ratio <= 0:
        raise ConfigError("rs.hidden_ratio must be > 0")
    for key in ("mean", "std"):
        if len(getattr(cfg.data, key)) != 3:
            raise ConfigError(f"data.{key} must have 3 values")
    if cfg.data.input_size is not None and (
        len(cfg.data.input_size) != 2 or min(cfg.data.input_size) < 32
    ):
        raise ConfigError(f"data.input_size: {cfg.data.input_size} must be [H, W], both >= 32")
    focal = cfg.data.canonical_focal
    if focal is not None and (isinstance(focal, bool) or not isinstance(focal, int | float)
                              or not focal > 0):
        raise ConfigError(f"data.canonical_focal: {focal!r} must be a focal length > 0 "
                          "(pixels at the network input) or null")
    if focal is not None:
        cfg.data.canonical_focal = float(focal)


def load_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data
