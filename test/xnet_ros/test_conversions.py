"""Image / CompressedImage <-> numpy conversions (no rclpy needed)."""

from __future__ import annotations

import array
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from xnet_ros.conversions import (
    ENCODINGS,
    ImageConversionError,
    array_to_image_fields,
    decode_compressed,
    encode_compressed,
    image_to_array,
    to_rgb,
)

KITTI_BAG = Path("rosbag/kitti_tiny_ros2_mcap")
KITTI_IMAGE = Path(
    "kitti/KITTI_tiny/2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000000.png"
)


def random_image(encoding: str, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    info = ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype == np.float32:
        return rng.uniform(-100, 100, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(info.dtype).max, shape, endpoint=True).astype(info.dtype)


def image_msg(**fields) -> SimpleNamespace:
    return SimpleNamespace(**fields)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_round_trip_every_encoding(encoding: str) -> None:
    arr = random_image(encoding)
    fields = array_to_image_fields(arr, encoding)
    assert isinstance(fields["data"], bytes)
    assert fields["is_bigendian"] == 0
    assert fields["step"] == 7 * arr.itemsize * ENCODINGS[encoding].channels
    assert (fields["height"], fields["width"], fields["encoding"]) == (5, 7, encoding)
    out = image_to_array(image_msg(**fields))
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b), list,
     lambda b: np.frombuffer(b, np.uint8).copy()],
    ids=["bytes", "bytearray", "memoryview", "array.array", "list", "ndarray"],
)
def test_data_container_types(wrap) -> None:
    arr = random_image("16UC1", seed=1)
    fields = array_to_image_fields(arr, "16UC1")
    fields["data"] = wrap(fields["data"])
    np.testing.assert_array_equal(image_to_array(image_msg(**fields)), arr)


def test_padded_step_is_stripped_without_copy() -> None:
    arr = random_image("rgb8", height=4, width=3)
    pad = 5
    rows = [row.tobytes() + b"\xee" * pad for row in arr]
    data = bytearray(b"".join(rows))
    msg = image_msg(encoding="rgb8", height=4, width=3, step=3 * 3 + pad, is_bigendian=0,
                    data=data)
    out = image_to_array(msg)
    np.testing.assert_array_equal(out, arr)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))


def test_padded_step_16bit() -> None:
    arr = random_image("mono16", height=3, width=4)
    data = b"".join(row.astype("<u2").tobytes() + b"\x01\x02" for row in arr)
    msg = image_msg(encoding="mono16", height=3, width=4, step=10, is_bigendian=0, data=data)
    np.testing.assert_array_equal(image_to_array(msg), arr)


@pytest.mark.parametrize("encoding, big", [("16UC1", ">u2"), ("32FC1", ">f4"), ("mono16", ">u2")])
def test_big_endian_is_swapped_to_native(encoding: str, big: str) -> None:
    arr = random_image(encoding, seed=3)
    msg = image_msg(encoding=encoding, height=5, width=7, step=7 * arr.itemsize,
                    is_bigendian=1, data=arr.astype(big).tobytes())
    out = image_to_array(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_big_endian_32fc1_known_value() -> None:
    msg = image_msg(encoding="32FC1", height=1, width=1, step=4, is_bigendian=1,
                    data=b"\x3f\xc0\x00\x00")
    assert image_to_array(msg)[0, 0] == pytest.approx(1.5)


def good_msg(**override) -> SimpleNamespace:
    fields = dict(encoding="rgb8", height=2, width=3, step=9, is_bigendian=0, data=bytes(18))
    fields.update(override)
    return image_msg(**fields)


def test_error_unknown_encoding_lists_supported() -> None:
    with pytest.raises(ImageConversionError, match=r"'yuv422'.*rgb8.*32FC1"):
        image_to_array(good_msg(encoding="yuv422"))


@pytest.mark.parametrize("override", [dict(height=0, data=b""), dict(width=0), dict(data=b"")])
def test_error_empty_image(override) -> None:
    with pytest.raises(ImageConversionError, match="empty image"):
        image_to_array(good_msg(**override))


def test_error_step_too_small() -> None:
    with pytest.raises(ImageConversionError, match=r"step 8 is smaller than .*= 9"):
        image_to_array(good_msg(step=8, data=bytes(16)))


def test_error_data_length_mismatch_names_both_numbers() -> None:
    with pytest.raises(ImageConversionError, match=r"len\(data\) = 17 .* = 18"):
        image_to_array(good_msg(data=bytes(17)))


def test_conversion_error_is_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)


def test_to_rgb_every_colour_encoding() -> None:
    rgb = random_image("rgb8", seed=4)
    np.testing.assert_array_equal(to_rgb(rgb, "rgb8"), rgb)
    np.testing.assert_array_equal(to_rgb(rgb[..., ::-1], "bgr8"), rgb)
    np.testing.assert_array_equal(to_rgb(rgb[..., ::-1], "8UC3"), rgb)
    alpha = np.full(rgb.shape[:2] + (1,), 7, np.uint8)
    np.testing.assert_array_equal(to_rgb(np.concatenate([rgb, alpha], 2), "rgba8"), rgb)
    bgra = np.concatenate([rgb[..., ::-1], alpha], 2)
    np.testing.assert_array_equal(to_rgb(bgra, "bgra8"), rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16", "16UC1"])
def test_to_rgb_mono(encoding: str) -> None:
    mono = random_image(encoding, seed=5)
    expected8 = (mono >> 8).astype(np.uint8) if mono.dtype == np.uint16 else mono
    out = to_rgb(mono, encoding)
    assert out.shape == mono.shape + (3,) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], expected8)


