"""sensor_msgs Image / CompressedImage <-> numpy, without rclpy.

Messages are duck-typed: only the attributes ``encoding, height, width, step, is_bigendian,
data`` (Image) or ``format, data`` (CompressedImage) are read, so rclpy messages and
``rosbags`` dataclass messages both work. ``data`` may be bytes, bytearray, memoryview,
array.array, a list of ints or a numpy uint8 array.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """A message cannot be turned into an array (or an array into a message)."""


class EncodingInfo(NamedTuple):
    dtype: np.dtype
    channels: int


ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "8UC1": EncodingInfo(np.dtype(np.uint8), 1),
    "8UC3": EncodingInfo(np.dtype(np.uint8), 3),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "16UC1": EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
}

# 8UC3 follows the OpenCV convention (BGR order), as cv_bridge does.
_TO_RGB_CODES: dict[str, int | None] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
    "16UC1": cv2.COLOR_GRAY2RGB,
}

_COMPRESSED_FORMATS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def encoding_info(encoding: str) -> EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


def _as_byte_array(data: Any) -> np.ndarray:
    """A flat uint8 view of ``data`` (no copy unless it is a Python list)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise ImageConversionError(
            f"image data of type {type(data).__name__} is not a contiguous bytes-like object"
        ) from exc


def image_to_array(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/Image into an (H, W) or (H, W, C) array in native byte order.

    The result is a view of ``msg.data`` where possible (row padding is skipped with strides),
    so it is read-only when the message data is immutable; copy it before writing.
    """
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: height={height}, width={width}")
    buf = _as_byte_array(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"empty image: {height}x{width} but data has no bytes")
    pixel_bytes = info.dtype.itemsize * info.channels
    if step < width * pixel_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{pixel_bytes} "
            f"= {width * pixel_bytes} for encoding {msg.encoding!r}"
        )
    if buf.size != step * height:
        raise ImageConversionError(
            f"len(data) = {buf.size} but step*height = {step}*{height} = {step * height}"
        )
    dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    shape: tuple[int, ...] = (height, width, info.channels)
    strides: tuple[int, ...] = (step, pixel_bytes, info.dtype.itemsize)
    if info.channels == 1:
        shape, strides = shape[:2], strides[:2]
    arr = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    elif not arr.flags.aligned:
        arr = arr.copy()
    return arr


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an array decoded with ``encoding`` to contiguous HxWx3 uint8 RGB.

    mono16/16UC1 keep the high byte (full 16-bit range -> 8 bit). 32FC1 has no colour meaning
    and is rejected. For rgb8 the (contiguous) input itself is returned, not a copy.
    """
    encoding_info(encoding)
    if encoding not in _TO_RGB_CODES:
        raise ImageConversionError(f"encoding {encoding!r} cannot be converted to RGB")
    if encoding in ("mono16", "16UC1"):
        arr = (arr >> 8).astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    code = _TO_RGB_CODES[encoding]
    return arr if code is None else cv2.cvtColor(arr, code)


def array_to_image_fields(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    """Fields for a sensor_msgs/Image holding ``arr``; ``data`` is ``bytes`` (cheap for rclpy)."""
    info = encoding_info(encoding)
    if arr.dtype.newbyteorder("=") != info.dtype:
        raise ImageConversionError(
            f"encoding {encoding!r} needs dtype {info.dtype}, got {arr.dtype}"
        )
    if arr.ndim == 3 and info.channels == 1 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else -1)
    if channels != info.channels:
        raise ImageConversionError(
            f"encoding {encoding!r} needs {info.channels} channel(s), got array of shape "
            f"{arr.shape}"
        )
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image: shape {arr.shape}")
    data = np.ascontiguousarray(arr, dtype=info.dtype.newbyteorder("<")).tobytes()
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * info.channels * info.dtype.itemsize,
        "data": data,
    }


def decode_compressed(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) into HxWx3 uint8 RGB."""
    fmt = str(getattr(msg, "format", ""))
    if "compressedDepth" in fmt:
        raise ImageConversionError(f"compressedDepth images are not supported (format {fmt!r})")
    buf = _as_byte_array(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"empty compressed image (format {fmt!r})")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(
            f"could not decode {buf.size} bytes of compressed image data (format {fmt!r})"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Encode HxWx3 uint8 RGB; returns (CompressedImage.format, data) like image_transport."""
    ext = _COMPRESSED_FORMATS.get(fmt.lower())
    if ext is None:
        raise ImageConversionError(
            f"unsupported compressed format {fmt!r}; supported: {', '.join(_COMPRESSED_FORMATS)}"
        )
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                               params)
    if not ok:
        raise ImageConversionError(f"cv2.imencode failed for format {fmt!r}")
    name = "jpeg" if ext == ".jpg" else "png"
    return f"rgb8; {name} compressed bgr8", encoded.tobytes()
