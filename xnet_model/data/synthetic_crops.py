"""A classification task built from the procedural scenes: "what is at the centre of this crop?"

The stand-in for ImageNet pre-training in docs/experiments.md. Item i renders scene
`seed_offset + i`, picks one class present in it (uniformly over the classes with at least
`min_pixels` pixels, so rare objects are not drowned by walls), picks a pixel of that class, and
cuts a square around it whose side is a random fraction of the view (padding with grey where
it leaves the image, so the labelled pixel stays at the centre). The label is that pixel's class
(`CLASS_NAMES`). Training items also get a random flip, colour jitter and grey-scale, so the
network must use shape and context, not only the palette of one scene.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.utils.data

from .synthetic import NUM_CLASSES, render_scene
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    NormalizeToTensor,
    RandomHorizontalFlip,
)

GREY = 124  # ~ the ImageNet mean in 0..255: padding is ~0 after normalisation


class SyntheticCropDataset(torch.utils.data.Dataset):
    """`length` crops; item i is (image float32 3xSxS normalised, label int64).

    `epoch` (set with `set_epoch`) changes the class, pixel and augmentation chosen for a scene
    on the training split; the held-out split (`train=False`) is the same in every epoch.
    """

    num_classes = NUM_CLASSES

    def __init__(self, length: int, crop_size: int = 64, render_size: tuple[int, int] = (96, 128),
                 seed_offset: int = 0, train: bool = True,
                 side_range: tuple[float, float] = (0.35, 0.9), min_pixels: int = 20,
                 cache: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.length, self.crop_size, self.render_size = length, crop_size, tuple(render_size)
        self.seed_offset, self.train = seed_offset, train
        self.side_range, self.min_pixels = side_range, min_pixels
        self.normalize = NormalizeToTensor(mean, std)
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self.epoch = 0
        self.flip, self.jitter = RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.4)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, labels) of scene i, rendered once when `cache` is on (~50 KB a scene)."""
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        f = render_scene(self.seed_offset + i, *self.render_size)
        if self.cache is not None:
            self.cache[i] = (f.rgb, f.labels)
        return f.rgb, f.labels

    def pick(self, i: int) -> tuple[int, int, int, int]:
        """(label, row, column, side) of item i: the class, the centre pixel and the crop side."""
        rng = np.random.default_rng([self.seed_offset + i, self.epoch if self.train else 0, 7])
        h, w = self.render_size
        labels = self.frame(i)[1]
        counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
        label = int(rng.choice(np.flatnonzero(counts >= self.min_pixels)))
        ys, xs = np.nonzero(labels == label)
        k = rng.integers(len(ys))
        side = max(8, int(round(rng.uniform(*self.side_range) * min(h, w))))
        return label, int(ys[k]), int(xs[k]), side

    def crop(self, i: int) -> tuple[np.ndarray, int]:
        """(HxWx3 uint8 crop, label) of item i, before augmentation and normalisation."""
        label, cy, cx, side = self.pick(i)
        rgb = self.frame(i)[0]
        half = side // 2
        padded = cv2.copyMakeBorder(rgb, half, half, half, half, cv2.BORDER_CONSTANT,
                                    value=(GREY, GREY, GREY))
        patch = padded[cy:cy + 2 * half, cx:cx + 2 * half]  # centred on (cy, cx)
        patch = cv2.resize(patch, (self.crop_size, self.crop_size),
                           interpolation=cv2.INTER_AREA if side > self.crop_size
                           else cv2.INTER_LINEAR)
        return patch, label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} crops")
        patch, label = self.crop(i)
        sample = {"image": patch}
        if self.train:
            rng = np.random.default_rng([self.seed_offset + i, self.epoch, 11])
            sample = self.jitter(self.flip(sample, rng), rng)
            if rng.random() < 0.2:
                grey = sample["image"] @ np.array([0.299, 0.587, 0.114], np.float32)
                sample = {"image": np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)}
        return self.normalize(sample)["image"], label