def test_to_rgb_mono16_extremes() -> None:
    mono = np.array([[0, 255, 256, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb(mono, "mono16")[0, :, 0], [0, 0, 1, 255])


def test_to_rgb_rejects_float_depth() -> None:
    with pytest.raises(ImageConversionError, match="32FC1"):
        to_rgb(np.zeros((2, 2), np.float32), "32FC1")


def test_to_rgb_from_padded_message() -> None:
    rgb = random_image("rgb8", height=3, width=2)
    bgr = rgb[..., ::-1]
    data = b"".join(row.tobytes() + b"\x00\x00" for row in bgr)
    msg = image_msg(encoding="bgr8", height=3, width=2, step=8, is_bigendian=0, data=data)
    np.testing.assert_array_equal(to_rgb(image_to_array(msg), "bgr8"), rgb)


def test_array_to_image_fields_validation() -> None:
    with pytest.raises(ImageConversionError, match="needs dtype uint8"):
        array_to_image_fields(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ImageConversionError, match="needs 3 channel"):
        array_to_image_fields(np.zeros((2, 2, 4), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="needs 1 channel"):
        array_to_image_fields(np.zeros((2, 2, 3), np.uint16), "16UC1")
    with pytest.raises(ImageConversionError, match="unsupported image encoding"):
        array_to_image_fields(np.zeros((2, 2), np.uint8), "bayer_rggb8")
    with pytest.raises(ImageConversionError, match="empty image"):
        array_to_image_fields(np.zeros((0, 2), np.uint8), "mono8")


def test_array_to_image_fields_accepts_single_channel_axis_and_big_endian() -> None:
    depth = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    fields = array_to_image_fields(depth, "32FC1")
    assert fields["step"] == 12
    np.testing.assert_array_equal(image_to_array(image_msg(**fields)), depth[..., 0])
    big = np.array([[1, 258]], dtype=">u2")
    fields = array_to_image_fields(big, "16UC1")
    assert fields["data"] == b"\x01\x00\x02\x01"


def test_array_to_image_fields_non_contiguous_input() -> None:
    rgb = random_image("rgb8", height=6, width=8)
    view = rgb[::2, 1::2]
    fields = array_to_image_fields(view, "rgb8")
    np.testing.assert_array_equal(image_to_array(image_msg(**fields)), view)


def test_rclpy_message_round_trip() -> None:
    image_cls = pytest.importorskip("sensor_msgs.msg").Image
    rgb = random_image("rgb8", height=4, width=6)
    msg = image_cls(**array_to_image_fields(rgb, "rgb8"))
    assert isinstance(msg.data, array.array)  # rclpy stores uint8[] as array.array
    np.testing.assert_array_equal(image_to_array(msg), rgb)


def test_compressed_png_round_trip_is_exact() -> None:
    rgb = random_image("rgb8", height=9, width=11)
    fmt, data = encode_compressed(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_compressed(SimpleNamespace(format=fmt, data=data)), rgb)


def test_compressed_jpeg_keeps_channel_order() -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # pure-ish red must stay red after the BGR round trip
    rgb[:, 16:, 2] = 150
    fmt, data = encode_compressed(rgb, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8"
    out = decode_compressed(SimpleNamespace(format="jpeg", data=array.array("B", data)))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize(
    "data, match",
    [(b"", "empty compressed image"), (b"\xff\xd8\xff garbage", "could not decode 11 bytes")],
)
def test_compressed_errors(data: bytes, match: str) -> None:
    with pytest.raises(ImageConversionError, match=match):
        decode_compressed(SimpleNamespace(format="jpeg", data=data))


def test_compressed_depth_is_rejected() -> None:
    _, png = encode_compressed(np.zeros((2, 2, 3), np.uint8), "png")
    msg = SimpleNamespace(format="16UC1; compressedDepth png", data=bytes(12) + png)
    with pytest.raises(ImageConversionError, match="compressedDepth"):
        decode_compressed(msg)


def test_encode_compressed_rejects_bad_input() -> None:
    with pytest.raises(ImageConversionError, match="unsupported compressed format"):
        encode_compressed(np.zeros((2, 2, 3), np.uint8), "webp")
    with pytest.raises(ImageConversionError, match="HxWx3 uint8"):
        encode_compressed(np.zeros((2, 2), np.uint8), "png")


def test_rosbags_kitti_messages(fixtures_dir: Path) -> None:
    """Real rosbags dataclass messages: rgb8 equals the PNG; 16UC1 mm agrees with 32FC1 m."""
    highlevel = pytest.importorskip("rosbags.highlevel")
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)
    first: dict[str, object] = {}
    with highlevel.AnyReader([fixtures_dir / KITTI_BAG], default_typestore=store) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic not in first and conn.msgtype == "sensor_msgs/msg/Image":
                first[conn.topic] = reader.deserialize(raw, conn.msgtype)
    image = first["/kitti/camera_color_left/image_raw"]
    rgb = image_to_array(image)
    png = cv2.cvtColor(cv2.imread(str(fixtures_dir / KITTI_IMAGE)), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (375, 1242, 3)
    np.testing.assert_array_equal(to_rgb(rgb, image.encoding), png)

    depth_m = image_to_array(first["/kitti/camera_color_left/depth_gt"])
    depth_mm = image_to_array(first["/kitti/camera_color_left/depth_gt_mm"])
    assert depth_m.dtype == np.float32 and depth_mm.dtype == np.uint16
    valid = depth_m > 0
    assert 0.01 < valid.mean() < 0.2  # sparse LiDAR ground truth
    np.testing.assert_array_equal(depth_mm > 0, valid)
    in_range = valid & (depth_m < 65.5)  # uint16 millimetres saturate at 65.535 m
    assert (depth_mm[valid & ~in_range] == 65535).all()
    np.testing.assert_allclose(depth_mm[in_range] / 1000.0, depth_m[in_range], atol=1e-3)
