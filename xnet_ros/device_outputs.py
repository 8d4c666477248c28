"""`outputs.build_outputs` with torch, on the device the prediction is on.

For predictions a CUDA backend left on the GPU (`Predictor.predict_batch(..., raw=True)`): the
resize to the output size (bilinear depth; nearest labels through cv2's own indices), the
min_depth NaN mask, the colouring and the back-projection run on the device, and each final
array is copied to the host once, straight into the buffer its message keeps (`BufferPool`).
The colour bits of the cloud come from the host image (`geometry.rgb_words`, as in the numpy
path), uploaded once per frame.

The same code runs on CPU tensors; the tests compare it with the numpy path there: labels,
colours and the cloud's colour/label bits are identical, depth and xyz agree within float
rounding (the bilinear taps are cv2's, but cv2 may fuse multiply-adds), NaN where the numpy
path has NaN.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
import torch

from .colorize import default_palette
from .geometry import Intrinsics, PointCloudData, cloud_layout, rgb_words
from .outputs import (
    COLOR,
    DEPTH,
    DEPTH_INFO,
    LABELS,
    POINTS,
    BufferPool,
    FrameOutputs,
    Lender,
    OutputOptions,
    label_dtype,
    nearest_maps,
    resize_steps,
)

NAN = float("nan")


def build_outputs_torch(rgb: np.ndarray, depth: torch.Tensor | None,
                        labels: torch.Tensor | None, intrinsics: Intrinsics | None,
                        opts: OutputOptions, wanted: set[str] | frozenset[str],
                        buffers: BufferPool | None = None) -> FrameOutputs:
    """`build_outputs` for torch tensors: (h, w) depth in metres and (h, w) integer labels at
    the network's (or the image's) resolution, on any device."""
    frame = rgb.shape[:2]
    size = tuple(opts.output_size or frame)
    lend = Lender(buffers)
    out = FrameOutputs(lender=lend)
    if intrinsics is not None:
        out.intrinsics = intrinsics.scaled(size[1], size[0])
    points = POINTS in wanted and out.intrinsics is not None and depth is not None
    from_network = points and opts.points_resolution == "network"
    depth_full = labels_full = None
    with torch.inference_mode():
        if depth is not None:
            depth = torch.as_tensor(depth).float()
            if DEPTH in wanted or (points and not from_network):
                steps = resize_steps(tuple(depth.shape), frame, size)
                depth_full = masked(bilinear(depth, steps), opts.min_depth)
                if DEPTH in wanted:
                    out.fields[DEPTH] = _image(depth_full, lend, DEPTH, "32FC1", np.float32)
            if DEPTH_INFO in wanted and out.intrinsics is not None:
                out.fields[DEPTH_INFO] = out.intrinsics.to_camera_info_fields()
        if labels is not None:
            labels = torch.as_tensor(labels)
            dtype = label_dtype(labels, opts.num_classes)
            rows, cols = _device_maps(tuple(labels.shape), resize_steps(
                tuple(labels.shape), frame, size), labels.device)
            if LABELS in wanted or (points and not from_network):
                labels_full = labels[rows][:, cols]
                if LABELS in wanted:  # int16 holds uint16's bits
                    mono8 = dtype == np.uint8
                    host = labels_full.to(torch.uint8 if mono8 else torch.int16)
                    out.fields[LABELS] = _image(host, lend, LABELS,
                                                "mono8" if mono8 else "mono16",
                                                np.uint8 if mono8 else np.int16)
            if COLOR in wanted:
                colors = colorize(labels, opts)[rows][:, cols]
                out.fields[COLOR] = _image(colors, lend, COLOR, "rgb8", np.uint8)
        if points:
            if from_network:
                h, w = depth.shape
                if rgb.shape[:2] != (h, w):
                    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
                out.fields[POINTS] = cloud(masked(depth, opts.min_depth), rgb, labels,
                                           intrinsics.scaled(w, h), opts, lend)
            else:
                if size != frame:
                    rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                out.fields[POINTS] = cloud(depth_full, rgb, labels_full, out.intrinsics, opts,
                                           lend)
    return out


@functools.lru_cache(maxsize=64)
def linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR along one axis: per output position the two source indices and their
    float32 weights as cv2 gets them (coordinate and fraction in double, edges clamped).
    Blended in float32 they give cv2's values up to float rounding (~4e-7 relative; cv2 fuses
    multiply-adds); torch's `interpolate` works the coordinate out in float32 and is up to
    8e-5 off at 1920 px."""
    coord = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    sx = np.floor(coord)
    fx = (coord - sx).astype(np.float32)
    sx = sx.astype(np.int64)
    edge = (sx < 0) | (sx >= src - 1)
    fx[edge] = 0.0
    sx = np.clip(sx, 0, src - 1)
    return sx, np.minimum(sx + 1, src - 1), np.float32(1.0) - fx, fx


