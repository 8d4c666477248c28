"""Camera calibration from camera_info and image rectification as image_proc does it, no ROS.

Many drivers publish `image_raw` with a distorted camera_info (non-zero `d`). Treating such an
image as a pinhole one bends the point cloud at the edges, so with `rectify: auto` the frame
pipeline first undistorts the image like `image_proc`'s rectify node (image_geometry's
`PinholeCameraModel::rectifyImage`):

* `d` all zero (or empty): the image is used as is, with `k` (image_proc passes it through);
* `plumb_bob` / `rational_polynomial`: `cv2.initUndistortRectifyMap(K, D, R, P)`;
  `equidistant`: `cv2.fisheye.initUndistortRectifyMap(K, D, R, P)`; fixed-point maps
  (CV_16SC2), bilinear `cv2.remap`, black outside the raw image. The new camera is the
  camera_info's `P` (its left 3x3; the calibration's alpha is already in it), at the raw size;
* any other model with distortion: `RectifyError` naming it.

The rectified image is the pinhole camera `P` (fx = P[0], fy = P[5], cx = P[2], cy = P[6]);
`depth/camera_info` then carries that camera, `d` empty. A camera_info without `P` (all zero)
rectifies to `K`. Maps are computed once per calibration and image size (`RectifierCache`); an
image of another resolution with the same aspect ratio gets K and P scaled to it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .geometry import Intrinsics

PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT = "plumb_bob", "rational_polynomial", "equidistant"
SUPPORTED_MODELS = (PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT)
_OPENCV_D_LENGTHS = (4, 5, 8, 12, 14)  # what cv2.initUndistortRectifyMap accepts
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class RectifyError(ValueError):
    """A distorted camera that cannot be rectified (unsupported model, bad coefficients)."""


def _floats(values: Any, n: int | None, what: str) -> tuple[float, ...]:
    arr = np.asarray(values if values is not None else (), dtype=np.float64).reshape(-1)
    if n is not None and arr.size not in (0, n):
        raise ValueError(f"camera info {what} has {arr.size} values, expected {n}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class CameraCalibration:
    """What a sensor_msgs/CameraInfo says about the raw image (hashable: the cache key)."""

    width: int
    height: int
    k: tuple[float, ...]  # 3x3 row-major
    d: tuple[float, ...] = ()
    r: tuple[float, ...] = _IDENTITY  # 3x3
    p: tuple[float, ...] = ()  # 3x4; () = none given (K is the rectified camera)
    distortion_model: str = PLUMB_BOB

    @classmethod
    def from_camera_info(cls, msg: Any) -> CameraCalibration:
        """Parse and validate (ValueError: uncalibrated, no size, malformed arrays)."""
        intr = Intrinsics.from_camera_info(msg)  # k present, fx/fy > 0, size > 0
        k = _floats(intr_k if (intr_k := getattr(msg, "k", None)) is not None
                    else getattr(msg, "K", None), 9, "k")
        r = _floats(getattr(msg, "r", None), 9, "r")
        p = _floats(getattr(msg, "p", None), 12, "p")
        d = _floats(getattr(msg, "d", None), None, "d")
        if not any(r):  # all zero or missing: monocular, no rotation
            r = _IDENTITY
        if len(p) == 12 and (p[0] <= 0 or p[5] <= 0):
            p = ()  # all zero (some drivers): rectify to K
        model = str(getattr(msg, "distortion_model", "") or PLUMB_BOB)
        return cls(intr.width, intr.height, k, d, r, p, model)

    @classmethod
    def pinhole(cls, intr: Intrinsics) -> CameraCalibration:
        return cls(intr.width, intr.height,
                   (intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0))

    @property
    def distorted(self) -> bool:
        """Any non-zero coefficient (image_geometry's CALIBRATED distortion state)."""
        return any(v != 0.0 for v in self.d)

    @property
    def intrinsics(self) -> Intrinsics:
        """The raw image's pinhole part (K)."""
        k = self.k
        return Intrinsics(k[0], k[4], k[2], k[5], self.width, self.height)

    @property
    def rectified_intrinsics(self) -> Intrinsics:
        """The rectified image's camera: P's left 3x3 (K without P)."""
        if not self.p:
            return self.intrinsics
        p = self.p
        return Intrinsics(p[0], p[5], p[2], p[6], self.width, self.height)

    def check_rectifiable(self) -> None:
        """RectifyError unless `Rectifier` can undistort this camera."""
        if not self.distorted:
            return
        if self.distortion_model not in SUPPORTED_MODELS:
            raise RectifyError(
                f"camera_info distortion_model {self.distortion_model!r} cannot be rectified "
                f"(supported: {', '.join(SUPPORTED_MODELS)}); set rectify: off to use the "
                "image as a pinhole camera (K only)")
        n = len(self.d)
        if self.distortion_model == EQUIDISTANT and n != 4:
            raise RectifyError(f"camera_info: equidistant distortion needs 4 coefficients, "
                               f"got {n}")
        if self.distortion_model != EQUIDISTANT and n not in _OPENCV_D_LENGTHS:
            raise RectifyError(f"camera_info: {self.distortion_model} distortion with {n} "
                               f"coefficients (expected one of {_OPENCV_D_LENGTHS})")


def _scaled_matrix(m: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K or P (first 3 columns) of the same camera after resizing (pixel edges map onto each
    other, as `Intrinsics.scaled`)."""
    m = m.copy()
    m[0, 0] *= sx
    m[1, 1] *= sy
    m[0, 2] = (m[0, 2] + 0.5) * sx - 0.5
    m[1, 2] = (m[1, 2] + 0.5) * sy - 0.5
    return m


class Rectifier:
    """Undistortion maps of one calibration at one image size; `rectify(image)` remaps."""

    def __init__(self, calib: CameraCalibration, height: int, width: int):
        calib.check_rectifiable()
        self.calibration, self.size = calib, (height, width)
        sx, sy = width / calib.width, height / calib.height
        k = _scaled_matrix(np.array(calib.k, np.float64).reshape(3, 3), sx, sy)
        new = (np.array(calib.p, np.float64).reshape(3, 4)[:, :3] if calib.p
               else np.array(calib.k, np.float64).reshape(3, 3))
        new = _scaled_matrix(new, sx, sy)
        r = np.array(calib.r, np.float64).reshape(3, 3)
        d = np.array(calib.d, np.float64)
        if calib.distortion_model == EQUIDISTANT:
            self.map1, self.map2 = cv2.fisheye.initUndistortRectifyMap(
                k, d, r, new, (width, height), cv2.CV_16SC2)
        else:
            self.map1, self.map2 = cv2.initUndistortRectifyMap(
                k, d, r, new, (width, height), cv2.CV_16SC2)
        self.intrinsics = Intrinsics(float(new[0, 0]), float(new[1, 1]), float(new[0, 2]),
                                     float(new[1, 2]), width, height)

    def rectify(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR,
                border: float | None = None) -> np.ndarray:
        """The rectified image (same size); outside the raw image `border`, by default 0, NaN
        for float images (image_geometry's borders). Ground truth: INTER_NEAREST."""
        if image.shape[:2] != self.size:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the maps are for "
                             f"{self.size[1]}x{self.size[0]}")
        if border is None:
            border = np.nan if image.dtype.kind == "f" else 0
        return cv2.remap(image, self.map1, self.map2, interpolation,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=border)


class RectifierCache:
    """The maps of the latest calibration and image size of one camera (computed once)."""

    def __init__(self) -> None:
        self._rectifier: Rectifier | None = None

    def get(self, calib: CameraCalibration, height: int, width: int) -> Rectifier:
        cached = self._rectifier
        if cached is None or cached.calibration != calib or cached.size != (height, width):
            cached = self._rectifier = Rectifier(calib, height, width)
        return cached
