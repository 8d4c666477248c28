"""Training and validation datasets from a TrainConfig, with per-(epoch, sample) seeded
augmentation so that the data of every step is reproducible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..config import ModelConfig
from ..data import datasets as public
from ..data.synthetic import SyntheticDataset
from ..data.transforms import IGNORE_INDEX, build_transforms
from .config import TrainConfig

# what the trainer batches ('focal': camera-aware models only); 'meta' / 'K' stay behind
BATCH_KEYS = ("image", "depth", "labels", "focal")
STANDARD_CROPS = {"nyu": "eigen_nyu", "kitti": "garg"}
DEFAULT_SPLITS = {"ade20k": ("training", "validation"), "cityscapes": ("train", "val")}


@dataclass
class EvalSpec:
    """How predictions are scored on this dataset."""

    tasks: list[str]
    min_depth: float = 1e-3
    max_depth: float = 10.0
    crop: str | None = None
    num_classes: int = 0
    ignore_index: int = IGNORE_INDEX
    class_names: list[str] | None = None


class SeededSamples(Dataset):
    """`transform(base[index], rng)` with rng seeded by (seed, epoch, index).

    Keys may be an index or the (epoch, index) pairs of `ResumableSampler`; the result keeps
    BATCH_KEYS only.
    """

    def __init__(self, base: Dataset, transform, seed: int):
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.base[index]
        sample = self.transform(sample, np.random.default_rng([self.seed, epoch, index]))
        return {k: sample[k] for k in BATCH_KEYS if k in sample}


class WithFocal:
    """A transform that first gives the sample its camera's fx as 'focal' (pixels of the
    image): the synthetic camera's K, or the focal column of a BTS split file (NaN when the
    file has none; CanonicalDepth and the evaluation then say so)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator | None = None):
        if "K" in sample:
            focal = float(sample["K"][0][0])
        else:
            focal = float(sample.get("meta", {}).get("focal", np.nan))
        return self.transform({**sample, "focal": focal}, rng)


class CachedDataset(Dataset):
    """Every sample of `base`, read once into memory."""

    def __init__(self, base: Dataset):
        self.samples = [base[i] for i in range(len(base))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


def task_of(model: ModelConfig) -> str:
    tasks = model.tasks
    return "multitask" if len(tasks) > 1 else ("depth" if tasks == ["depth"] else "semantic")


def _raw_dataset(cfg: TrainConfig, model: ModelConfig, train: bool) -> Dataset:
    d = cfg.data
    max_depth = eval_max_depth(cfg, model)
    if d.kind == "synthetic":
        s = d.synthetic
        length, offset = ((s.train_length, s.train_seed_offset) if train
                          else (s.val_length, s.val_seed_offset))
        base = SyntheticDataset(length, s.image_size[0], s.image_size[1], offset,
                                fov_deg=s.fov_deg, fov_range=s.fov_range if train else None)
        return CachedDataset(base) if s.cache else base
    split = d.train_split if train else d.val_split
    root = d.root if train else (d.val_root or d.root)
    gt_root = d.gt_root if train else (d.val_gt_root or d.val_root or d.gt_root)
    # split lines without ground truth ('None') can be neither trained on nor scored
    if d.kind == "nyu":
        return public.nyu_depth(root, gt_root, split, None, max_depth, require_ground_truth=True)
    if d.kind == "kitti":
        return public.kitti_eigen(root, gt_root or root, split, None, max_depth,
                                  require_ground_truth=True)
    split = split or DEFAULT_SPLITS[d.kind][0 if train else 1]
    if d.kind == "ade20k":
        return public.ADE20KDataset(root, split)
    return public.CityscapesDataset(root, split)


def samples_without_ground_truth(dataset: Dataset) -> int:
    """How many split lines a (wrapped) depth split dataset left out for having no ground
    truth; 0 for every other dataset."""
    base = getattr(dataset, "base", dataset)
    return len(getattr(base, "without_ground_truth", ()))


def eval_max_depth(cfg: TrainConfig, model: ModelConfig) -> float:
    if cfg.data.max_depth is not None:
        return cfg.data.max_depth
    return model.depth.max_depth if model.depth is not None else 10.0


def eval_spec(cfg: TrainConfig, model: ModelConfig) -> EvalSpec:
    d = cfg.data
    crop = d.eval_crop if d.eval_crop is not None else STANDARD_CROPS.get(d.kind)
    sem = model.semantic
    return EvalSpec(
        tasks=model.tasks,
        min_depth=model.depth.min_depth if model.depth is not None else 1e-3,
        max_depth=eval_max_depth(cfg, model),
        crop=None if crop == "none" else crop,
        num_classes=sem.num_classes if sem is not None else 0,
        ignore_index=sem.ignore_index if sem is not None else IGNORE_INDEX,
        class_names=sem.class_names if sem is not None else None,
    )


def _with_focal(transform, model: ModelConfig):
    """Camera-aware models (data.canonical_focal) need each sample's focal; others do not
    see it (their batches are as before)."""
    if model.data.canonical_focal is None or model.depth is None:
        return transform
    return WithFocal(transform)


def train_dataset(cfg: TrainConfig, model: ModelConfig) -> SeededSamples:
    """With a canonical camera the depth targets are canonical depths (CanonicalDepth)."""
    d = cfg.data
    transform = build_transforms(
        task_of(model), True, d.crop_size, mean=model.data.mean, std=model.data.std,
        scale_range=tuple(d.scale_range), rotation_degrees=d.rotation_degrees,
        canonical_focal=model.data.canonical_focal if model.depth is not None else None,
        focal_scale_range=tuple(d.focal_scale_range) if d.focal_scale_range else None,
        max_depth=model.depth.max_depth if model.depth is not None else None,
    )
    return SeededSamples(_raw_dataset(cfg, model, True), _with_focal(transform, model),
                         cfg.seed)


def val_dataset(cfg: TrainConfig, model: ModelConfig) -> SeededSamples:
    """Images resized to the model's input size; targets stay at their own resolution, in
    metres (a camera-aware model's predictions are mapped to metres with 'focal')."""
    transform = build_transforms(task_of(model), False, resize=model.data.input_size,
                                 mean=model.data.mean, std=model.data.std)
    return SeededSamples(_raw_dataset(cfg, model, False), _with_focal(transform, model),
                         cfg.seed)
