"""ROS-free construction of everything the node publishes for one frame.

`pipeline.FramePipeline.finish` calls `build_outputs`; the node (rclpy) and the offline bag tools
(rosbags) only wrap the returned fields into their own message classes, so both publish
identical data.

The camera-rate hot path (issue 11, docs/benchmarks.md). Depth and labels arrive as the network
produced them (`Predictor.predict_batch(..., raw=True)`: at the network's resolution) or already
at the image's. Each output is resized, masked, coloured or back-projected once, straight into
the `array.array` its message keeps (rclpy's uint8[] setters store one as is): no `tobytes`, no
intermediate merges or contiguous copies. `BufferPool` lends those buffers frame after frame to a
consumer that gives them back once published (rclpy copies on publish). Predictions left on a
CUDA device as torch tensors are finished there (`device_outputs`), each final array copied to
the host once.

Resizing composes exactly what the Predictor and the outputs did before: source -> the input
image's size (bilinear depth, nearest labels) -> the output size when it differs. Colours are
looked up at the source resolution and then resized with the labels' nearest-neighbour indices
(the same pixels, 1/100 of the lookups).
"""

from __future__ import annotations

import array
import functools
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from xnet_model.memory import tune_malloc

from . import native
from .cdr import HEADROOM, TAILROOM
from .colorize import colorize_labels, default_palette, palette_table
from .geometry import Intrinsics, PointCloudData, depth_to_cloud
from .params import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from .params import POINTS_RESOLUTION_CHOICES as POINTS_RESOLUTIONS

__all__ = ["ALL_OUTPUTS", "COLOR", "DEPTH", "DEPTH_INFO", "LABELS", "POINTS", "POINTS_RESOLUTIONS",
           "BufferPool", "FrameOutputs", "OutputOptions", "build_outputs", "raw_predictions",
           "tune_malloc"]


@dataclass
class OutputOptions:
    output_size: tuple[int, int] | None = None  # (H, W); None = the input image's size
    min_depth: float = 1e-3  # depth below this (or NaN) is published as NaN (REP 118)
    points_stride: int = 1
    points_max_range: float | None = None  # metres along z; None = keep all
    points_organized: bool = True
    palette: np.ndarray | None = None  # (K, 3) uint8; None = default_palette(K)
    num_classes: int = 0
    points_resolution: str = "output"  # output: the published depth; network: the model's

    @classmethod
    def for_model(cls, meta: Any, min_depth: float | None = 0.0, **settings: Any
                  ) -> OutputOptions:
        """Options for a model (its palette and classes; `min_depth` 0/None = the model's),
        from its `xnet_model.ModelMetadata`."""
        palette = meta.palette_array() if meta.num_classes else None
        return cls(min_depth=min_depth or meta.min_depth, palette=palette,
                   num_classes=meta.num_classes, **settings)


# --------------------------------------------------------------------------------- buffers
def new_buffer(nbytes: int) -> array.array:
    """A zeroed `array.array('B')` (the repeat is a memset, 4x faster than bytes(n))."""
    return array.array("B", b"\0") * nbytes


class BufferPool:
    """Message data buffers (`array.array('B')`) lent per frame and reused once given back.

    rclpy's `publish` copies the message into the middleware before it returns (rclpy
    `Publisher::publish`: `convert_from_py` into a C message, `rcl_publish`, destroy), so once
    a frame's messages are published the node calls `FrameOutputs.release()` and the next
    frame writes into the same memory: no allocation, no page faults. Outputs that are never
    released (the bag tools hand them to a writer thread) are garbage-collected as usual. A key
    names the output (every byte of a buffer is rewritten each frame). At most `keep` free
    buffers per output and size (one per frame in flight: cameras of a batch), sizes no longer
    used are forgotten. Thread-safe.

    `headroom=True`: each buffer keeps `cdr.HEADROOM` bytes before the data and `cdr.TAILROOM`
    after it, and the data is lent as a memoryview slice: the node serializes the message around
    it in place (`cdr.frame_in_place`, `rcl_publish`).
    """

    def __init__(self, keep: int = 8, max_keys: int = 32, headroom: bool = False):
        self.keep, self.max_keys = keep, max_keys
        self.room = (HEADROOM, TAILROOM) if headroom else (0, 0)
        self._free: OrderedDict[tuple, list[array.array]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: tuple, nbytes: int) -> array.array:
        """A buffer for `nbytes` of data and the pool's room around it."""
        nbytes += sum(self.room)
        with self._lock:
            free = self._free.get((*key, nbytes))
            if free:
                return free.pop()
        return new_buffer(nbytes)

    def data_of(self, buffer: array.array, nbytes: int) -> Any:
        """Where the data goes in a buffer from `take`: the buffer itself, or its slice."""
        head = self.room[0]
        return memoryview(buffer)[head:head + nbytes] if any(self.room) else buffer

    def give_back(self, key: tuple, buffer: array.array) -> None:
        full_key = (*key, len(buffer))
        with self._lock:
            free = self._free.setdefault(full_key, [])
            self._free.move_to_end(full_key)
            if len(free) < self.keep:
                free.append(buffer)
            while len(self._free) > self.max_keys:  # sizes no longer in use
                self._free.popitem(last=False)


