"""Seeded procedural RGB-D + semantic scenes: a pinhole camera inside a box room with objects.

Public API: `render_scene(seed)`, `render(scene, pose=...)`, `SyntheticDataset`,
`SyntheticCamera`. Scene description and conventions: `synthetic_scene`; ray casting and
shading: `synthetic_render`. Same seed -> bit-identical arrays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch.utils.data

from ..memory import tune_malloc
from .synthetic_render import F32, _cast, _compile, _shade
from .synthetic_scene import (
    CLASS_NAMES,
    CLASS_PALETTE,
    CLS,
    MAX_DEPTH,
    NUM_CLASSES,
    CameraPose,
    Light,
    Opening,
    Room,
    Scene,
    SceneObject,
    SyntheticFrame,
    colorize_labels,
    intrinsics,
    make_scene,
    walk_pose,
)

__all__ = [
    "CLASS_NAMES", "CLASS_PALETTE", "CLS", "MAX_DEPTH", "NUM_CLASSES", "CameraPose", "Light",
    "Opening", "Room", "Scene", "SceneObject", "SyntheticCamera", "SyntheticDataset",
    "SyntheticFrame", "colorize_labels", "intrinsics", "make_scene", "render", "render_scene",
    "walk_pose",
]


def render(scene: Scene, height: int = 240, width: int = 320, *, pose: CameraPose | None = None,
           fov_deg: float = 60.0, K: np.ndarray | None = None) -> SyntheticFrame:
    """Ray-cast `scene` from `pose` (default scene.camera) with intrinsics K (default: the
    horizontal `fov_deg` pinhole of `intrinsics`)."""
    tune_malloc()  # full-frame temporaries: see xnet_model.memory
    pose = scene.camera if pose is None else pose
    K = intrinsics(height, width, fov_deg) if K is None else np.asarray(K, np.float64)
    prims = _compile(scene)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth, pid, d = _cast(scene, pose, K, height, width, prims)
        rgb = _shade(scene, pose, prims, depth, pid, d)
    classes = ["wall"] * 4 + ["floor", "ceiling"] + [op.cls for op in scene.openings]
    lut = np.array([CLS[c] for c in classes + [p.obj.cls for p in prims]], np.uint8)
    return SyntheticFrame(rgb, depth, lut[pid], K, dataclasses.replace(scene, camera=pose))


def render_scene(seed: int, height: int = 240, width: int = 320, *, fov_deg: float = 60.0,
                 K: np.ndarray | None = None) -> SyntheticFrame:
    """The random scene of `make_scene(seed)`, seen from its random camera."""
    return render(make_scene(seed), height, width, fov_deg=fov_deg, K=K)


class SyntheticDataset(torch.utils.data.Dataset):
    """`length` random scenes; item i is `render_scene(seed_offset + i)` as a dict sample
    {"image": HxWx3 uint8 RGB, "depth": HxW float32 m, "labels": HxW uint8, "K": 3x3 float32},
    or `transform(sample)` when a transform is given.

    The camera has the horizontal field of view `fov_deg`; with `fov_range` (min, max degrees)
    each scene is seen through its own random lens instead (focal log-uniform between the two
    fields of view, drawn from the scene's seed: the same item always has the same lens)."""

    num_classes, class_names, max_depth = NUM_CLASSES, CLASS_NAMES, MAX_DEPTH
    palette = CLASS_PALETTE

    def __init__(self, length: int, height: int = 240, width: int = 320, seed_offset: int = 0,
                 transform: Callable[[dict[str, Any]], Any] | None = None, *,
                 fov_deg: float = 60.0, fov_range: tuple[float, float] | None = None) -> None:
        self.length, self.height, self.width = length, height, width
        self.seed_offset, self.transform = seed_offset, transform
        self.fov_deg = fov_deg
        self.fov_range = None if fov_range is None else (float(fov_range[0]),
                                                         float(fov_range[1]))
        if self.fov_range is not None and not 0 < self.fov_range[0] <= self.fov_range[1] < 180:
            raise ValueError(f"fov_range {fov_range}: need 0 < min <= max < 180 degrees")

    def fov(self, seed: int) -> float:
        """The horizontal field of view (degrees) scene `seed` is rendered with."""
        if self.fov_range is None:
            return self.fov_deg
        half_w = 0.5 * self.width
        f_wide, f_narrow = (intrinsics(self.height, self.width, a)[0, 0]
                            for a in self.fov_range[::-1])
        u = np.random.default_rng((seed, 0xF0C)).random()  # its own stream: scenes unchanged
        f = math.exp(math.log(f_narrow) + u * (math.log(f_wide) - math.log(f_narrow)))
        return math.degrees(2 * math.atan(half_w / f))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        seed = self.seed_offset + i % self.length
        f = render_scene(seed, self.height, self.width, fov_deg=self.fov(seed))
        sample = {"image": f.rgb, "depth": f.depth, "labels": f.labels, "K": f.K.astype(F32)}
        return sample if self.transform is None else self.transform(sample)


class SyntheticCamera:
    """Endless smooth camera walk through one room (`make_scene(seed, walk=True)`): iterating
    yields SyntheticFrames, `frames_per_loop` per lap of `walk_pose`; `frame(i)` is random
    access to the same sequence."""

    def __init__(self, height: int = 240, width: int = 320, seed: int = 0, *,
                 fov_deg: float = 60.0, frames_per_loop: int = 600) -> None:
        self.height, self.width, self.frames_per_loop = height, width, frames_per_loop
        self.scene = make_scene(seed, walk=True)
        self.K = intrinsics(height, width, fov_deg)
        self.index = 0

    def pose(self, i: int) -> CameraPose:
        return walk_pose(self.scene.room.size, 2 * math.pi * i / self.frames_per_loop)

    def frame(self, i: int) -> SyntheticFrame:
        return render(self.scene, self.height, self.width, pose=self.pose(i), K=self.K)

    def __iter__(self) -> Iterator[SyntheticFrame]:
        return self

    def __next__(self) -> SyntheticFrame:
        self.index += 1
        return self.frame(self.index - 1)
