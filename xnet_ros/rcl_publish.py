"""Publishing the node's images and point clouds serialized in place, through rcl.

rclpy's `Publisher.publish(msg)` copies the message's data into a C message
(`convert_from_py`), the middleware serializes it into its own buffer, and all of it runs with
the GIL held (rclpy's publisher.cpp releases it nowhere): at 1080p, ~13 ms per frame during
which no other thread of the node runs Python. Here the node's outputs are built straight into
buffers with room around the data (`outputs.BufferPool(headroom=True)`), the message's other
fields are serialized into that room (`cdr`), and the slice goes to rcl's public
`rcl_publish_serialized_message` through ctypes, which releases the GIL for the call: one copy
fewer, and the inference thread keeps running while the middleware sends. The depth image's
camera_info, a few hundred bytes, is serialized whole (`cdr.camera_info`): 0.16 -> 0.07 ms per
frame at 640x480, the rest being rcl's own call (docs/benchmarks.md).

`SerializedPublishing.load()` checks, before it is used, that `cdr` writes exactly the bytes
`rclpy.serialization.serialize_message` writes for these types under the running middleware;
when it cannot (no librcl, an rclpy without `Publisher.pointer`, other bytes), the node says
why once and publishes with rclpy as before.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from .cdr import (
    Framed,
    camera_info,
    cloud_prefix,
    cloud_suffix,
    frame_bytes,
    frame_in_place,
    image_prefix,
)
from .geometry import Intrinsics, depth_to_cloud
from .outputs import BufferPool, Lender
from .params import COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from .ros_messages import output_msg

SERIALIZED_IMAGES = (DEPTH, LABELS, COLOR)
LIBRARIES = {"darwin": ("librcl.dylib",), "win32": ("rcl.dll",)}.get(sys.platform,
                                                                      ("librcl.so",))


class SerializedMessage(ctypes.Structure):
    """rcl_serialized_message_t (rcutils_uint8_array_t): buffer, length, capacity, allocator."""

    _fields_ = [("buffer", ctypes.c_void_p), ("buffer_length", ctypes.c_size_t),
                ("buffer_capacity", ctypes.c_size_t), ("allocator", ctypes.c_void_p * 5)]


class ErrorString(ctypes.Structure):
    _fields_ = [("str", ctypes.c_char * 1024)]  # rcutils_error_string_t


def frame_output(name: str, header: Any, fields: Any) -> Framed | None:
    """The serialized message of an image or point-cloud output, in place around its data
    (camera_info: a few hundred bytes of its own); None when it cannot be (another output,
    data without room around it)."""
    stamp, frame_id = (header.stamp.sec, header.stamp.nanosec), header.frame_id
    if name == POINTS:
        data = fields.data
        if not isinstance(data, memoryview):
            return None
        return frame_in_place(data, cloud_prefix(stamp, frame_id, fields, data.nbytes),
                              cloud_suffix(fields))
    if name == DEPTH_INFO:
        return frame_bytes(camera_info(stamp, frame_id, fields))
    if name in SERIALIZED_IMAGES:
        data = fields["data"]
        if not isinstance(data, memoryview):
            return None
        return frame_in_place(data, image_prefix(stamp, frame_id, fields, data.nbytes))
    return None


class SerializedPublishing:
    """`publish(pub, name, header, fields)`: True when the output went out serialized in place,
    False when the caller publishes it with rclpy (not an image or cloud, no room, or an
    inactive lifecycle publisher: rclpy decides what that means)."""

    def __init__(self, rcl: ctypes.CDLL, rcutils: ctypes.CDLL | None = None):
        self._publish = rcl.rcl_publish_serialized_message
        self._publish.argtypes = [ctypes.c_void_p, ctypes.POINTER(SerializedMessage),
                                  ctypes.c_void_p]
        self._publish.restype = ctypes.c_int32
        self._error, self._reset = None, None
        if rcutils is not None:
            self._error = rcutils.rcutils_get_error_string
            self._error.restype = ErrorString
            self._reset = rcutils.rcutils_reset_error

    @classmethod
    def load(cls) -> tuple[SerializedPublishing | None, str]:
        """(publishing, '') or (None, why not)."""
        try:
            rcl = _open(LIBRARIES)
            rcutils = _open(tuple(n.replace("rcl", "rcutils", 1) for n in LIBRARIES))
            mismatch = self_check()
        except (OSError, AttributeError) as exc:
            return None, f"rcl is not reachable through ctypes ({exc})"
        if mismatch:
            return None, mismatch
        return cls(rcl, rcutils), ""

    def publish(self, pub: Any, name: str, header: Any, fields: Any) -> bool:
        handle = pub.handle
        if not getattr(pub, "is_activated", True) or not hasattr(handle, "pointer"):
            return False
        framed = frame_output(name, header, fields)
        if framed is None:
            return False
        message = SerializedMessage(framed.address, framed.length, framed.length)
        with handle:  # rclpy's guard: the publisher is not destroyed during the call
            ret = self._publish(handle.pointer, ctypes.byref(message), None)
        if ret != 0:
            raise RuntimeError(f"rcl_publish_serialized_message on {pub.topic_name} failed "
                               f"({ret}): {self._take_error()}")
        return True

    def _take_error(self) -> str:
        if self._error is None:
            return "no rcutils"
        message = self._error().str.decode(errors="replace")
        self._reset()
        return message


def _open(names: tuple[str, ...]) -> ctypes.CDLL:
    """The library by name: the one rclpy already loaded (same soname) where there is one."""
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
    raise OSError("; ".join(errors))


def self_check() -> str:
    """'' when `cdr` serializes sample images, clouds and camera infos as the middleware
    does (the same length and encapsulation, and they deserialize to the messages), else what
    differs."""
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
    lend = Lender(BufferPool(headroom=True))
    samples = []
    for encoding, width, pixel_bytes in (("32FC1", 5, 4), ("mono8", 3, 1), ("rgb8", 7, 3)):
        data = lend((encoding,), 2 * width * pixel_bytes)
        data[:] = bytes(range(len(data)))
        samples.append((DEPTH, {"height": 2, "width": width, "encoding": encoding,
                                "is_bigendian": 0, "step": width * pixel_bytes, "data": data}))
    depth = np.array([[1.0, np.nan, 2.0], [0.5, 3.0, np.inf]], np.float32)
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    intr = Intrinsics(fx=2.0, fy=2.0, cx=1.0, cy=0.5, width=3, height=2)
    for organized in (True, False):
        samples.append((POINTS, depth_to_cloud(depth, intr, rgb, np.ones((2, 3), np.uint8),
                                               organized=organized, new_buffer=functools.partial(
                                                   lend, (POINTS, organized)))))
    info = intr.to_camera_info_fields()
    samples += [(DEPTH_INFO, info), (DEPTH_INFO, {**info, "d": [0.1, -0.2, 0.0, 0.001, 0.3],
                                                  "binning_x": 2, "distortion_model": ""})]
    for name, fields in samples:
        framed = frame_output(name, header, fields)
        if framed is None:
            return f"{name} was not serialized in place"
        ours = ctypes.string_at(framed.address, framed.length)
        msg = output_msg(name, header, fields)
        theirs = serialize_message(msg)  # its alignment padding is uninitialised memory
        if len(ours) != len(theirs) or ours[:4] != theirs[:4] or deserialize_message(
                ours, type(msg)) != msg:
            return (f"the in-place serialization of {name} differs from the middleware's "
                    f"({len(ours)} against {len(theirs)} bytes)")
    return ""
