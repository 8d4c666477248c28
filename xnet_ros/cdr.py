"""ROS-free CDR serialization of the node's large outputs, around data already in place.

An output's data is built straight into a buffer with room before and after it
(`outputs.BufferPool(headroom=True)`); the bytes of the message that come before the data
(encapsulation, header, dimensions, the data's length) are written into the room before it, those
after it (PointCloud2's `is_dense`) into the room after it, and the whole serialized message is
one contiguous slice handed to `rcl_publish_serialized_message` (`rcl_publish`). Nothing copies
the data on its way to the middleware.

The encoding is plain little-endian CDR (XCDR1, encapsulation CDR_LE), what
`rclpy.serialization.serialize_message` produces for these types with every middleware ROS 2
ships; `rcl_publish.self_check` compares ours with it before the node uses it.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any

from .native import address

ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little-endian, no options
HEADROOM = 512  # bytes kept before each data buffer: an Image or PointCloud2 prefix
TAILROOM = 8  # bytes kept after it: PointCloud2's is_dense


class CdrWriter:
    """Appends CDR primitives; alignment counts from the end of the encapsulation."""

    def __init__(self) -> None:
        self.out = bytearray(ENCAPSULATION)

    def align(self, size: int) -> None:
        self.out += b"\0" * (-(len(self.out) - len(ENCAPSULATION)) % size)

    def u8(self, value: int) -> None:
        self.out += struct.pack("<B", value)

    def u32(self, value: int) -> None:
        self.align(4)
        self.out += struct.pack("<I", value)

    def i32(self, value: int) -> None:
        self.align(4)
        self.out += struct.pack("<i", value)

    def string(self, value: str) -> None:
        encoded = value.encode() + b"\0"
        self.u32(len(encoded))
        self.out += encoded

    def f64s(self, values: Any) -> None:
        """Doubles (an array, or a sequence's elements after its length)."""
        if len(values):
            self.align(8)
            self.out += struct.pack(f"<{len(values)}d", *values)

    def header(self, stamp: tuple[int, int], frame_id: str) -> None:
        self.i32(stamp[0])
        self.u32(stamp[1])
        self.string(frame_id)


STAMP = struct.Struct("<iI")  # header.stamp, right after the encapsulation: sec, nanosec


def with_stamp(template: bytes, stamp: tuple[int, int]) -> bytes:
    """A message (prefix) serialized with stamp (0, 0), given its stamp."""
    return b"".join((template[:4], STAMP.pack(*stamp), template[4 + STAMP.size:]))


def image_prefix(stamp: tuple[int, int], frame_id: str, fields: dict[str, Any],
                 nbytes: int) -> bytes:
    """sensor_msgs/Image up to its data (`fields` as `outputs.build_outputs` makes them)."""
    return with_stamp(_image_prefix(frame_id, fields["height"], fields["width"],
                                    fields["encoding"], fields["is_bigendian"], fields["step"],
                                    nbytes), stamp)


@functools.lru_cache(maxsize=64)  # per camera, output and size: only the stamp changes
def _image_prefix(frame_id: str, height: int, width: int, encoding: str, is_bigendian: int,
                  step: int, nbytes: int) -> bytes:
    w = CdrWriter()
    w.header((0, 0), frame_id)
    w.u32(height)
    w.u32(width)
    w.string(encoding)
    w.u8(is_bigendian)
    w.u32(step)
    w.u32(nbytes)  # uint8[] length
    return bytes(w.out)


def cloud_prefix(stamp: tuple[int, int], frame_id: str, pc: Any, nbytes: int) -> bytes:
    """sensor_msgs/PointCloud2 up to its data (`pc` a `geometry.PointCloudData`)."""
    return with_stamp(_cloud_prefix(frame_id, pc.height, pc.width, tuple(map(tuple, pc.fields)),
                                    bool(pc.is_bigendian), pc.point_step, pc.row_step, nbytes),
                      stamp)


@functools.lru_cache(maxsize=64)
def _cloud_prefix(frame_id: str, height: int, width: int, fields: tuple, is_bigendian: bool,
                  point_step: int, row_step: int, nbytes: int) -> bytes:
    w = CdrWriter()
    w.header((0, 0), frame_id)
    w.u32(height)
    w.u32(width)
    w.u32(len(fields))
    for name, offset, datatype, count in fields:
        w.string(name)
        w.u32(offset)
        w.u8(datatype)
        w.u32(count)
    w.u8(is_bigendian)
    w.u32(point_step)
    w.u32(row_step)
    w.u32(nbytes)
    return bytes(w.out)


def camera_info(stamp: tuple[int, int], frame_id: str, fields: dict[str, Any]) -> bytes:
    """The whole serialized sensor_msgs/CameraInfo of `fields` (as
    `Intrinsics.to_camera_info_fields` makes them; absent fields are the message's defaults)."""
    return with_stamp(_camera_info(
        frame_id, fields["height"], fields["width"], fields.get("distortion_model", ""),
        *(tuple(fields.get(name, (0.0,) * size)) for name, size in CAMERA_ARRAYS),
        fields.get("binning_x", 0), fields.get("binning_y", 0)), stamp)


CAMERA_ARRAYS = (("d", 0), ("k", 9), ("r", 9), ("p", 12))


@functools.lru_cache(maxsize=64)
def _camera_info(frame_id: str, height: int, width: int, distortion_model: str, d: tuple,
                 k: tuple, r: tuple, p: tuple, binning_x: int, binning_y: int) -> bytes:
    w = CdrWriter()
    w.header((0, 0), frame_id)
    w.u32(height)
    w.u32(width)
    w.string(distortion_model)
    w.u32(len(d))
    for values in (d, k, r, p):
        w.f64s(values)
    w.u32(binning_x)
    w.u32(binning_y)
    for _ in range(4):  # roi: x_offset, y_offset, height, width (a full-image ROI: zeros)
        w.u32(0)
    w.u8(0)  # roi.do_rectify
    return bytes(w.out)


def frame_bytes(serialized: bytes) -> Framed:
    """A whole serialized message held in `serialized` itself."""
    return Framed(serialized, address(memoryview(serialized)), len(serialized))


def cloud_suffix(pc: Any) -> bytes:
    return struct.pack("<B", bool(pc.is_dense))


@dataclass(frozen=True)
class Framed:
    """A serialized message in place: `length` bytes at address `address`, which stay valid as
    long as `base` (the buffer that holds the data) does."""

    base: Any
    address: int
    length: int


def frame_in_place(data: Any, prefix: bytes, suffix: bytes = b"") -> Framed | None:
    """Write `prefix` just before and `suffix` just after `data` (a non-empty memoryview slice
    of a writable buffer, as `outputs.BufferPool(headroom=True)` lends them) and return the
    serialized message; None when `data` is not such a slice or the room does not suffice."""
    if (not isinstance(data, memoryview) or data.readonly or not data.c_contiguous
            or not data.nbytes):
        return None
    base = memoryview(data.obj).cast("B")
    base_address = address(base)
    start = address(data) - base_address
    if start < len(prefix) or start + data.nbytes + len(suffix) > base.nbytes:
        return None
    end = start + data.nbytes
    base[start - len(prefix):start] = prefix
    base[end:end + len(suffix)] = suffix
    return Framed(data.obj, base_address + start - len(prefix),
                  len(prefix) + data.nbytes + len(suffix))
