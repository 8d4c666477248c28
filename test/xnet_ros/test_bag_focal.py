"""`xnet bag eval` scores a camera-aware model in metres through the camera's focal length:
camera_info in the bag, or --fx when it has none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from xnet_model import build_model
from xnet_ros.bag.cli import main

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
H, W = 48, 64
CANONICAL = 40.0  # px at the 48x64 input
GT = 4.0  # metres everywhere


@pytest.fixture(scope="module")
def aware_model(tmp_path_factory) -> Path:
    """Depth head: sigmoid(0) x 10 m = 5 m canonical everywhere; canonical fx 40 px."""
    torch.manual_seed(0)
    model = build_model({"encoder": {"name": "test_convnext"},
                         "decoder": {"name": "test_convnext"}, "depth": {"max_depth": 10.0},
                         "data": {"input_size": [H, W], "canonical_focal": CANONICAL}})
    with torch.no_grad():
        model.heads.depth.weight.zero_()
        model.heads.depth.bias.zero_()
    path = tmp_path_factory.mktemp("aware") / "model"
    model.save(path)
    return path


def header(i: int):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=100 + i,
                                                                           nanosec=0),
                                    frame_id="cam")


def image(i: int, encoding: str, arr: np.ndarray):
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    return T["sensor_msgs/msg/Image"](header=header(i), height=H, width=W, encoding=encoding,
                                      is_bigendian=0, step=data.size // H, data=data)


def camera_info(i: int, fx: float):
    k = np.array([fx, 0, (W - 1) / 2, 0, fx, (H - 1) / 2, 0, 0, 1], np.float64)
    p = np.array([fx, 0, (W - 1) / 2, 0, 0, fx, (H - 1) / 2, 0, 0, 0, 1, 0], np.float64)
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(i), height=H, width=W, distortion_model="plumb_bob",
        d=np.zeros(5, np.float64), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0,
        binning_y=0, roi=roi)


def write_bag(path: Path, info_fx: float | None = None, frames: int = 2) -> Path:
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=TS)
                 for t in ("/cam/image_raw", "/gt/depth")}
        if info_fx is not None:
            conns["/cam/camera_info"] = writer.add_connection(
                "/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        for i in range(frames):
            rgb = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
            msgs = [("/cam/image_raw", image(i, "rgb8", rgb)),
                    ("/gt/depth", image(i, "32FC1", np.full((H, W), GT, np.float32)))]
            if info_fx is not None:
                msgs.insert(0, ("/cam/camera_info", camera_info(i, info_fx)))
            for topic, msg in msgs:
                writer.write(conns[topic], (100 + i) * 1_000_000_000,
                             TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def abs_rel(bag: Path, model: Path, report: Path, *args: str) -> float:
    assert main(["eval", str(bag), "--model", str(model), "--report", str(report), "--quiet",
                 "--image-topic", "/cam/image_raw", "--depth-topic", "/gt/depth", *args]) == 0
    return json.loads((report / "metrics.json").read_text())["depth"]["abs_rel"]


def test_bag_eval_uses_the_focal_of_camera_info_or_fx(tmp_path, aware_model, caplog):
    # fx 32 px at the 64-px-wide input: 5 m x 32 / 40 = 4 m = GT -> abs_rel 0
    with_info = write_bag(tmp_path / "info", info_fx=32.0)
    assert abs_rel(with_info, aware_model, tmp_path / "r1") == pytest.approx(0.0, abs=1e-6)
    bare = write_bag(tmp_path / "bare")
    assert abs_rel(bare, aware_model, tmp_path / "r2", "--fx", "32") == \
        pytest.approx(0.0, abs=1e-6)
    # no focal at all: the canonical 5 m, |4 - 5| / 4 = 0.25, and one warning says why
    caplog.clear()
    assert abs_rel(bare, aware_model, tmp_path / "r3") == pytest.approx(0.25, rel=1e-5)
    assert sum("no focal length" in r.getMessage() for r in caplog.records) == 1
