"""sensor_msgs Image / CompressedImage <-> numpy, without rclpy.

Messages are duck-typed: only the attributes ``encoding, height, width, step, is_bigendian,
data`` (Image) or ``format, data`` (CompressedImage) are read, so rclpy messages and
``rosbags`` dataclass messages both work. ``data`` may be bytes, bytearray, memoryview,
array.array, a list of ints or a numpy uint8 array.

Every encoding cv_bridge turns into RGB is accepted, with cv_bridge's OpenCV conversion codes
(vision_opencv `cv_bridge.cpp`, `getConversionCodes`), so the node sees the same RGB a C++
node using cv_bridge would: mono8/16, rgb/bgr/rgba/bgra 8 and 16 bit, the eight Bayer patterns,
UYVY (``yuv422``, named ``uyvy`` since Jazzy) and YUYV (``yuv422_yuy2``, ``yuyv``). 16-bit
images become 8 bit the way cv_bridge does it: ``round(v * 255 / 65535)`` after the colour
conversion. Beyond cv_bridge: ``nv12``/``nv21`` (4:2:0 semi-planar: ``height`` rows of Y then
``height / 2`` rows of interleaved chroma, all ``step`` bytes long), ``8UC1``/``16UC1``
(as grey) and ``8UC3`` (BGR, the OpenCV convention).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import cv2
import numpy as np


class ImageConversionError(ValueError):
    """A message cannot be turned into an array (or an array into a message)."""


class EncodingInfo(NamedTuple):
    dtype: np.dtype
    channels: int  # values stored per pixel (packed 4:2:2: 2 = luma + one chroma byte)
    rows: Fraction = Fraction(1)  # stored rows per image row (4:2:0 semi-planar: 3/2)
    block: tuple[int, int] = (1, 1)  # (height, width) must be multiples of these (chroma)


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
_YUV422 = EncodingInfo(_U8, 2, block=(1, 2))
_YUV420SP = EncodingInfo(_U8, 1, rows=Fraction(3, 2), block=(2, 2))

ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(_U8, 3),
    "bgr8": EncodingInfo(_U8, 3),
    "rgba8": EncodingInfo(_U8, 4),
    "bgra8": EncodingInfo(_U8, 4),
    "mono8": EncodingInfo(_U8, 1),
    "8UC1": EncodingInfo(_U8, 1),
    "8UC3": EncodingInfo(_U8, 3),
    "rgb16": EncodingInfo(_U16, 3),
    "bgr16": EncodingInfo(_U16, 3),
    "rgba16": EncodingInfo(_U16, 4),
    "bgra16": EncodingInfo(_U16, 4),
    "mono16": EncodingInfo(_U16, 1),
    "16UC1": EncodingInfo(_U16, 1),
    "32FC1": EncodingInfo(_F32, 1),
    **{f"bayer_{p}{bits}": EncodingInfo(_U8 if bits == 8 else _U16, 1)
       for p in ("rggb", "bggr", "gbrg", "grbg") for bits in (8, 16)},
    "yuv422": _YUV422,
    "uyvy": _YUV422,
    "yuv422_yuy2": _YUV422,
    "yuyv": _YUV422,
    "nv12": _YUV420SP,
    "nv21": _YUV420SP,
}

# Colour conversion to RGB; None = the data is RGB already. cv_bridge's codes: note OpenCV names
# a Bayer pattern by the 2x2 block starting at the second row and column (rggb -> BayerBG).
# 8UC3 follows the OpenCV convention (BGR order), as cv_bridge does.
_TO_RGB_CODES: dict[str, int | None] = {
    "rgb8": None,
    "rgb16": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "bgr16": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "rgba16": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "bgra16": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
    "16UC1": cv2.COLOR_GRAY2RGB,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_rggb16": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_bggr16": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_gbrg16": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
    "bayer_grbg16": cv2.COLOR_BayerGB2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "nv12": cv2.COLOR_YUV2RGB_NV12,
    "nv21": cv2.COLOR_YUV2RGB_NV21,
}
# channel copies / reorders commute with the 16 -> 8 bit scaling (scale first: fewer values)
_CHANNEL_ONLY = {None, cv2.COLOR_BGR2RGB, cv2.COLOR_RGBA2RGB, cv2.COLOR_BGRA2RGB,
                 cv2.COLOR_GRAY2RGB}

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


def _check_block(encoding: str, info: EncodingInfo, height: int, width: int) -> None:
    bh, bw = info.block
    for name, value, multiple in (("height", height, bh), ("width", width, bw)):
        if value % multiple:
            raise ImageConversionError(
                f"{name} {value} of a {encoding!r} image must be a multiple of {multiple} "
                "(chroma is shared by neighbouring pixels)")


def _rows_text(info: EncodingInfo) -> str:
    return "" if info.rows == 1 else f"*{info.rows.numerator}/{info.rows.denominator}"


def image_to_array(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/Image into an array in native byte order, as stored.

    (H, W) for one value per pixel (mono, depth, Bayer mosaics), (H, W, C) otherwise; packed
    4:2:2 gives (H, W, 2) and 4:2:0 semi-planar (nv12/nv21) (H*3/2, W), the layouts OpenCV's
    colour conversions take. Rows are ``step`` bytes; ``len(data)`` must be exactly
    ``step * height`` (times 3/2 for nv12/nv21), as the message definition and cv_bridge
    require: trailing bytes are an error, not padding.

    The result is a view of ``msg.data`` where possible (row padding is skipped with strides),
    so it is read-only when the message data is immutable; copy it before writing.
    """
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: height={height}, width={width}")
    _check_block(msg.encoding, info, height, width)
    buf = _as_byte_array(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"empty image: {height}x{width} but data has no bytes")
    pixel_bytes = info.dtype.itemsize * info.channels
    if step < width * pixel_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{pixel_bytes} "
            f"= {width * pixel_bytes} for encoding {msg.encoding!r}"
        )
    rows = height if info.rows == 1 else int(height * info.rows)
    if buf.size != step * rows:
        raise ImageConversionError(
            f"len(data) = {buf.size} but step*height{_rows_text(info)} = "
            f"{step}*{height}{_rows_text(info)} = {step * rows} for encoding {msg.encoding!r}"
        )
    dtype = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    shape: tuple[int, ...] = (rows, width, info.channels)
    strides: tuple[int, ...] = (step, pixel_bytes, info.dtype.itemsize)
    if info.channels == 1:
        shape, strides = shape[:2], strides[:2]
    arr = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    elif not arr.flags.aligned:
        arr = arr.copy()
    return arr


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as cv_bridge does (cv::Mat::convertTo(CV_8U, 255/65535): rounded)."""
    return cv2.convertScaleAbs(arr, alpha=255.0 / 65535.0)


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an array decoded with ``encoding`` (see `image_to_array`) to contiguous HxWx3
    uint8 RGB, as cv_bridge's ``toCvCopy(msg, "rgb8")`` does.

    16-bit encodings are scaled to 8 bit (full range, rounded). 32FC1 has no colour meaning
    and is rejected. For rgb8 the (contiguous) input itself is returned, not a copy.
    """
    info = encoding_info(encoding)
    if encoding not in _TO_RGB_CODES:
        raise ImageConversionError(f"encoding {encoding!r} cannot be converted to RGB")
    code = _TO_RGB_CODES[encoding]
    scale = info.dtype == _U16
    if scale and code in _CHANNEL_ONLY:
        arr, scale = _to_8bit(arr), False
    arr = np.ascontiguousarray(arr)
    if code is not None:
        arr = cv2.cvtColor(arr, code)
    return _to_8bit(arr) if scale else arr


def image_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image of any supported colour encoding as HxWx3 uint8 RGB."""
    return to_rgb(image_to_array(msg), msg.encoding)


def array_to_image_fields(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    """Fields for a sensor_msgs/Image holding ``arr`` (laid out as `image_to_array` returns
    it); ``data`` is ``bytes`` (cheap for rclpy)."""
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
    rows, width = arr.shape[:2]
    if rows == 0 or width == 0:
        raise ImageConversionError(f"empty image: shape {arr.shape}")
    height = rows / info.rows
    if height.denominator != 1:
        raise ImageConversionError(
            f"{encoding!r} stores {info.rows} rows per image row; {rows} rows do not fit")
    _check_block(encoding, info, int(height), width)
    data = np.ascontiguousarray(arr, dtype=info.dtype.newbyteorder("<")).tobytes()
    return {
        "height": int(height),
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
