"""Rectification as image_proc does it (no ROS): a plane seen through distortion stays a plane."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from distorted_camera import (
    CX,
    CY,
    FX,
    FY,
    PLANE,
    H,
    W,
    backproject,
    camera_info,
    plane_fit,
    raw_plane_depth,
)

from xnet_ros.geometry import Intrinsics
from xnet_ros.rectify import CameraCalibration, Rectifier, RectifierCache, RectifyError


def true_plane_error(points: np.ndarray) -> np.ndarray:
    a, b, c = PLANE
    return np.abs(points[:, 2] - (a * points[:, 0] + b * points[:, 1] + c))


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial", "equidistant"])
def test_a_distorted_plane_back_projects_to_the_plane_only_after_rectification(model):
    raw = raw_plane_depth(model)
    calib = CameraCalibration.from_camera_info(camera_info(model))
    assert calib.distorted and calib.distortion_model == model
    rect = Rectifier(calib, H, W)
    i = rect.intrinsics
    assert (i.fx, i.fy, i.cx, i.cy, i.width, i.height) == (FX, FY, CX, CY, W, H)  # P = K here
    points = backproject(rect.rectify(raw), i.fx, i.fy, i.cx, i.cy)
    assert len(points) > 0.95 * H * W  # barrel distortion: the rectified view is all inside
    coef, rms = plane_fit(points)
    np.testing.assert_allclose(coef, PLANE, rtol=1e-4, atol=1e-4)
    assert rms < 1e-3 and true_plane_error(points).max() < 0.01
    # the raw image taken as a pinhole one: bent, up to decimetres off at the edges
    unrectified = backproject(raw, FX, FY, CX, CY)
    assert true_plane_error(unrectified).max() > 0.3
    assert plane_fit(unrectified)[1] > 0.03


def test_the_new_camera_is_p_as_in_image_proc():
    # P zoomed out to 0.6 (what a calibration with alpha > 0 gives): outputs are in camera P
    p = (0.6 * FX, 0.0, CX, 0.0, 0.0, 0.6 * FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0)
    calib = CameraCalibration.from_camera_info(camera_info(p=p))
    rect = Rectifier(calib, H, W)
    assert calib.rectified_intrinsics == rect.intrinsics == Intrinsics(120.0, 120.0, CX, CY, W, H)
    rectified = rect.rectify(raw_plane_depth())
    assert np.isnan(rectified[0, 0]) and np.isfinite(rectified[H // 2, W // 2])  # black corners
    points = backproject(rectified, 120.0, 120.0, CX, CY)
    np.testing.assert_allclose(plane_fit(points)[0], PLANE, rtol=1e-4, atol=1e-4)
    # image_geometry's maps: cv2.initUndistortRectifyMap(K, D, R, P) at the raw size
    k = np.array(calib.k).reshape(3, 3)
    m1, m2 = cv2.initUndistortRectifyMap(k, np.array(calib.d), np.eye(3),
                                         np.array(p).reshape(3, 4), (W, H), cv2.CV_16SC2)
    np.testing.assert_array_equal(rect.map1, m1)
    np.testing.assert_array_equal(rect.map2, m2)


def test_half_resolution_images_get_scaled_maps_and_intrinsics():
    calib = CameraCalibration.from_camera_info(camera_info())
    half = Rectifier(calib, H // 2, W // 2)
    # (c + 0.5) / 2 - 0.5 by hand
    assert half.intrinsics == Intrinsics(100.0, 100.0, 79.5, 59.5, W // 2, H // 2)
    small = cv2.resize(raw_plane_depth(), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    i = half.intrinsics
    points = backproject(half.rectify(small), i.fx, i.fy, i.cx, i.cy)
    np.testing.assert_allclose(plane_fit(points)[0], PLANE, rtol=2e-3, atol=2e-3)


def test_calibration_parsing_and_the_cases_without_rectification():
    plain = CameraCalibration.from_camera_info(camera_info(d=[0.0] * 5))
    assert not plain.distorted  # zero coefficients: passed through, like image_proc
    assert not CameraCalibration.from_camera_info(camera_info(d=[])).distorted
    # P all zero (some drivers): rectify to K; R all zero: identity
    info = camera_info(p=[0.0] * 12)
    info.r = [0.0] * 9
    calib = CameraCalibration.from_camera_info(info)
    assert calib.p == () and calib.r == (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    assert calib.rectified_intrinsics == calib.intrinsics == Intrinsics(FX, FY, CX, CY, W, H)
    assert CameraCalibration.pinhole(calib.intrinsics).intrinsics == calib.intrinsics
    with pytest.raises(ValueError, match="uncalibrated"):
        CameraCalibration.from_camera_info(SimpleNamespace(**{**vars(camera_info()),
                                                              "k": [0.0] * 9}))
    with pytest.raises(ValueError, match="p has 5 values"):
        CameraCalibration.from_camera_info(SimpleNamespace(**{**vars(camera_info()),
                                                              "p": [1.0] * 5}))


@pytest.mark.parametrize("model, d, message", [
    ("kannala_brandt", (0.1, 0.0, 0.0, 0.0), "'kannala_brandt' cannot be rectified "
                                             "(supported: plumb_bob, rational_polynomial, "
                                             "equidistant)"),
    ("equidistant", (0.1, 0.0, 0.0, 0.0, 0.0), "equidistant distortion needs 4 coefficients"),
    ("plumb_bob", (0.1, 0.0, 0.0), "plumb_bob distortion with 3 coefficients"),
])
def test_unsupported_models_are_a_clear_error(model, d, message):
    calib = CameraCalibration.from_camera_info(camera_info(model, d=d))
    with pytest.raises(RectifyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Rectifier(calib, H, W)
    # without distortion any model name is fine (nothing to undistort)
    CameraCalibration.from_camera_info(camera_info(model, d=[0.0] * len(d))).check_rectifiable()


def test_maps_are_computed_once_per_calibration_and_size():
    cache = RectifierCache()
    calib = CameraCalibration.from_camera_info(camera_info())
    first = cache.get(calib, H, W)
    # the same camera_info again (drivers publish one per frame): the same maps
    assert cache.get(CameraCalibration.from_camera_info(camera_info()), H, W) is first
    assert cache.get(calib, H // 2, W // 2) is not first
    other = CameraCalibration.from_camera_info(camera_info(d=(-0.2, 0.0, 0.0, 0.0, 0.0)))
    assert cache.get(other, H, W).calibration == other
    with pytest.raises(ValueError, match="the maps are for 320x240"):
        first.rectify(np.zeros((10, 10, 3), np.uint8))