def bilinear(depth: torch.Tensor, steps: tuple) -> torch.Tensor:
    """cv2 INTER_LINEAR's resize through `steps`: its taps, rows blended first as cv2 does
    (equal up to cv2's fused multiply-adds)."""
    for h, w in steps:
        x0, x1, a0, a1 = _device_taps(depth.shape[1], w, depth.device)
        y0, y1, b0, b1 = _device_taps(depth.shape[0], h, depth.device)
        rows = depth[:, x0] * a0 + depth[:, x1] * a1
        depth = rows[y0] * b0[:, None] + rows[y1] * b1[:, None]
    return depth


@functools.lru_cache(maxsize=64)
def _device_taps(src: int, dst: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device) for a in linear_taps(src, dst))


def masked(depth: torch.Tensor, min_depth: float) -> torch.Tensor:
    """NaN where depth is not above min_depth (NaN included)."""
    return depth.masked_fill(~(depth > min_depth), NAN)


@functools.lru_cache(maxsize=32)
def _device_maps(source: tuple, steps: tuple, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = nearest_maps(source, steps)
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


def colorize(labels: torch.Tensor, opts: OutputOptions) -> torch.Tensor:
    """(h, w) class ids -> (h, w, 3) uint8 RGB with the model's palette (ids outside it are
    black), as `colorize.colorize_labels`."""
    palette = opts.palette if opts.palette is not None else default_palette(
        max(opts.num_classes, int(labels.max()) + 1))
    lut = _lut(palette.tobytes(), len(palette), labels.device)
    ids = labels.long()
    return lut[torch.where((ids >= 0) & (ids < len(palette)), ids, len(palette))]


@functools.lru_cache(maxsize=8)
def _lut(palette: bytes, k: int, device: torch.device) -> torch.Tensor:
    lut = torch.zeros((k + 1, 3), dtype=torch.uint8)  # the last row: black
    lut[:k] = torch.frombuffer(bytearray(palette), dtype=torch.uint8).reshape(k, 3)
    return lut.to(device)


def cloud(depth: torch.Tensor, rgb: np.ndarray | None, labels: torch.Tensor | None,
          intr: Intrinsics, opts: OutputOptions, lend: Lender) -> PointCloudData:
    """`geometry.depth_to_cloud` on the device: (h', w', words) float32 built there and copied
    into the message buffer once (dense clouds: only the valid points)."""
    s = max(1, opts.points_stride)
    z = depth[::s, ::s]
    height, width = z.shape
    valid = (z > 0) & (z < torch.inf)
    if opts.points_max_range is not None:
        valid &= z <= opts.points_max_range
    u = np.arange(0, intr.width, s, dtype=np.float32)
    v = np.arange(0, intr.height, s, dtype=np.float32)
    x_per_z = torch.from_numpy((u - np.float32(intr.cx)) / np.float32(intr.fx)).to(z.device)
    y_per_z = torch.from_numpy((v - np.float32(intr.cy)) / np.float32(intr.fy)).to(z.device)
    words = [torch.where(valid, z * x_per_z[None, :], NAN),
             torch.where(valid, z * y_per_z[:, None], NAN), torch.where(valid, z, NAN)]
    if rgb is not None:
        packed = rgb_words(rgb, s).view(np.int32)
        words.append(torch.from_numpy(packed).to(z.device).view(torch.float32))
    if labels is not None:  # uint16 + 2 zero bytes
        words.append(labels[::s, ::s].to(torch.int32).view(torch.float32))
    fields, point_step = cloud_layout(rgb is not None, labels is not None)
    grid = torch.stack(words, dim=-1)
    all_valid = bool(valid.all())
    if not opts.points_organized and not all_valid:
        grid = grid[valid]
        height, width = 1, grid.shape[0]
    data = lend((POINTS,), height * width * point_step)
    host = np.frombuffer(data, np.float32)
    torch.from_numpy(host).copy_(grid.reshape(-1))
    return PointCloudData(height=height, width=width, fields=fields, point_step=point_step,
                          row_step=point_step * width,
                          is_dense=all_valid or not opts.points_organized, data=data)


def _image(t: torch.Tensor, lend: Lender, name: str, encoding: str, dtype: Any
           ) -> dict[str, Any]:
    """Image fields of an (H, W[, C]) tensor, copied into a message buffer."""
    view, data = lend.view((name,), tuple(t.shape), dtype)
    torch.from_numpy(view).copy_(t)
    height, width = t.shape[:2]
    return {"height": int(height), "width": int(width), "encoding": encoding,
            "is_bigendian": 0, "step": int(view.strides[0]), "data": data}
