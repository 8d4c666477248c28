"""Pinhole intrinsics, depth backprojection and PointCloud2 packing, without rclpy.

Points are in the REP 103 camera optical frame: x right, y down, z forward (metres).
Pixel coordinates follow the ROS/OpenCV convention: the centre of pixel (u, v) is at the
integer coordinates (u, v), so the image spans [-0.5, width - 0.5] horizontally.
"""

from __future__ import annotations

import array
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from . import native

# sensor_msgs/PointField datatype constants.
INT8 = 1
UINT8 = 2
INT16 = 3
UINT16 = 4
INT32 = 5
UINT32 = 6
FLOAT32 = 7
FLOAT64 = 8

_FIELD_DTYPES: dict[int, str] = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
}


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, msg: Any) -> Intrinsics:
        """Read a sensor_msgs/CameraInfo (``k`` in ROS 2, ``K`` in ROS 1 style messages)."""
        k = getattr(msg, "k", None)
        if k is None:
            k = getattr(msg, "K", None)
        if k is None:
            raise ValueError("camera info has no intrinsic matrix field 'k' or 'K'")
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise ValueError(f"camera info intrinsic matrix has {k.size} values, expected 9")
        width, height = int(msg.width), int(msg.height)
        if k[0] <= 0 or k[4] <= 0:
            raise ValueError(
                f"camera is uncalibrated: fx={k[0]}, fy={k[4]} in camera info (need > 0)"
            )
        if width <= 0 or height <= 0:
            raise ValueError(f"camera info has no image size: width={width}, height={height}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), width, height)

    def scaled(self, new_width: int, new_height: int) -> Intrinsics:
        """Intrinsics of the same camera after resizing the image to new_width x new_height.

        Image edges (-0.5 and size - 0.5) map onto each other, hence cx' = (cx + 0.5)*sx - 0.5.
        """
        sx = new_width / self.width
        sy = new_height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=int(new_width),
            height=int(new_height),
        )

    def to_camera_info_fields(self) -> dict[str, Any]:
        """Fields of a rectified sensor_msgs/CameraInfo with these intrinsics."""
        fx, fy, cx, cy = self.fx, self.fy, self.cx, self.cy
        return {
            "width": self.width,
            "height": self.height,
            "distortion_model": "plumb_bob",
            "d": [],
            "k": [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        }


def backproject(depth: np.ndarray, intr: Intrinsics, stride: int = 1) -> np.ndarray:
    """Back-project a (H, W) depth image in metres into (H', W', 3) float32 optical-frame points.

    Uses every ``stride``-th pixel (starting at 0) in both directions. Invalid depth (NaN,
    inf, <= 0) gives NaN points.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D (H, W), got shape {depth.shape}")
    if depth.shape != (intr.height, intr.width):
        raise ValueError(
            f"depth shape {depth.shape} does not match intrinsics {intr.height}x{intr.width}; "
            "use Intrinsics.scaled() first"
        )
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be floating-point metres, got {depth.dtype}")
    depth = depth[::stride, ::stride]
    valid = (depth > 0) & (depth < np.inf)  # NaN compares False
    x_per_z, y_per_z = pixel_rays(intr, stride)
    points = np.empty(depth.shape + (3,), dtype=np.float32)
    z = points[..., 2]
    np.copyto(z, depth, casting="same_kind")
    np.copyto(z, np.float32(np.nan), where=~valid)
    np.multiply(z, x_per_z[None, :], out=points[..., 0])
    np.multiply(z, y_per_z[:, None], out=points[..., 1])
    return points


@dataclass
class PointCloudData:
    """Everything a sensor_msgs/PointCloud2 needs besides the header (little-endian)."""

    height: int
    width: int
    fields: list[tuple[str, int, int, int]]  # (name, offset, datatype, count)
    point_step: int
    row_step: int
    is_dense: bool
    data: bytes
    is_bigendian: bool = False


def pack_pointcloud(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    organized: bool,
    max_range: float | None = None,
) -> PointCloudData:
    """Pack points (+ colour, + class label) into PointCloud2 layout.

    Layout: x, y, z FLOAT32 at 0/4/8; ``rgb`` FLOAT32 at 12 holding the 0x00RRGGBB bits
    (PCL/RViz convention); ``label`` UINT16 at 16 followed by 2 zero padding bytes. point_step
    is 20, 16 without labels (or without rgb, the label then sits at 12) and 12 with neither.

    Points that are non-finite or whose z exceeds ``max_range`` (z rather than euclidean
    range, matching what a depth image measures) are invalid: ``organized`` keeps the HxW grid
    with NaN xyz (is_dense False if any); otherwise they are dropped (height 1, is_dense True).
    """
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must have shape (H, W, 3), got {xyz.shape}")
    height, width = xyz.shape[:2]
    if rgb is not None and (rgb.shape != (height, width, 3) or rgb.dtype != np.uint8):
        raise ValueError(f"rgb must be ({height}, {width}, 3) uint8, got {rgb.dtype} {rgb.shape}")
    if labels is not None and labels.shape != (height, width):
        raise ValueError(f"labels must have shape ({height}, {width}), got {labels.shape}")
    if labels is not None:
        _check_labels(labels)

    fields, point_step = cloud_layout(rgb is not None, labels is not None)

    if height * width == 0:
        raise ValueError(f"empty point grid of shape {xyz.shape}")

    # Every field occupies one 4-byte word, so the cloud is a cv2.merge of float32 planes
    # holding the raw bits (merge copies bits, never converts): far faster than numpy writes
    # into a strided structured array.
    xyz = np.asarray(xyz, dtype=np.float32)
    z = xyz[..., 2]
    scratch = np.add(xyz[..., 0], xyz[..., 1])
    np.add(scratch, z, out=scratch)
    valid = np.isfinite(scratch)  # a sum is finite only if all three terms are
    if max_range is not None:
        valid &= z <= max_range
    all_valid = bool(valid.all())
    # one-channel planes: cv2.merge interleaves those with SIMD (a 3-channel xyz plane would
    # send it down its per-element mixChannels path, 3-5x slower)
    planes = list(cv2.split(xyz))
    if rgb is not None:
        planes.append(rgb_words(np.ascontiguousarray(rgb)).view(np.float32))
    if labels is not None:
        planes.append(labels.astype(np.uint32).view(np.float32))  # uint16 + 2 zero bytes
    words = _workspace(height * width * point_step).view(np.float32)
    words = words.reshape(height, width, point_step // 4)
    if len(planes) > 1:
        cv2.merge(planes, words)
    else:
        words[...] = xyz
    if organized and not all_valid:
        # +0 for valid points, +NaN for invalid ones: SIMD adds, unlike np.where or masks.
        nan_bits = scratch.view(np.uint32)
        np.multiply(np.invert(valid), np.uint32(0x7FC00000), out=nan_bits)
        nan_or_zero = scratch.reshape(-1)
        columns = words.reshape(height * width, -1)
        for axis in range(3):
            np.add(columns[:, axis], nan_or_zero, out=columns[:, axis])
    points = words.reshape(-1).view(np.dtype((np.void, point_step)))
    if not organized and not all_valid:
        points = np.take(points, np.flatnonzero(valid))
    n = points.shape[0]

    out_height, out_width = (height, width) if organized else (1, n)
    return PointCloudData(
        height=out_height,
        width=out_width,
        fields=fields,
        point_step=point_step,
        row_step=point_step * out_width,
        is_dense=all_valid or not organized,
        data=points.tobytes(),
    )


def cloud_layout(rgb: bool, labels: bool) -> tuple[list[tuple[str, int, int, int]], int]:
    """(fields, point_step) of the PointCloud2 layout described in `pack_pointcloud`."""
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
    if rgb:
        fields.append(("rgb", 12, FLOAT32, 1))
    if labels:
        fields.append(("label", 12 + 4 * rgb, UINT16, 1))
    return fields, 12 + 4 * (rgb + labels)


def depth_to_cloud(
    depth: np.ndarray,
    intr: Intrinsics,
    rgb: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    stride: int = 1,
    organized: bool = True,
    max_range: float | None = None,
    new_buffer: Callable[[int], Any] | None = None,
) -> PointCloudData:
    """`backproject` + `pack_pointcloud` in one pass, written once into the message buffer.

    `depth` (H, W) metres with `rgb` (H, W, 3) uint8 and `labels` (H, W) at the same size;
    every `stride`-th pixel is used. The same points, bits and layout as
    `pack_pointcloud(backproject(depth, intr, stride), rgb[::s, ::s], labels[::s, ::s], ...)`:
    z is masked first, so x and y inherit its NaN. One-word planes (x, y, z, colour bits,
    label) are interleaved by one vectorised `cv2.merge` straight into `new_buffer(nbytes)`
    (default: a new `array.array('B')`), every byte written.
    """
    if depth.ndim != 2 or depth.shape != (intr.height, intr.width):
        raise ValueError(f"depth shape {depth.shape} does not match intrinsics "
                         f"{intr.height}x{intr.width}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if rgb is not None and (rgb.shape != (*depth.shape, 3) or rgb.dtype != np.uint8):
        raise ValueError(f"rgb must be {depth.shape + (3,)} uint8, got {rgb.dtype} {rgb.shape}")
    if labels is not None:
        if labels.shape != depth.shape:
            raise ValueError(f"labels must have shape {depth.shape}, got {labels.shape}")
        _check_labels(labels)
    fields, point_step = cloud_layout(rgb is not None, labels is not None)
    if max_range is not None:
        max_range = np.float32(max_range)  # what numpy compares float32 z with
    if native.available():
        return _native_cloud(depth, intr, rgb, labels, stride, organized, max_range,
                             new_buffer or _new_array, fields, point_step)
    z = np.array(depth[::stride, ::stride], dtype=np.float32)  # contiguous
    height, width = z.shape
    valid = (z > 0) & (z < np.inf)  # NaN compares False
    if max_range is not None:
        valid &= z <= max_range
    all_valid = bool(valid.all())
    if not all_valid:
        np.copyto(z, np.float32(np.nan), where=~valid)
    x_per_z, y_per_z = pixel_rays(intr, stride)
    planes = [z * x_per_z[None, :], z * y_per_z[:, None], z]
    if rgb is not None:
        planes.append(rgb_words(rgb, stride).view(np.float32))
    if labels is not None:  # uint16 + 2 zero bytes
        planes.append(labels[::stride, ::stride].astype(np.uint32).view(np.float32))

    nbytes = height * width * point_step
    dense_from_grid = not organized and not all_valid
    buffer = _workspace(nbytes) if dense_from_grid else (new_buffer or _new_array)(nbytes)
    words = np.frombuffer(buffer, np.float32, count=nbytes // 4).reshape(height, width, -1)
    merged = cv2.merge(planes, words)
    if merged.__array_interface__["data"][0] != words.__array_interface__["data"][0]:
        np.copyto(words, merged)  # cv2 allocated (it does not for a matching dst)
    data: Any = buffer
    if dense_from_grid:
        rows = words.reshape(-1).view(np.dtype((np.void, point_step)))
        keep = np.flatnonzero(valid)
        data = (new_buffer or _new_array)(keep.size * point_step)
        np.take(rows, keep, out=np.frombuffer(data, rows.dtype, count=keep.size))
        height, width = 1, keep.size
    return PointCloudData(height=height, width=width, fields=fields, point_step=point_step,
                          row_step=point_step * width, is_dense=all_valid or not organized,
                          data=data)


@functools.lru_cache(maxsize=32)
def pixel_rays(intr: Intrinsics, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """float32 x/z of every stride-th column and y/z of every stride-th row (read-only: cached
    per camera and stride)."""
    u = np.arange(0, intr.width, stride, dtype=np.float32)
    v = np.arange(0, intr.height, stride, dtype=np.float32)
    rays = ((u - np.float32(intr.cx)) / np.float32(intr.fx),
            (v - np.float32(intr.cy)) / np.float32(intr.fy))
    for r in rays:
        r.flags.writeable = False
    return rays


def _native_cloud(depth: np.ndarray, intr: Intrinsics, rgb: np.ndarray | None,
                  labels: np.ndarray | None, stride: int, organized: bool,
                  max_range: np.float32 | None, new_buffer: Callable[[int], Any],
                  fields: list, point_step: int) -> PointCloudData:
    """`depth_to_cloud` in one pass of `native.cloud` (the same bytes): each point written
    once into the message buffer; a dense cloud counts its valid points first."""
    depth = _items_contiguous(depth, np.float32)
    if rgb is not None:
        rgb = rgb if rgb.strides[1:] == (3, 1) else np.ascontiguousarray(rgb)
    if labels is not None:
        labels = _items_contiguous(labels, labels.dtype if labels.dtype in (np.uint8, np.uint16)
                                   else np.uint16)  # others were range-checked
    x_per_z, y_per_z = pixel_rays(intr, stride)
    height, width = len(y_per_z), len(x_per_z)
    count = height * width
    dense = False
    if not organized:
        valid = native.cloud_count(depth, stride, max_range)
        dense = valid < count
        height, width, count = (1, valid, valid) if dense else (height, width, count)
    data = new_buffer(count * point_step)
    valid = native.cloud(depth, stride, x_per_z, y_per_z, max_range, rgb, labels, dense, data)
    return PointCloudData(height=height, width=width, fields=fields, point_step=point_step,
                          row_step=point_step * width, is_dense=valid == count, data=data)


def _items_contiguous(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """`arr` as `dtype` with adjacent items in each row (rows may keep any stride)."""
    if arr.dtype != dtype:
        return arr.astype(dtype)
    return arr if arr.strides[-1] == arr.itemsize else np.ascontiguousarray(arr)


def rgb_words(rgb: np.ndarray, stride: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H', W') uint32 0x00RRGGBB of every stride-th pixel
    (little-endian bytes B, G, R, 0: PCL/RViz's packed rgb)."""
    bgra = cv2.cvtColor(rgb[::stride], cv2.COLOR_RGB2BGRA)  # rows: a strided Mat, no copy
    words = bgra.view("<u4")[..., 0]
    if stride == 1:
        return np.bitwise_and(words, np.uint32(0x00FFFFFF), out=words)
    return np.bitwise_and(words[:, ::stride], np.uint32(0x00FFFFFF))


def _new_array(nbytes: int) -> Any:
    return array.array("B", b"\0") * nbytes


_WORKSPACES = threading.local()


def _workspace(nbytes: int) -> np.ndarray:
    """A per-thread scratch buffer reused across frames.

    Allocating a fresh multi-MB buffer per frame lets glibc hand the pages back to the OS and
    fault them in again on every call, which costs more than the packing itself in a VM.
    """
    buffer = getattr(_WORKSPACES, "buffer", None)
    if buffer is None or buffer.size != nbytes:
        buffer = _WORKSPACES.buffer = np.empty(nbytes, dtype=np.uint8)
    return buffer


def _check_labels(labels: np.ndarray) -> None:
    if labels.dtype in (np.uint8, np.uint16):
        return
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(
            f"labels must lie in [0, 65535] for the UINT16 field, got "
            f"[{labels.min()}, {labels.max()}]"
        )


def unpack_pointcloud(
    data: bytes,
    fields: Sequence[Any],
    point_step: int,
    height: int,
    width: int,
    is_bigendian: bool = False,
) -> dict[str, np.ndarray]:
    """Decode PointCloud2 data into name -> (height, width[, count]) arrays.

    ``fields`` holds (name, offset, datatype, count) tuples or PointField-like objects.
    """
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for field in fields:
        if isinstance(field, tuple):
            name, offset, datatype, count = field
        else:
            name, offset, datatype, count = field.name, field.offset, field.datatype, field.count
        if datatype not in _FIELD_DTYPES:
            raise ValueError(f"field {name!r} has unknown PointField datatype {datatype}")
        names.append(name)
        base = order + _FIELD_DTYPES[datatype]
        formats.append(base if count == 1 else (base, (int(count),)))
        offsets.append(int(offset))
    dtype = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)}
    )
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(_bytes_like(data), np.uint8)
    expected = point_step * height * width
    if buf.size < expected:
        raise ValueError(f"point cloud data has {buf.size} bytes, expected {expected}")
    points = buf[:expected].view(dtype).reshape(height, width)
    return {name: points[name].astype(points[name].dtype.newbyteorder("=")) for name in names}


def _bytes_like(data: Any) -> Any:
    return bytes(data) if isinstance(data, (list, tuple)) else memoryview(data).cast("B")


def unpack_rgb(rgb_field: np.ndarray) -> np.ndarray:
    """The FLOAT32 ``rgb`` field (0x00RRGGBB bits) -> (..., 3) uint8 RGB."""
    packed = np.ascontiguousarray(rgb_field, dtype=np.float32).view(np.uint32)
    return np.stack(
        [(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=-1
    ).astype(np.uint8)