class Lender:
    """Buffers for one frame: from a pool (remembered, to give back) or new ones."""

    def __init__(self, pool: BufferPool | None):
        self.pool = pool
        self.leases: list[tuple[tuple, array.array]] = []

    def __call__(self, key: tuple, nbytes: int) -> array.array:
        if self.pool is None:
            return new_buffer(nbytes)
        buffer = self.pool.take(key, nbytes)
        self.leases.append((key, buffer))
        return self.pool.data_of(buffer, nbytes)

    def view(self, key: tuple, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, Any]:
        """(numpy view of a new buffer with this shape and dtype, the buffer)."""
        dtype = np.dtype(dtype)
        buffer = self(key, math.prod(shape) * dtype.itemsize)
        return np.frombuffer(buffer, dtype).reshape(shape), buffer


@dataclass
class FrameOutputs:
    """Message fields per output name: image/camera-info dicts, or a PointCloudData. Image
    `data` and cloud `data` are `array.array('B')`."""

    fields: dict[str, Any] = field(default_factory=dict)
    intrinsics: Intrinsics | None = None  # at the output resolution
    lender: Lender | None = None

    def release(self) -> None:
        """The messages are published (copied): lend their buffers to later frames. The fields
        are dropped, so nothing reads memory another frame writes."""
        lender, self.lender = self.lender, None
        self.fields = {}
        if lender is not None and lender.pool is not None:
            for key, buffer in lender.leases:
                lender.pool.give_back(key, buffer)


def raw_predictions(predictor: Any) -> dict[str, bool]:
    """{'raw': True} for a predictor whose `predict_batch` hands over the network's outputs
    as they are (`Predictor.predict_batch(raw=True)`: `build_outputs` resizes them straight
    into the message buffers, on the GPU when they are there); {} for others (predictions at
    the image's resolution)."""
    return {"raw": True} if _takes_raw(type(predictor)) else {}


@functools.lru_cache(maxsize=16)
def _takes_raw(cls: type) -> bool:
    import inspect

    fn = getattr(cls, "predict_batch", None)
    return fn is not None and "raw" in inspect.signature(fn).parameters


# ---------------------------------------------------------------------------------- sizes
def resize_steps(source: tuple[int, int], frame: tuple[int, int], output: tuple[int, int]
                 ) -> tuple[tuple[int, int], ...]:
    """The sizes a prediction passes through: the input image's (what the Predictor resized
    to) when it differs from the source, then the output size when that differs."""
    return tuple(s for s, needed in ((frame, source != frame), (output, output != frame))
                 if needed)


def label_dtype(labels: Any, num_classes: int) -> np.dtype:
    """uint8/uint16 labels keep their type; others (the network's int32) get the Predictor's:
    uint8 up to 256 classes, else uint16."""
    dtype = labels.dtype if isinstance(labels, np.ndarray) else np.dtype(
        str(labels.dtype).replace("torch.", ""))
    if dtype in (np.uint8, np.uint16):
        return dtype
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def mask_threshold(min_depth: float) -> float:
    """A source whose values all exceed this needs no masking after bilinear resizing (convex
    combinations never go below the smallest input; the margin covers float rounding)."""
    return min_depth + abs(min_depth) * 1e-5 + 1e-30


@functools.lru_cache(maxsize=128)
def nearest_indices(src: int, dst: int) -> np.ndarray:
    """The source index cv2's INTER_NEAREST takes for each of `dst` positions (along either
    axis). Read from cv2 itself, so gathering with them reproduces cv2.resize exactly."""
    idx = cv2.resize(np.arange(src, dtype=np.int32)[None, :], (dst, 1),
                     interpolation=cv2.INTER_NEAREST)[0].astype(np.intp)
    idx.flags.writeable = False
    return idx


