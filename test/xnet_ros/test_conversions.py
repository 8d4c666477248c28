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
    image_to_rgb,
    to_rgb,
)

KITTI_BAG = Path("rosbag/kitti_tiny_ros2_mcap")
KITTI_IMAGE = Path(
    "kitti/KITTI_tiny/2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000000.png"
)


def random_image(encoding: str, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    """Random data laid out as `image_to_array` returns it (sizes rounded up to the chroma
    block of subsampled encodings)."""
    info = ENCODINGS[encoding]
    height += -height % info.block[0]
    width += -width % info.block[1]
    rows = int(height * info.rows)
    rng = np.random.default_rng(seed)
    shape = (rows, width) if info.channels == 1 else (rows, width, info.channels)
    if info.dtype == np.float32:
        return rng.uniform(-100, 100, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(info.dtype).max, shape, endpoint=True).astype(info.dtype)


def image_msg(**fields) -> SimpleNamespace:
    return SimpleNamespace(**fields)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_round_trip_every_encoding(encoding: str) -> None:
    arr = random_image(encoding)
    info = ENCODINGS[encoding]
    fields = array_to_image_fields(arr, encoding)
    assert isinstance(fields["data"], bytes)
    assert fields["is_bigendian"] == 0
    width = arr.shape[1]
    assert fields["step"] == width * arr.itemsize * info.channels
    height = 5 + -5 % info.block[0]  # 6 for 4:2:0
    assert (fields["height"], fields["width"], fields["encoding"]) == (height, width, encoding)
    assert len(fields["data"]) == fields["step"] * int(height * info.rows)
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
    # nv24 is a ROS encoding (4:4:4 semi-planar) that neither cv_bridge nor OpenCV converts
    with pytest.raises(ImageConversionError, match=r"'nv24'.*rgb8.*32FC1.*bayer_rggb8.*nv12"):
        image_to_array(good_msg(encoding="nv24"))


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


@pytest.mark.parametrize("encoding, itemsize", [("16UC1", 2), ("32FC1", 4)])
def test_error_step_too_small_depth(encoding: str, itemsize: int) -> None:
    # 3 pixels of `itemsize` bytes need a step of at least 3*itemsize
    msg = good_msg(encoding=encoding, width=3, step=3 * itemsize - 1,
                   data=bytes(2 * (3 * itemsize - 1)))
    with pytest.raises(ImageConversionError,
                       match=rf"step {3 * itemsize - 1} is smaller than width\*bytes_per_pixel"
                             rf" = 3\*{itemsize} = {3 * itemsize} for encoding '{encoding}'"):
        image_to_array(msg)


def test_error_data_too_long_is_not_padding() -> None:
    """Rows are `step` bytes and data is step*height (sensor_msgs/Image, cv_bridge): bytes past
    the last row are not padding but a malformed message."""
    with pytest.raises(ImageConversionError, match=r"len\(data\) = 19 but step\*height = "
                                                   r"9\*2 = 18 for encoding 'rgb8'"):
        image_to_array(good_msg(data=bytes(19)))
    msg = good_msg(encoding="16UC1", width=3, step=6, data=bytes(6 * 2 + 6))
    with pytest.raises(ImageConversionError, match=r"len\(data\) = 18 .* = 12"):
        image_to_array(msg)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_error_odd_width_422(encoding: str) -> None:
    msg = good_msg(encoding=encoding, height=2, width=3, step=6, data=bytes(12))
    with pytest.raises(ImageConversionError,
                       match=rf"width 3 of a '{encoding}' image must be a multiple of 2"):
        image_to_array(msg)


@pytest.mark.parametrize("height, width, bad", [(3, 4, "height 3"), (2, 5, "width 5")])
def test_error_odd_size_nv12(height: int, width: int, bad: str) -> None:
    msg = good_msg(encoding="nv12", height=height, width=width, step=width,
                   data=bytes(width * (height + 1) * 3 // 2))
    with pytest.raises(ImageConversionError, match=rf"{bad} of a 'nv12' image must be"):
        image_to_array(msg)


def test_error_nv12_length_names_the_plane_rows() -> None:
    # 4x6 NV12: 4 rows of Y + 2 rows of interleaved chroma, 6 bytes each = 36 bytes
    msg = good_msg(encoding="nv21", height=4, width=6, step=6, data=bytes(24))
    with pytest.raises(ImageConversionError,
                       match=r"len\(data\) = 24 but step\*height\*3/2 = 6\*4\*3/2 = 36"):
        image_to_array(msg)


def test_error_yuv422_step_counts_two_bytes_per_pixel() -> None:
    msg = good_msg(encoding="yuyv", height=2, width=4, step=4, data=bytes(8))
    with pytest.raises(ImageConversionError, match=r"step 4 is smaller than .* = 4\*2 = 8"):
        image_to_array(msg)


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


def scale16_to_8(values: np.ndarray) -> np.ndarray:
    """cv_bridge's 16 -> 8 bit step, convertTo(CV_8U, 255/65535), in integers: round(v/257)
    (v/257 is never exactly x.5, so rounding half up equals OpenCV's rounding)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16", "16UC1"])
def test_to_rgb_mono(encoding: str) -> None:
    mono = random_image(encoding, seed=5)
    expected8 = scale16_to_8(mono) if mono.dtype == np.uint16 else mono
    out = to_rgb(mono, encoding)
    assert out.shape == mono.shape + (3,) and out.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], expected8)


def test_to_rgb_mono16_extremes() -> None:
    # hand-computed round(v * 255 / 65535): 128/257 = 0.498, 129/257 = 0.502, 255/257 = 0.992
    mono = np.array([[0, 128, 129, 255, 256, 32896, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb(mono, "mono16")[0, :, 0], [0, 0, 1, 1, 1, 128, 255])


def test_16bit_scaling_matches_cv_bridge_for_every_value() -> None:
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    np.testing.assert_array_equal(to_rgb(every, "mono16")[..., 1], scale16_to_8(every))


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
        array_to_image_fields(np.zeros((2, 2), np.uint8), "nv24")
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


# ------------------------------------------------- camera encodings on a real image (KITTI)
# The conversions cv_bridge applies for toCvCopy(msg, "rgb8"), copied from vision_opencv
# cv_bridge/src/cv_bridge.cpp (getConversionCodes): the node must see the same RGB.
CV_BRIDGE_TO_RGB = {
    "bayer_rggb": cv2.COLOR_BayerBG2RGB, "bayer_bggr": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGR2RGB, "bayer_grbg": cv2.COLOR_BayerGB2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
}


@pytest.fixture(scope="module")
def kitti_rgb(fixtures_dir: Path) -> np.ndarray:
    """A 192x256 crop of a real KITTI frame (even sizes: every chroma layout fits)."""
    bgr = cv2.imread(str(fixtures_dir / KITTI_IMAGE))
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[120:312, 400:656])


def decode(arr: np.ndarray, encoding: str, **override) -> np.ndarray:
    """Through a message, as the node receives it."""
    fields = {**array_to_image_fields(arr, encoding), **override}
    return image_to_rgb(image_msg(**fields))


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Bayer mosaic: `pattern` names the colours of the top-left 2x2 block row by row."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for (dy, dx), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


def interior_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int))[2:-2, 2:-2].mean())


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer8_matches_cv_bridge_and_the_scene(kitti_rgb: np.ndarray, pattern: str) -> None:
    raw = mosaic(kitti_rgb, pattern)
    out = decode(raw, f"bayer_{pattern}8")
    assert out.shape == kitti_rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.cvtColor(raw, CV_BRIDGE_TO_RGB[f"bayer_{pattern}"]))
    # independent of the code table: bilinear demosaicing of the right pattern is close to the
    # original (measured 7.2 grey levels), a wrong pattern is not (17-20)
    assert interior_error(out, kitti_rgb) < 10
    other = {"rggb": "bggr", "bggr": "rggb", "gbrg": "grbg", "grbg": "gbrg"}[pattern]
    assert interior_error(decode(raw, f"bayer_{other}8"), kitti_rgb) > 14


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer16_demosaics_then_scales_like_cv_bridge(kitti_rgb: np.ndarray,
                                                      pattern: str) -> None:
    rng = np.random.default_rng(7)
    rgb16 = kitti_rgb.astype(np.uint16) * 256 + rng.integers(0, 256, kitti_rgb.shape, np.uint16)
    raw = mosaic(rgb16, pattern)
    out = decode(raw, f"bayer_{pattern}16")
    expected = scale16_to_8(cv2.cvtColor(raw, CV_BRIDGE_TO_RGB[f"bayer_{pattern}"]))
    np.testing.assert_array_equal(out, expected)
    assert interior_error(out, kitti_rgb) < 10


@pytest.mark.parametrize("encoding, to_rgb16", [
    ("rgb16", None), ("bgr16", cv2.COLOR_RGB2BGR), ("rgba16", cv2.COLOR_RGB2RGBA),
    ("bgra16", cv2.COLOR_RGB2BGRA)])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_colour_exact(kitti_rgb: np.ndarray, encoding: str, to_rgb16, bigendian) -> None:
    rng = np.random.default_rng(8)
    rgb16 = kitti_rgb.astype(np.uint16) * 256 + rng.integers(0, 256, kitti_rgb.shape, np.uint16)
    arr = rgb16 if to_rgb16 is None else cv2.cvtColor(rgb16, to_rgb16)
    override = {}
    if bigendian:
        override = {"is_bigendian": 1, "data": arr.astype(">u2").tobytes()}
    np.testing.assert_array_equal(decode(arr, encoding, **override), scale16_to_8(rgb16))


@pytest.mark.parametrize("encoding, from_rgb", [
    ("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("uyvy", cv2.COLOR_RGB2YUV_UYVY),
    ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2), ("yuyv", cv2.COLOR_RGB2YUV_YUY2)])
def test_yuv422_matches_cv_bridge(kitti_rgb: np.ndarray, encoding: str, from_rgb: int) -> None:
    packed = cv2.cvtColor(kitti_rgb, from_rgb)  # (H, W, 2): what a UVC camera sends
    assert packed.shape == kitti_rgb.shape[:2] + (2,)
    out = decode(packed, encoding)
    ros1_name = {"uyvy": "yuv422", "yuyv": "yuv422_yuy2"}.get(encoding, encoding)
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, CV_BRIDGE_TO_RGB[ros1_name]))
    assert interior_error(out, kitti_rgb) < 5  # chroma shared by 2 pixels (measured 3.4)
    other = {"yuv422": "yuyv", "uyvy": "yuyv"}.get(encoding, "uyvy")
    assert interior_error(decode(packed, other), kitti_rgb) > 30  # byte order matters


def nv_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes (4:2:0, BT.601 limited range) from OpenCV's I420 encoder."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    q = h // 4
    return i420[:h], i420[h:h + q].reshape(h // 2, w // 2), i420[h + q:].reshape(h // 2, w // 2)


@pytest.mark.parametrize("encoding", ["nv12", "nv21"])
def test_nv12_nv21(kitti_rgb: np.ndarray, encoding: str) -> None:
    h, w = kitti_rgb.shape[:2]
    y, u, v = nv_planes(kitti_rgb)
    chroma = np.stack([u, v] if encoding == "nv12" else [v, u], axis=-1).reshape(h // 2, w)
    stored = np.concatenate([y, chroma])  # (H*3/2, W)
    out = decode(stored, encoding)
    assert out.shape == kitti_rgb.shape
    # OpenCV's reference decoder for the same layout (cv_bridge has no nv12/nv21 yet)
    i420 = cv2.cvtColor(kitti_rgb, cv2.COLOR_RGB2YUV_I420)
    np.testing.assert_array_equal(out, cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))
    assert interior_error(out, kitti_rgb) < 10  # measured 7.2
    other = "nv21" if encoding == "nv12" else "nv12"
    assert interior_error(decode(stored, other), kitti_rgb) > 2 * interior_error(out, kitti_rgb)

    # the same frame with 10 bytes of padding after every row of both planes
    pad = 10
    padded = np.zeros((stored.shape[0], w + pad), np.uint8)
    padded[:, :w] = stored
    fields = {**array_to_image_fields(stored, encoding), "step": w + pad,
              "data": padded.tobytes()}
    np.testing.assert_array_equal(image_to_rgb(image_msg(**fields)), out)


def test_every_rgb_encoding_is_a_ros_or_opencv_name() -> None:
    """Names as in sensor_msgs/image_encodings.hpp (Kilted): no typos a driver would not send."""
    ros_names = {"rgb8", "rgba8", "rgb16", "rgba16", "bgr8", "bgra8", "bgr16", "bgra16", "mono8",
                 "mono16", "8UC1", "8UC3", "16UC1", "32FC1", "uyvy", "yuv422", "yuyv",
                 "yuv422_yuy2", "nv12", "nv21"}
    ros_names |= {f"bayer_{p}{b}" for p in ("rggb", "bggr", "gbrg", "grbg") for b in (8, 16)}
    assert set(ENCODINGS) == ros_names
