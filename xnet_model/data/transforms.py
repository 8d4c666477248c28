"""Paired augmentations for dict samples: the same geometry is applied to image and targets.

A sample holds 'image' (HxWx3 uint8 RGB) and optionally 'depth' (HxW float32 metres, 0 =
invalid) and 'labels' (HxW integer, 255 = ignore), and optionally 'focal' (the camera's fx in
pixels of 'image', kept up to date by every resize); other keys ('meta') pass through untouched.
Every transform is `transform(sample, rng) -> sample`; all randomness comes from `rng`, a
`np.random.Generator`, which `Compose` owns (seeded, and re-seeded per DataLoader worker).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ..camera import resized_focal

Sample = dict[str, Any]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
KB_CROP_SIZE = (352, 1216)  # KITTI benchmark crop, (H, W)
# What out-of-image pixels become after padding / rotation.
FILL_VALUES = {"image": 0, "depth": 0.0, "labels": IGNORE_INDEX}
TARGET_KEYS = ("depth", "labels")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _spatial_keys(sample: Sample) -> list[str]:
    return [key for key in ("image", *TARGET_KEYS) if key in sample]


def _interpolation(key: str) -> int:
    # Depth and labels must not blend values across edges (nor blend in invalid zeros).
    return cv2.INTER_LINEAR if key == "image" else cv2.INTER_NEAREST


class Compose:
    """Chain of transforms sharing one generator.

    The generator is seeded with `seed` in the main process; inside a DataLoader worker it is
    re-seeded from (seed, worker seed) so workers do not repeat each other's augmentations.
    """

    def __init__(self, transforms: Sequence[Any], seed: int | None = None) -> None:
        self.transforms = list(transforms)
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int] | None = None

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else (info.id, info.seed)
        if self._rng is None or owner != self._rng_owner:
            entropy = self.seed if owner is None else [self.seed or 0, owner[1]]
            self._rng = np.random.default_rng(entropy)
            self._rng_owner = owner
        return self._rng

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else self._generator()
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Compose([{inner}], seed={self.seed})"


def _crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    out = dict(sample)
    for key in _spatial_keys(sample):
        out[key] = sample[key][top : top + height, left : left + width]
    return out


def _pad_to(sample: Sample, height: int, width: int) -> Sample:
    """Pad bottom/right up to (height, width) with FILL_VALUES."""
    img_h, img_w = sample["image"].shape[:2]
    pad_h, pad_w = max(height - img_h, 0), max(width - img_w, 0)
    if not pad_h and not pad_w:
        return sample
    out = dict(sample)
    for key in _spatial_keys(sample):
        array = sample[key]
        widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2)
        out[key] = np.pad(array, widths, constant_values=FILL_VALUES[key])
    return out


class RandomScaleCrop:
    """Resize by a random factor in `scale_range`, pad (image 0, depth 0, labels 255) if the
    result is smaller than `crop_size`, then take a random `crop_size` (H, W) window."""

    def __init__(self, crop_size: int | Sequence[int],
                 scale_range: tuple[float, float] = (1.0, 1.0)) -> None:
        self.crop_size = _pair(crop_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        low, high = self.scale_range
        if (low, high) != (1.0, 1.0):
            factor = rng.uniform(low, high)
            img_h, img_w = sample["image"].shape[:2]
            size = (max(round(img_h * factor), 1), max(round(img_w * factor), 1))
            sample = Resize(size)(sample, rng)
        crop_h, crop_w = self.crop_size
        sample = _pad_to(sample, crop_h, crop_w)
        img_h, img_w = sample["image"].shape[:2]
        top = int(rng.integers(0, img_h - crop_h + 1))
        left = int(rng.integers(0, img_w - crop_w + 1))
        return _crop(sample, top, left, crop_h, crop_w)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        for key in _spatial_keys(sample):
            out[key] = np.ascontiguousarray(sample[key][:, ::-1])
        return out


class RandomRotation:
    """Rotate about the image centre by a uniform angle in [-degrees, degrees] (BTS uses 2.5);
    image bilinear, depth/labels nearest; uncovered pixels get FILL_VALUES."""

    def __init__(self, degrees: float = 2.5) -> None:
        self.degrees = degrees

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        angle = float(rng.uniform(-self.degrees, self.degrees))
        img_h, img_w = sample["image"].shape[:2]
        matrix = cv2.getRotationMatrix2D(((img_w - 1) / 2, (img_h - 1) / 2), angle, 1.0)
        out = dict(sample)
        for key in _spatial_keys(sample):
            array = sample[key]
            fill = FILL_VALUES[key]
            out[key] = cv2.warpAffine(
                array, matrix, (img_w, img_h), flags=_interpolation(key),
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(fill, fill, fill) if array.ndim == 3 else fill,
            ).astype(array.dtype, copy=False)  # cv2 returns int32 for int64 labels
        return out


class ColorJitter:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x] (image only)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2) -> None:
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"].astype(np.float32)
        b, c, s = (rng.uniform(1 - x, 1 + x) for x in
                   (self.brightness, self.contrast, self.saturation))
        image *= b
        gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        image = (image - gray.mean()) * c + gray.mean()
        gray = (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        image = (image - gray) * s + gray
        return {**sample, "image": np.clip(image + 0.5, 0, 255).astype(np.uint8)}


class KBCrop:
    """KITTI benchmark crop: the 352x1216 window at the bottom, centred horizontally."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        crop_h, crop_w = KB_CROP_SIZE
        img_h, img_w = sample["image"].shape[:2]
        if img_h < crop_h or img_w < crop_w:
            raise ValueError(f"KB crop needs at least {crop_h}x{crop_w}, image is {img_h}x{img_w}")
        return _crop(sample, img_h - crop_h, (img_w - crop_w) // 2, crop_h, crop_w)


class Resize:
    """Resize to (H, W): image bilinear, depth/labels nearest. `targets=False` resizes only
    the image (evaluate at the ground truth's own resolution). 'focal' follows the image."""

    def __init__(self, size: int | Sequence[int], targets: bool = True) -> None:
        self.size = _pair(size)
        self.targets = targets

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        height, width = self.size
        out = dict(sample)
        if "focal" in sample:
            out["focal"] = resized_focal(sample["focal"], sample["image"].shape[:2], self.size)
        keys = _spatial_keys(sample) if self.targets else ["image"]
        for key in keys:
            if sample[key].shape[:2] != (height, width):
                resized = cv2.resize(sample[key], (width, height),
                                     interpolation=_interpolation(key))
                out[key] = resized.astype(sample[key].dtype, copy=False)
        return out


class CanonicalDepth:
    """Metric depth -> the depth the canonical camera would see (xnet_model/camera.py):
    depth x canonical_focal / focal, with 'focal' the sample's fx in pixels of its image as
    the network gets it. Depths the head cannot output (> max_depth) become 0 (invalid)."""

    def __init__(self, canonical_focal: float, max_depth: float | None = None) -> None:
        self.canonical_focal = float(canonical_focal)
        self.max_depth = max_depth

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if "depth" not in sample:
            return sample
        focal = float(sample.get("focal", math.nan))
        if not (math.isfinite(focal) and focal > 0):
            where = sample.get("meta", {}).get("rgb_path", "a sample")
            raise ValueError(f"{where}: no camera focal length (got {focal}); a camera-aware "
                             "model (data.canonical_focal) needs each sample's fx: the third "
                             "column of a BTS split file, or the synthetic camera's K")
        depth = sample["depth"] * np.float32(self.canonical_focal / focal)
        if self.max_depth is not None:
            depth[depth > self.max_depth] = 0.0
        return {**sample, "depth": depth}


class NormalizeToTensor:
    """image -> (3,H,W) float32 of (x / 255 - mean) / std; depth -> (1,H,W) float32;
    labels -> (H,W) int64."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        out = dict(sample)
        image = (sample["image"].astype(np.float32) / 255.0 - self.mean) / self.std
        out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "depth" in sample:
            depth = np.ascontiguousarray(sample["depth"], dtype=np.float32)
            out["depth"] = torch.from_numpy(depth)[None]
        if "labels" in sample:
            out["labels"] = torch.from_numpy(np.asarray(sample["labels"], dtype=np.int64))
        return out


TASKS = ("depth", "semantic", "multitask")


def build_transforms(task: str, train: bool, crop_size: int | Sequence[int] | None = None, *,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                     scale_range: tuple[float, float] = (0.5, 2.0),
                     rotation_degrees: float = 2.5, kb_crop: bool = False,
                     resize: int | Sequence[int] | None = None,
                     canonical_focal: float | None = None,
                     focal_scale_range: tuple[float, float] | None = None,
                     max_depth: float | None = None,
                     seed: int | None = None) -> Compose:
    """Per-task pipeline ending in NormalizeToTensor.

    depth / multitask train: [KBCrop] -> rotate -> crop -> flip -> jitter (BTS order; no
    rescaling, which would change the metric meaning of depth). With `canonical_focal` (a
    camera-aware model) the depth target goes into the canonical camera last
    (CanonicalDepth), and then rescaling by a random factor in `focal_scale_range` before the
    crop is a focal augmentation: the effective focal changes and the target follows it.
    semantic train: random scale in `scale_range` -> crop (pad 255) -> flip -> jitter.
    Eval: [KBCrop] -> [Resize of the image only] -> normalize.
    """
    if task not in TASKS:
        raise ValueError(f"task: {task!r} is not one of {TASKS}")
    steps: list[Any] = []
    if kb_crop and task != "semantic":
        steps.append(KBCrop())
    if train:
        if task == "semantic":
            if crop_size is not None:
                steps.append(RandomScaleCrop(crop_size, scale_range))
        else:
            if rotation_degrees > 0:
                steps.append(RandomRotation(rotation_degrees))
            if focal_scale_range is not None and canonical_focal is None:
                raise ValueError("focal_scale_range rescales depth images: it needs a "
                                 "canonical_focal to keep the depth target consistent")
            if focal_scale_range is not None and crop_size is None:
                raise ValueError("focal_scale_range needs a crop_size (rescaled images are "
                                 "cropped or padded back to one size)")
            if crop_size is not None:
                steps.append(RandomScaleCrop(crop_size, focal_scale_range or (1.0, 1.0)))
        steps += [RandomHorizontalFlip(), ColorJitter()]
        if canonical_focal is not None and task != "semantic":
            steps.append(CanonicalDepth(canonical_focal, max_depth))
    if resize is not None:
        # Evaluation keeps targets at full resolution; the loss/metrics upsample the outputs.
        steps.append(Resize(resize, targets=train))
    steps.append(NormalizeToTensor(mean, std))
    return Compose(steps, seed=seed)
