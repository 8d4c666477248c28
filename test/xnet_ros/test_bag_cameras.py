"""`xnet bag infer|eval` over a multi-camera bag in one pass: batches, names, rectification."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from test_bag_infer import TS, T, header, read_bag, stamp

from xnet_model.metrics import depth_metrics
from xnet_ros.bag.cameras import FrameBatcher, camera_names
from xnet_ros.bag.cli import main
from xnet_ros.bag.infer import InferOptions, run_infer
from xnet_ros.bag.io import BagError
from xnet_ros.conversions import image_to_array

N = 3
SIZES = {"front": (48, 64), "left": (36, 48)}  # (H, W): another size, the same aspect ratio
FX = 40.0
BARREL = (-0.25, 0.05, 0.0, 0.0, 0.0)  # left's distortion (plumb_bob)
OUTPUTS = ("depth", "depth/camera_info", "semantic/labels", "semantic/color", "points")


def stamp_of(i: int) -> int:
    return 3_000_000_000_000 + i * 100_000_000


def rgb_of(camera: str, i: int) -> np.ndarray:
    seed = 10 * i + (camera == "left")
    return np.random.default_rng(seed).integers(0, 256, (*SIZES[camera], 3), dtype=np.uint8)


def gt_of(camera: str, i: int) -> np.ndarray:
    h, w = SIZES[camera]
    return np.random.default_rng(500 + 10 * i + (camera == "left")).uniform(
        1.0, 9.0, (h, w)).astype(np.float32)


def k_of(camera: str) -> np.ndarray:
    h, w = SIZES[camera]
    return np.array([FX, 0, (w - 1) / 2, 0, FX, (h - 1) / 2, 0, 0, 1], np.float64)


def info_msg(camera: str, stamp_ns: int):
    h, w = SIZES[camera]
    k = k_of(camera)
    p = np.array([k[0], 0, k[2], 0, 0, k[4], k[5], 0, 0, 0, 1, 0], np.float64)
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    d = np.array(BARREL if camera == "left" else [0.0] * 5, np.float64)
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns, f"{camera}_optical"), height=h, width=w,
        distortion_model="plumb_bob", d=d, k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0,
        binning_y=0, roi=roi)


def image(camera: str, stamp_ns: int, arr: np.ndarray, encoding: str):
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    return T["sensor_msgs/msg/Image"](header=header(stamp_ns, f"{camera}_optical"),
                                      height=arr.shape[0], width=arr.shape[1],
                                      encoding=encoding, is_bigendian=0,
                                      step=data.size // arr.shape[0], data=data)


@pytest.fixture(scope="module")
def two_camera_bag(tmp_path_factory) -> Path:
    """/front/* and /left/*: image_raw, camera_info (left distorted), depth_gt (32FC1), in time
    order, the cameras interleaved as drivers publish them."""
    path = tmp_path_factory.mktemp("multicam") / "bag"
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for c in SIZES:
            for topic, msgtype in (("image_raw", "Image"), ("camera_info", "CameraInfo"),
                                   ("depth_gt", "Image")):
                conns[c, topic] = writer.add_connection(f"/{c}/{topic}",
                                                        f"sensor_msgs/msg/{msgtype}",
                                                        typestore=TS)
        for i in range(N):
            for c in SIZES:
                t = stamp_of(i) + (c == "left") * 1_000_000  # left 1 ms after front
                for topic, msg in (("camera_info", info_msg(c, t)),
                                   ("image_raw", image(c, t, rgb_of(c, i), "rgb8")),
                                   ("depth_gt", image(c, t, gt_of(c, i), "32FC1"))):
                    writer.write(conns[c, topic], t, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def rectified(camera: str, arr: np.ndarray, interpolation: int, border) -> np.ndarray:
    """left through OpenCV's own maps (K, D, R = I, P = K), what image_proc does."""
    if camera == "front":
        return arr
    h, w = SIZES[camera]
    k = k_of(camera).reshape(3, 3)
    m1, m2 = cv2.initUndistortRectifyMap(k, np.array(BARREL), np.eye(3), k, (w, h),
                                         cv2.CV_16SC2)
    return cv2.remap(arr, m1, m2, interpolation, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=border)


def test_camera_names_and_batches():
    assert camera_names(["/cam/image_raw"]) == [""]
    assert camera_names(["/front/image_raw", "/left/image_raw"]) == ["front", "left"]
    assert camera_names(["/stereo/left/image", "/stereo/right/image"]) == ["stereo/left",
                                                                           "stereo/right"]
    # the same namespace twice: the topics themselves
    assert camera_names(["/cam/left", "/cam/right"]) == ["cam/left", "cam/right"]
    with pytest.raises(BagError, match="given twice"):
        camera_names(["/a/image", "/a/image"])
    batcher = FrameBatcher(3)
    out = [batcher.add(item, camera) for item, camera in
           (("f0", "front"), ("l0", "left"), ("f1", "front"), ("l1", "left"), ("r1", "right"))]
    assert out == [[], [], [["f0", "l0"]], [], [["f1", "l1", "r1"]]]
    assert batcher.take() == [] and len(batcher) == 0


def test_infer_two_cameras_in_one_pass(two_camera_bag, tmp_path, model_dir, predictor):
    opts = InferOptions(image_topic=["/front/image_raw", "/left/image_raw"], quiet=True)
    summary = run_infer(two_camera_bag, tmp_path / "out", predictor, opts)
    assert (summary.images, summary.processed, summary.failed) == (2 * N, 2 * N, 0)
    assert summary.batches == N  # one forward pass per pair of frames
    out = read_bag(tmp_path / "out")
    assert set(out) == {f"/xnet/{c}/{name}" for c in SIZES for name in OUTPUTS} | {
        "/xnet/semantic/class_table"}
    for c, (h, w) in SIZES.items():
        for i in range(N):
            t = stamp_of(i) + (c == "left") * 1_000_000
            for name in OUTPUTS:
                bag_time, msg = out[f"/xnet/{c}/{name}"][i]
                assert (bag_time, stamp(msg), msg.header.frame_id) == (t, t, f"{c}_optical")
            depth = image_to_array(out[f"/xnet/{c}/depth"][i][1])
            assert depth.shape == (h, w)
            # what the model says on the (rectified) image; batched with the other camera
            net_input = rectified(c, rgb_of(c, i), cv2.INTER_LINEAR, 0)
            expected = predictor.predict(net_input).depth
            expected = np.where(expected > predictor.meta.min_depth, expected, np.nan)
            np.testing.assert_allclose(depth, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
        info = out[f"/xnet/{c}/depth/camera_info"][0][1]
        assert list(info.d) == [] and info.distortion_model == "plumb_bob"
        np.testing.assert_allclose(info.k, k_of(c))  # left: P (= K here) of the rectified camera


def test_infer_cli_several_topics_and_errors(two_camera_bag, tmp_path, model_dir, capsys):
    args = ["infer", str(two_camera_bag), "--model", str(model_dir), "--quiet",
            "--image-topic", "/front/image_raw", "--image-topic", "/left/image_raw"]
    assert main([*args, "--out", str(tmp_path / "a"), "--rectify", "off", "--no-points"]) == 0
    assert f"{2 * N} of {2 * N} images processed" in capsys.readouterr().out
    left_info = read_bag(tmp_path / "a")["/xnet/left/depth/camera_info"][0][1]
    np.testing.assert_allclose(left_info.k, k_of("left"))  # K, not rectified
    assert main([*args, "--out", str(tmp_path / "b"), "--camera-info-topic",
                 "/front/camera_info"]) == 1
    assert "1 --camera-info-topic for 2 --image-topic" in capsys.readouterr().err
    # one frame per forward pass: as many passes as frames
    assert main([*args, "--out", str(tmp_path / "c"), "--max-batch", "1"]) == 0
    assert "batched" not in capsys.readouterr().out


def test_eval_two_cameras_in_one_pass(two_camera_bag, tmp_path, model_dir, predictor, capsys):
    report = tmp_path / "report"
    assert main(["eval", str(two_camera_bag), "--model", str(model_dir), "--quiet",
                 "--report", str(report), "--max-depth", "10",
                 "--image-topic", "/front/image_raw", "--image-topic", "/left/image_raw",
                 "--depth-topic", "/front/depth_gt", "--depth-topic", "/left/depth_gt"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("front: 3 images: 3 matched") and "\nleft: 3 images" in printed
    summary = json.loads((report / "metrics.json").read_text())
    assert set(summary["cameras"]) == {"front", "left"}
    assert "| left | 3 | 3 |" in (report / "report.md").read_text()
    for c in SIZES:
        doc = json.loads((report / c / "metrics.json").read_text())
        assert doc["settings"]["camera"] == c and doc["settings"]["image_topic"] == (
            f"/{c}/image_raw")
        assert doc["settings"]["camera_info_topic"] == f"/{c}/camera_info"
        assert doc["counts"]["matched"] == N and summary["cameras"][c]["counts"] == doc["counts"]
        for i, frame in enumerate(doc["frames"]):
            # by hand: the prediction on the rectified image against the GT through the same
            # (nearest) maps, NaN outside the raw image
            rgb = rectified(c, rgb_of(c, i), cv2.INTER_LINEAR, 0)
            gt = rectified(c, gt_of(c, i), cv2.INTER_NEAREST, np.nan)
            expected = depth_metrics(predictor.predict(rgb).depth, gt, min_depth=1e-3,
                                     max_depth=10.0)
            assert frame["depth"]["abs_rel"] == pytest.approx(expected["abs_rel"], rel=1e-4)
            assert frame["depth"]["rmse"] == pytest.approx(expected["rmse"], rel=1e-4)
    # left's GT really went through the maps: against the raw GT the numbers differ
    left = json.loads((report / "left" / "metrics.json").read_text())
    rgb = rectified("left", rgb_of("left", 0), cv2.INTER_LINEAR, 0)
    raw = depth_metrics(predictor.predict(rgb).depth, gt_of("left", 0), max_depth=10.0)
    assert abs(raw["abs_rel"] - left["frames"][0]["depth"]["abs_rel"]) > 1e-3


def test_eval_needs_one_gt_topic_per_image_topic(two_camera_bag, tmp_path, model_dir, capsys):
    assert main(["eval", str(two_camera_bag), "--model", str(model_dir), "--quiet",
                 "--report", str(tmp_path / "r"), "--image-topic", "/front/image_raw",
                 "--image-topic", "/left/image_raw", "--depth-topic", "/front/depth_gt"]) == 1
    assert "1 --depth-topic for 2 --image-topic" in capsys.readouterr().err
