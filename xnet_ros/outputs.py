"""ROS-free construction of everything the node publishes for one frame.

`pipeline.FramePipeline` calls `build_outputs`; the node (rclpy) and the offline bag tools
(rosbags) only wrap the returned fields into their own message classes, so both publish
identical data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from xnet_model.memory import tune_malloc

from .colorize import colorize_labels, default_palette
from .conversions import array_to_image_fields
from .geometry import Intrinsics, PointCloudData, backproject, pack_pointcloud
from .params import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS

__all__ = ["ALL_OUTPUTS", "COLOR", "DEPTH", "DEPTH_INFO", "LABELS", "POINTS", "FrameOutputs",
           "OutputOptions", "build_outputs", "tune_malloc"]


@dataclass
class OutputOptions:
    output_size: tuple[int, int] | None = None  # (H, W); None = the input image's size
    min_depth: float = 1e-3  # depth below this (or NaN) is published as NaN (REP 118)
    points_stride: int = 1
    points_max_range: float | None = None  # metres along z; None = keep all
    points_organized: bool = True
    palette: np.ndarray | None = None  # (K, 3) uint8; None = default_palette(K)
    num_classes: int = 0

    @classmethod
    def for_model(cls, meta: Any, min_depth: float | None = 0.0, **settings: Any
                  ) -> OutputOptions:
        """Options for a model (its palette and classes; `min_depth` 0/None = the model's),
        from its `xnet_model.ModelMetadata`."""
        palette = meta.palette_array() if meta.num_classes else None
        return cls(min_depth=min_depth or meta.min_depth, palette=palette,
                   num_classes=meta.num_classes, **settings)


@dataclass
class FrameOutputs:
    """Message fields per output name: image/camera-info dicts, or a PointCloudData."""

    fields: dict[str, Any] = field(default_factory=dict)
    intrinsics: Intrinsics | None = None  # at the output resolution


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    if arr.shape[:2] == size:
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (size[1], size[0]), interpolation=interp)


def build_outputs(rgb: np.ndarray, depth: np.ndarray | None, labels: np.ndarray | None,
                  intrinsics: Intrinsics | None, opts: OutputOptions,
                  wanted: set[str] | frozenset[str] = frozenset(ALL_OUTPUTS)) -> FrameOutputs:
    """Fields for each wanted output that the model can produce.

    `rgb` is the input image (HxWx3 uint8 RGB), `depth`/`labels` the prediction at that size,
    `intrinsics` those of the input image (None: no depth/camera_info and no points).
    """
    size = opts.output_size or rgb.shape[:2]
    out = FrameOutputs()
    if intrinsics is not None:
        out.intrinsics = intrinsics.scaled(size[1], size[0])
    if depth is not None:
        depth = _resize(depth, size, nearest=False).astype(np.float32, copy=False)
        depth = np.where(depth > opts.min_depth, depth, np.float32(np.nan))
        if DEPTH in wanted:
            out.fields[DEPTH] = array_to_image_fields(depth, "32FC1")
        if DEPTH_INFO in wanted and out.intrinsics is not None:
            out.fields[DEPTH_INFO] = out.intrinsics.to_camera_info_fields()
    if labels is not None:
        labels = _resize(labels, size, nearest=True)
        if LABELS in wanted:
            encoding = "mono8" if labels.dtype == np.uint8 else "mono16"
            out.fields[LABELS] = array_to_image_fields(labels, encoding)
        if COLOR in wanted or POINTS in wanted:
            palette = opts.palette if opts.palette is not None else default_palette(
                max(opts.num_classes, int(labels.max()) + 1))
            if COLOR in wanted:
                out.fields[COLOR] = array_to_image_fields(colorize_labels(labels, palette),
                                                          "rgb8")
    if POINTS in wanted and depth is not None and out.intrinsics is not None:
        out.fields[POINTS] = points_for(depth, _resize(rgb, size, nearest=False), labels,
                                        out.intrinsics, opts)
    return out


def points_for(depth: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None,
               intrinsics: Intrinsics, opts: OutputOptions) -> PointCloudData:
    s = max(1, opts.points_stride)
    xyz = backproject(depth, intrinsics, stride=s)
    return pack_pointcloud(
        xyz, rgb[::s, ::s], None if labels is None else labels[::s, ::s],
        organized=opts.points_organized, max_range=opts.points_max_range,
    )
