"""A synthetic distorted camera looking at a tilted plane (test helper, no ROS).

The plane is z = A x + B y + C in the camera optical frame (metres). The raw depth image holds,
at every raw (distorted) pixel, the z of the plane point seen through that pixel: the pixel is
undistorted with OpenCV's iterative `undistortPoints` (not the remap maps under test) into a ray
(x/z, y/z, 1), which meets the plane at z = C / (1 - A x/z - B y/z).
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np

PLANE = (0.3, 0.1, 4.0)  # A, B, C
H, W = 240, 320
FX = FY = 200.0
CX, CY = 159.5, 119.5
K = (FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0)
# strong barrel distortion: ~20 % radial shrink in the corners
DISTORTIONS = {
    "plumb_bob": (-0.3, 0.1, 0.001, -0.001, 0.0),
    "rational_polynomial": (-0.3, 0.1, 0.001, -0.001, 0.0, 0.05, 0.0, 0.0),
    "equidistant": (0.1, -0.05, 0.01, 0.0),
}


def camera_info(model: str = "plumb_bob", d=None, p=None, width: int = W, height: int = H):
    """A CameraInfo-like message (ROS 2 field names); P defaults to K (no zoom)."""
    d = DISTORTIONS[model] if d is None else d
    if p is None:
        p = (FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0)
    return SimpleNamespace(width=width, height=height, distortion_model=model, d=list(d),
                           k=list(K), r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=list(p))


def raw_plane_depth(model: str = "plumb_bob", d=None, plane=PLANE) -> np.ndarray:
    """(H, W) float32: z of the plane at every raw pixel of the distorted camera."""
    d = np.array(DISTORTIONS[model] if d is None else d, np.float64)
    k = np.array(K, np.float64).reshape(3, 3)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    pixels = np.stack([u.ravel(), v.ravel()], -1)[:, None, :]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    if model == "equidistant":
        rays = cv2.fisheye.undistortPoints(pixels, k, d, criteria=criteria)
    else:
        rays = cv2.undistortPointsIter(pixels, k, d, None, None, criteria)
    x, y = rays[:, 0, 0].reshape(H, W), rays[:, 0, 1].reshape(H, W)
    a, b, c = plane
    return (c / (1.0 - a * x - b * y)).astype(np.float32)


def backproject(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(N, 3) points of the finite depth pixels, pinhole model, float64."""
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    ok = np.isfinite(depth)
    z = depth[ok].astype(np.float64)
    return np.stack([(u[ok] - cx) * z / fx, (v[ok] - cy) * z / fy, z], -1)


def plane_fit(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares z = A x + B y + C: ((A, B, C), RMS of the z residuals in metres)."""
    design = np.column_stack([points[:, 0], points[:, 1], np.ones(len(points))])
    coef, *_ = np.linalg.lstsq(design, points[:, 2], rcond=None)
    residual = points[:, 2] - design @ coef
    return coef, float(np.sqrt(np.mean(residual ** 2)))