@functools.lru_cache(maxsize=64)
def nearest_maps(source: tuple[int, int], steps: tuple[tuple[int, int], ...]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols): the source pixel of each output pixel after nearest resizes through
    `steps` (composed, so one gather does them all)."""
    rows, cols = np.arange(source[0]), np.arange(source[1])
    for h, w in steps:
        rows, cols = rows[nearest_indices(len(rows), h)], cols[nearest_indices(len(cols), w)]
    return rows, cols


def _nearest_into(src: np.ndarray, steps: tuple, dst: np.ndarray) -> None:
    """cv2 INTER_NEAREST resizes through `steps` as two gathers: columns of whole pixels, then
    whole rows (a memcpy each). 3-4x faster than cv2.resize, the same pixels."""
    if not steps:
        np.copyto(dst, src, casting="unsafe")
        return
    rows, cols = nearest_maps(src.shape[:2], steps)
    rgb = src.ndim == 3
    if rgb:  # 3-byte pixels as uint32 for the column gather (numpy is slow on 3-byte items)
        src = cv2.cvtColor(src, cv2.COLOR_RGB2RGBA).view(np.uint32)[..., 0]
    wide = np.take(src, cols, axis=1, mode="clip")  # in range: clip only skips buffering
    if rgb:
        wide = cv2.cvtColor(wide.view(np.uint8).reshape(*wide.shape, 4), cv2.COLOR_RGBA2RGB)
    row_bytes = dst.strides[0]
    np.take(wide.reshape(len(wide), -1).view(np.uint8).reshape(len(wide), row_bytes), rows,
            axis=0, out=dst.reshape(len(dst), -1).view(np.uint8).reshape(len(dst), row_bytes),
            mode="clip")


def _labels_into(src: np.ndarray, steps: tuple, labels_out: np.ndarray | None,
                 palette: np.ndarray | None, color_out: np.ndarray | None) -> None:
    """Labels resized through `steps` (nearest) into labels_out and their colours into
    color_out (either may be None): one native pass for both, else numpy (colours looked up
    at the source's resolution, then resized the same way)."""
    if labels_out is None and color_out is None:
        return
    if native.available():
        lut = None if palette is None else palette_table(palette)
        native.nearest_labels(src, *nearest_maps(src.shape, steps), labels_out, lut, color_out)
        return
    if labels_out is not None:
        _nearest_into(src, steps, labels_out)
    if color_out is not None:
        _nearest_into(colorize_labels(src, palette), steps, color_out)


def _linear_into(src: np.ndarray, steps: tuple, dst: np.ndarray) -> None:
    """cv2 INTER_LINEAR resizes through `steps` (the Predictor's, then the output size), the
    last one straight into dst."""
    if not steps:
        np.copyto(dst, src, casting="unsafe")
        return
    for h, w in steps[:-1]:
        src = cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
    h, w = steps[-1]
    out = cv2.resize(src, (w, h), dst=dst, interpolation=cv2.INTER_LINEAR)
    if out.__array_interface__["data"][0] != dst.__array_interface__["data"][0]:
        np.copyto(dst, out)  # cv2 allocated (it does not for a matching dst)


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A per-thread work array reused across frames (outputs nobody publishes)."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    arr = arrays.get(name)
    if arr is None or arr.shape != shape or arr.dtype != dtype:
        arr = arrays[name] = np.empty(shape, dtype)
    return arr


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


# --------------------------------------------------------------------------------- outputs
def build_outputs(rgb: np.ndarray, depth: Any, labels: Any, intrinsics: Intrinsics | None,
                  opts: OutputOptions, wanted: set[str] | frozenset[str] = frozenset(ALL_OUTPUTS),
                  buffers: BufferPool | None = None) -> FrameOutputs:
    """Fields for each wanted output that the model can produce.

    `rgb` is the input image (HxWx3 uint8 RGB), `depth`/`labels` the prediction at the network's
    or the image's resolution (numpy, or torch tensors: finished on their device),
    `intrinsics` those of the input image (None: no depth/camera_info and no points).
    `buffers`: where message buffers come from (None = new ones).
    """
    if _is_tensor(depth) or _is_tensor(labels):
        from .device_outputs import build_outputs_torch

        return build_outputs_torch(rgb, depth, labels, intrinsics, opts, wanted, buffers)
    frame = rgb.shape[:2]
    size = tuple(opts.output_size or frame)
    lend = Lender(buffers)
    out = FrameOutputs(lender=lend)
    if intrinsics is not None:
        out.intrinsics = intrinsics.scaled(size[1], size[0])
    points = POINTS in wanted and out.intrinsics is not None and depth is not None
    from_network = points and opts.points_resolution == "network"
    depth_full = labels_full = None
    if depth is not None:
        depth = np.asarray(depth, np.float32)
        if DEPTH in wanted or (points and not from_network):
            if DEPTH in wanted:
                depth_full, data = lend.view((DEPTH,), size, np.float32)
                out.fields[DEPTH] = _image_fields(data, size, "32FC1", 4)
            else:
                depth_full = _scratch("depth", size, np.float32)
            _linear_into(depth, resize_steps(depth.shape, frame, size), depth_full)
            _mask_depth(depth_full, depth, opts.min_depth)
        if DEPTH_INFO in wanted and out.intrinsics is not None:
            out.fields[DEPTH_INFO] = out.intrinsics.to_camera_info_fields()
    if labels is not None:
        labels = np.asarray(labels)
        labels = labels.astype(label_dtype(labels, opts.num_classes), copy=False)
        color = palette = None
        if LABELS in wanted or (points and not from_network):
            if LABELS in wanted:
                labels_full, data = lend.view((LABELS,), size, labels.dtype)
                encoding = "mono8" if labels.dtype == np.uint8 else "mono16"
                out.fields[LABELS] = _image_fields(data, size, encoding, labels.itemsize)
            else:
                labels_full = _scratch("labels", size, labels.dtype)
        if COLOR in wanted:
            palette = opts.palette if opts.palette is not None else default_palette(
                max(opts.num_classes, int(labels.max()) + 1))
            color, data = lend.view((COLOR,), (*size, 3), np.uint8)
            out.fields[COLOR] = _image_fields(data, size, "rgb8", 3)
        _labels_into(labels, resize_steps(labels.shape, frame, size), labels_full, palette,
                     color)
    if points:
        if from_network:
            out.fields[POINTS] = _network_points(rgb, depth, labels, intrinsics, opts, lend)
        else:
            if size != frame:
                rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            out.fields[POINTS] = _cloud(depth_full, rgb, labels_full, out.intrinsics, opts,
                                        lend)
    return out


def _image_fields(data: array.array, size: tuple[int, int], encoding: str, pixel_bytes: int
                  ) -> dict[str, Any]:
    return {"height": int(size[0]), "width": int(size[1]), "encoding": encoding,
            "is_bigendian": 0, "step": int(size[1]) * pixel_bytes, "data": data}


def _mask_depth(depth: np.ndarray, source: np.ndarray, min_depth: float) -> None:
    """NaN where depth is not above min_depth (NaN included), in place; skipped when the
    finite source clears it everywhere (then so does every bilinear blend of it)."""
    threshold = mask_threshold(min_depth)
    if native.available() and source.flags.c_contiguous:
        if native.all_above(source, threshold):
            return
    elif source.size:
        lo, hi = float(source.min()), float(source.max())  # NaN if any is
        if np.isfinite(lo) and np.isfinite(hi) and lo > threshold:
            return
    np.copyto(depth, np.float32(np.nan), where=~(depth > min_depth))


def _cloud(depth: np.ndarray, rgb: np.ndarray | None, labels: np.ndarray | None,
           intrinsics: Intrinsics, opts: OutputOptions, lend: Lender) -> PointCloudData:
    return depth_to_cloud(depth, intrinsics, rgb, labels, stride=max(1, opts.points_stride),
                          organized=opts.points_organized, max_range=opts.points_max_range,
                          new_buffer=lambda nbytes: lend((POINTS,), nbytes))


def _network_points(rgb: np.ndarray, depth: np.ndarray, labels: np.ndarray | None,
                    intrinsics: Intrinsics, opts: OutputOptions, lend: Lender
                    ) -> PointCloudData:
    """The cloud from the depth as the model produced it (no interpolated depth): intrinsics
    scaled to that size, colours resized to it as the network's input was."""
    h, w = depth.shape
    depth = np.where(depth > opts.min_depth, depth, np.float32(np.nan))
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    if labels is not None and labels.shape != (h, w):
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return _cloud(depth, rgb, labels, intrinsics.scaled(w, h), opts, lend)
