"""Typed training configuration: dataclasses, YAML loading with `base:` files, and `key.sub=value`
command-line overrides. `load_train_config` is the one place that fills defaults and checks
values; unknown keys are rejected with their full dotted path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import ABLATION_ROWS, ConfigError, ModelConfig, deep_merge, load_mapping, resolve
from ..typed import SCIENTIFIC, build

DATASET_KINDS = ("synthetic", "nyu", "kitti", "ade20k", "cityscapes")
SUPERVISED_TASKS = {"synthetic": ("depth", "semantic"), "nyu": ("depth",), "kitti": ("depth",),
                    "ade20k": ("semantic",), "cityscapes": ("semantic",)}
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
EXPORT_SOURCES = ("best", "last")


@dataclass
class SyntheticConfig:
    """The procedural scenes of `xnet_model.data.synthetic`; scene i has seed offset + i."""

    image_size: list[int] = field(default_factory=lambda: [120, 160])  # rendered [H, W]
    train_length: int = 20000
    val_length: int = 64
    train_seed_offset: int = 0
    val_seed_offset: int = 1_000_000  # held out: disjoint from the training seeds
    cache: bool = False  # render every scene once into memory (rendering is cheap anyway)
    fov_deg: float = 60.0  # horizontal field of view of the camera (validation always)
    # Focal augmentation: each training scene through a random lens with a horizontal field of
    # view in [min, max] degrees (needs model.data.canonical_focal); null = fov_deg only.
    fov_range: list[float] | None = None


@dataclass
class DataConfig:
    kind: Literal["synthetic", "nyu", "kitti", "ade20k", "cityscapes"] = "synthetic"
    root: str | None = None  # NYU/KITTI image root; ADE20K/Cityscapes dataset root
    gt_root: str | None = None  # NYU/KITTI depth root; None = root
    val_root: str | None = None  # the val split's roots (BTS NYU: official_splits/test);
    val_gt_root: str | None = None  # None = root / gt_root
    # NYU/KITTI: BTS split files ('rgb depth focal' per line). ADE20K/Cityscapes: the split's
    # folder name (None = 'training'/'validation' and 'train'/'val').
    train_split: str | None = None
    val_split: str | None = None
    crop_size: list[int] | None = None  # training random crop [H, W]; None = whole image
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # semantic rescale
    rotation_degrees: float = 2.5  # depth / multitask random rotation
    # Focal augmentation for depth: rescale by a random factor in [lo, hi] before the crop,
    # which changes the effective focal (needs model.data.canonical_focal and crop_size);
    # null = off (the BTS protocol of the paper configs).
    focal_scale_range: list[float] | None = None
    max_depth: float | None = None  # ground truth cap (m); None = the model's depth max_depth
    eval_crop: str | None = None  # None = the dataset's standard crop; 'none' = whole image
    batch_size: int = 8  # per process and micro-batch (see optim.accumulate)
    val_batch_size: int = 1
    workers: int = 4
    persistent_workers: bool = True  # keep the loader processes between epochs/evaluations
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01  # never applied to norms, biases and other 1-d parameters
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    encoder_lr_mult: float = 1.0  # encoder lr = lr * encoder_lr_mult
    warmup_steps: int = 0  # linear from warmup_start * lr up to lr
    warmup_start: float = 1e-3
    poly_power: float = 0.9  # then lr * (1 - progress) ** poly_power, floored at min_lr_ratio
    min_lr_ratio: float = 0.0
    max_steps: int | None = None  # exactly one of max_steps / epochs
    epochs: int | None = None
    grad_clip: float | None = 1.0  # max global gradient norm; None = off
    # Micro-batches per optimizer step: global batch = batch_size x processes x accumulate.
    # A step (max_steps, schedule, logs, checkpoints) is one optimizer step.
    accumulate: int = 1
    # A step whose loss is not finite on any rank (or whose fp16 gradients overflow) is skipped
    # on every rank; this many skipped steps in a row stop the run.
    max_skipped_steps: int = 25


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=dict)  # per task; missing = 1.0
    silog_lambda: float = 0.85
    silog_scale: float = 10.0


@dataclass
class EvalConfig:
    interval: int = 0  # steps between evaluations; 0 = only at the end
    flip_tta: bool = False  # also run the flipped image; average depth / logits
    max_batches: int | None = None  # cap on val batches per evaluation (quick checks)
    # The metric that picks best.pt; None = mIoU (max) with a semantic head, else abs_rel (min).
    best_metric: str | None = None


@dataclass
class ExportConfig:
    dir: str | None = None  # None = <out_dir>/model
    half: bool = False  # store fp16 weights (half the size)
    source: Literal["best", "last"] = "best"  # best.pt when an evaluation ran, else last


@dataclass
class PerformanceConfig:
    """Speed options. The CUDA ones do nothing on a CPU (see hardware.cuda_settings)."""

    cudnn_benchmark: bool = True  # let cuDNN time its kernels for the (fixed) crop size
    tf32: bool = True  # TF32 tensor cores for fp32 matmuls/convolutions (Ampere and newer)
    channels_last: bool = False  # NHWC memory format for the model and its input batches
    fused_adamw: bool | None = None  # None = fused on CUDA, the for-each kernel elsewhere
    compile: bool = False  # torch.compile the model for training
    compile_options: dict[str, Any] = field(default_factory=dict)  # torch.compile kwargs


@dataclass
class TrainConfig:
    # A model spec for `xnet_model.config.resolve`: a variant name or a mapping that may name
    # `variant:` and `ablation:` and override any ModelConfig field, plus the training-only
    # `grad_checkpointing: true` (recompute activations in backward: less memory, ~30% slower).
    model: dict[str, Any] = field(default_factory=lambda: {"variant": "atto_x_atto"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0  # rank r > 0 re-seeds its RNGs with hardware.process_seed(seed, r)
    out_dir: str = "runs/xnet"
    init_from: str | None = None  # checkpoint (.pt) or saved model dir: transfer E, D, PFP, RS
    resume: bool | str = False  # true = <out_dir>/last.pt when it exists; or a checkpoint path
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = None  # torch CPU threads per process; None = torch's default
    log_interval: int = 10  # steps between metrics.jsonl lines
    checkpoint_interval: int = 500  # steps between last.pt writes; 0 = only at eval and end
    progress: bool = True  # tqdm bars (rank 0, and only on a terminal)
    tensorboard: bool = True  # scalars to <out_dir>/tb when torch.utils.tensorboard imports

    def model_config(self) -> ModelConfig:
        """The resolved model. A Table-1 row (`ablation:`) is merged last here, so it decides
        the decoder's kind and init even where the file pre-trains the decoder for the other
        rows (`rev` and `fpn` are random-init by definition)."""
        spec = dict(self.model)
        spec.pop("grad_checkpointing", None)  # a training option, not part of the model
        row = spec.pop("ablation", None)
        if row is not None:
            if row not in ABLATION_ROWS:
                raise ConfigError(f"ablation: unknown row {row!r}; known: {sorted(ABLATION_ROWS)}")
            spec = deep_merge(spec, ABLATION_ROWS[row])
        return resolve(spec)

    @property
    def grad_checkpointing(self) -> bool:
        return bool(self.model.get("grad_checkpointing", False))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['optim.lr=1e-4', 'model.ablation=fpn'] -> nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value):
            value = float(value)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is set to a value and a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML file merged over the file its `base:` key names (relative to it), recursively."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config files include each other: {' -> '.join(map(str, seen))}")
    data = load_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    return deep_merge(_read_with_bases(path.parent / base, (*seen, path)), data)


def load_train_config(source: str | Path | dict[str, Any] | None = None,
                      overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Build and check a TrainConfig from a YAML file (or dict) plus overrides."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        data = _read_with_bases(Path(source))
    if isinstance(data.get("model"), str):
        data["model"] = {"variant": data["model"]}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    if isinstance(extra.get("model"), str):
        extra = {**extra, "model": {"variant": extra["model"]}}
    cfg = build(TrainConfig, deep_merge(data, extra))
    validate(cfg)
    return cfg


def _check_focal_augmentation(d: DataConfig, model: ModelConfig) -> None:
    s = d.synthetic
    if not 0 < s.fov_deg < 180:
        raise ConfigError(f"data.synthetic.fov_deg: {s.fov_deg} must be in (0, 180) degrees")
    if s.fov_range is not None and (len(s.fov_range) != 2
                                    or not 0 < s.fov_range[0] <= s.fov_range[1] < 180):
        raise ConfigError(f"data.synthetic.fov_range: {s.fov_range} must be [min, max] "
                          "degrees with 0 < min <= max < 180")
    r = d.focal_scale_range
    if r is not None:
        if len(r) != 2 or not 0 < r[0] <= r[1]:
            raise ConfigError(f"data.focal_scale_range: {r} must be [lo, hi] with 0 < lo <= hi")
        if d.crop_size is None:
            raise ConfigError("data.focal_scale_range: rescaled images are cropped back to one "
                              "size: set data.crop_size too")
    augmented = r is not None or (d.kind == "synthetic" and s.fov_range is not None)
    if augmented and model.data.canonical_focal is None:
        raise ConfigError(
            "focal augmentation (data.focal_scale_range / data.synthetic.fov_range) changes "
            "the camera's focal length, which a single-camera model cannot follow: set "
            "model.data.canonical_focal (see docs/training.md)")


def _check_supervision(kind: str, model: ModelConfig) -> None:
    """Every head must get a loss: a head the data cannot supervise never trains, and under
    DDP its parameters, which get no gradient, fail the second step ("Expected to have
    finished reduction ...")."""
    supervised = SUPERVISED_TASKS[kind]
    unsupervised = [t for t in model.tasks if t not in supervised]
    if unsupervised:
        if not set(model.tasks) & set(supervised):
            raise ConfigError(f"data.kind {kind} has {' and '.join(supervised)} ground truth "
                              f"only: the model needs a {supervised[0]} head")
        remove = ", ".join(f"model.{t}=null" for t in unsupervised)
        raise ConfigError(
            f"data.kind {kind} has no ground truth for the model's {' and '.join(unsupervised)} "
            f"head: it would never train (and DDP stops at its unused parameters); remove it "
            f"({remove}) or train it on a dataset that supervises it")


def validate(cfg: TrainConfig, training: bool = True) -> None:
    """Check the values. `training=False` (xnet eval) allows heads the data does not score."""
    try:
        model = cfg.model_config()
    except ConfigError as exc:  # resolve's messages start with the key path inside the model
        head = str(exc).split(":", 1)[0]
        raise ConfigError(f"model.{exc}" if " " not in head else f"model: {exc}") from exc
    o, d = cfg.optim, cfg.data
    if (o.max_steps is None) == (o.epochs is None):
        raise ConfigError("optim: set exactly one of max_steps and epochs")
    if (o.max_steps or o.epochs or 0) < 1:
        raise ConfigError("optim.max_steps / optim.epochs must be >= 1")
    if o.lr <= 0 or o.encoder_lr_mult < 0 or o.weight_decay < 0:
        raise ConfigError("optim: need lr > 0, encoder_lr_mult >= 0, weight_decay >= 0")
    if o.warmup_steps < 0 or not 0 < o.warmup_start <= 1 or not 0 <= o.min_lr_ratio <= 1:
        raise ConfigError("optim: need warmup_steps >= 0, 0 < warmup_start <= 1, "
                          "0 <= min_lr_ratio <= 1")
    if o.grad_clip is not None and o.grad_clip <= 0:
        raise ConfigError("optim.grad_clip must be > 0 or null")
    if o.accumulate < 1 or o.max_skipped_steps < 0:
        raise ConfigError("optim: need accumulate >= 1 and max_skipped_steps >= 0")
    if not isinstance(cfg.model.get("grad_checkpointing", False), bool):
        raise ConfigError("model.grad_checkpointing must be true or false")
    if len(o.betas) != 2:
        raise ConfigError("optim.betas must have 2 values")
    for name in ("batch_size", "val_batch_size"):
        if getattr(d, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1")
    if d.workers < 0:
        raise ConfigError("data.workers must be >= 0")
    for name in ("crop_size",):
        size = getattr(d, name)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ConfigError(f"data.{name}: {size} must be [H, W]")
    if len(d.synthetic.image_size) != 2 or min(d.synthetic.image_size) < 16:
        raise ConfigError("data.synthetic.image_size must be [H, W], both >= 16")
    if training:  # evaluation does not augment: any model can be scored with the config
        _check_focal_augmentation(d, model)
    elif not 0 < d.synthetic.fov_deg < 180:
        raise ConfigError(f"data.synthetic.fov_deg: {d.synthetic.fov_deg} must be in (0, 180)")
    if d.kind != "synthetic" and d.root is None:
        raise ConfigError(f"data.root: the {d.kind} dataset needs its root folder")
    if d.kind in ("nyu", "kitti") and (d.train_split is None or d.val_split is None):
        raise ConfigError(f"data.train_split / data.val_split: {d.kind} needs BTS split files")
    if training:
        _check_supervision(d.kind, model)
    unknown = sorted(set(cfg.loss.weights) - {"depth", "semantic"})
    if unknown:
        raise ConfigError(f"loss.weights: unknown task(s) {unknown}; known: depth, semantic")
    if cfg.eval.interval < 0 or cfg.log_interval < 1 or cfg.checkpoint_interval < 0:
        raise ConfigError("need eval.interval >= 0, log_interval >= 1, checkpoint_interval >= 0")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision: {cfg.precision!r} is not one of {PRECISIONS}")


def best_metric(cfg: TrainConfig, model: ModelConfig) -> tuple[str, str]:
    """(metric name, 'max' | 'min') that decides best.pt."""
    name = cfg.eval.best_metric or ("mIoU" if model.semantic is not None else "abs_rel")
    higher = name in ("mIoU", "mAcc", "aAcc", "d1", "d2", "d3")
    return name, "max" if higher else "min"
