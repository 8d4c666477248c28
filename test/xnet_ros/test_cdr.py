"""cdr: the bytes of sensor_msgs/Image and PointCloud2 around data already in place (ROS-free;
test_rcl_publish.py checks them against the middleware's own serialization)."""

from __future__ import annotations

import ctypes
import struct

import numpy as np
import pytest

from xnet_ros.cdr import (
    ENCAPSULATION,
    HEADROOM,
    TAILROOM,
    CdrWriter,
    camera_info,
    cloud_prefix,
    cloud_suffix,
    frame_in_place,
    image_prefix,
)
from xnet_ros.geometry import FLOAT32, UINT16, PointCloudData
from xnet_ros.outputs import BufferPool, Lender

STAMP = (1_700_000_000, 123_456_789)
FRAME = "camera_optical_frame"  # 20 characters: its CDR string (with NUL) needs 3 pad bytes


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


HEADER = (ENCAPSULATION + struct.pack("<iI", *STAMP) + u32(21) + FRAME.encode() + b"\0"
          + b"\0" * 3)  # 36 bytes of stream after the encapsulation


def test_image_prefix_is_cdr_le_by_hand():
    fields = {"height": 2, "width": 5, "encoding": "32FC1", "is_bigendian": 0, "step": 20}
    expected = (HEADER + u32(2, 5) + u32(6) + b"32FC1\0"  # stream offset 54
                + b"\0"  # is_bigendian
                + b"\0"  # align 4
                + u32(20) + u32(40))  # step, data length
    assert image_prefix(STAMP, FRAME, fields, 40) == expected


def test_cloud_prefix_and_suffix_are_cdr_le_by_hand():
    pc = PointCloudData(height=1, width=3, fields=[("x", 0, FLOAT32, 1), ("label", 12, UINT16, 1)],
                        point_step=16, row_step=48, is_dense=True, data=b"")
    point_field = [u32(2) + b"x\0" + b"\0\0" + u32(0) + b"\x07" + b"\0" * 3 + u32(1),
                   u32(6) + b"label\0" + b"\0\0" + u32(12) + b"\x04" + b"\0" * 3 + u32(1)]
    expected = (HEADER + u32(1, 3) + u32(2) + b"".join(point_field)
                + b"\0" + b"\0" * 3  # is_bigendian, align 4
                + u32(16, 48) + u32(48))  # point_step, row_step, data length
    assert cloud_prefix(STAMP, FRAME, pc, 48) == expected
    assert cloud_suffix(pc) == b"\x01"


def test_camera_info_is_cdr_le_by_hand():
    k, r = [500.0, 0.0, 320.0, 0.0, 501.0, 240.0, 0.0, 0.0, 1.0], [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    p = [500.0, 0.0, 320.0, 0.0, 0.0, 501.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    fields = {"height": 480, "width": 640, "distortion_model": "plumb_bob", "d": [], "k": k,
              "r": r, "p": p}
    doubles = struct.pack("<30d", *k, *r, *p)
    expected = (HEADER + u32(480, 640) + u32(10) + b"plumb_bob\0"  # stream offset 58
                + b"\0\0" + u32(0)  # align 4; d: length 0, no elements
                + doubles  # k, r, p from stream offset 64 (8-aligned: no padding)
                + u32(0, 0) + u32(0, 0, 0, 0) + b"\0")  # binning, roi, do_rectify
    assert camera_info(STAMP, FRAME, fields) == expected
    with_d = camera_info(STAMP, FRAME, {**fields, "d": [0.5, -0.25]})
    assert with_d[64:92] == u32(2) + struct.pack("<2d", 0.5, -0.25) + struct.pack("<d", 500.0)


def test_writer_aligns_from_the_end_of_the_encapsulation():
    w = CdrWriter()
    w.u8(1)
    w.u32(2)  # 3 pad bytes: offsets count from after the 4-byte encapsulation
    w.string("ab")
    w.i32(-1)
    assert bytes(w.out) == ENCAPSULATION + b"\x01\0\0\0" + u32(2) + u32(3) + b"ab\0" + b"\0" + \
        struct.pack("<i", -1)


def lent(nbytes: int, fill: int = 7) -> memoryview:
    data = Lender(BufferPool(headroom=True))(("x",), nbytes)
    data[:] = bytes([fill]) * nbytes
    return data


def test_frame_in_place_writes_around_the_data_and_points_at_the_whole_message():
    data = lent(10)
    assert isinstance(data, memoryview) and len(data.obj) == HEADROOM + 10 + TAILROOM
    framed = frame_in_place(data, b"PREFIX", b"S")
    assert framed is not None and framed.base is data.obj
    assert ctypes.string_at(framed.address, framed.length) == b"PREFIX" + b"\x07" * 10 + b"S"
    assert bytes(data) == b"\x07" * 10  # the data itself is untouched


def test_frame_in_place_declines_what_it_cannot_frame():
    assert frame_in_place(bytearray(10), b"P") is None  # not a lent slice
    assert frame_in_place(memoryview(bytes(10)), b"P") is None  # read-only
    assert frame_in_place(lent(0), b"P") is None  # empty: no address of its own
    assert frame_in_place(lent(4), b"P" * (HEADROOM + 1)) is None  # prefix longer than the room
    assert frame_in_place(lent(4), b"P", b"S" * (TAILROOM + 1)) is None
    whole = memoryview(bytearray(16))
    assert frame_in_place(whole, b"P") is None  # no room before
    framed = frame_in_place(whole[4:], b"PPPP")
    assert framed is not None and framed.length == 16


def test_headroom_pool_lends_slices_and_reuses_the_whole_buffer():
    pool = BufferPool(headroom=True)
    lend = Lender(pool)
    data = lend(("depth",), 24)
    base = data.obj
    assert len(data) == 24 and np.frombuffer(data, np.float32).shape == (6,)
    for key, buffer in lend.leases:
        pool.give_back(key, buffer)
    again = Lender(pool)(("depth",), 24)
    assert again.obj is base


@pytest.mark.parametrize("nbytes", [1, 3, 4])
def test_prefix_length_decides_where_the_message_starts(nbytes):
    data = lent(nbytes)
    prefix = image_prefix(STAMP, FRAME, {"height": 1, "width": nbytes, "encoding": "mono8",
                                         "is_bigendian": 0, "step": nbytes}, nbytes)
    framed = frame_in_place(data, prefix)
    assert ctypes.string_at(framed.address, framed.length) == prefix + bytes(data)
