"""`python -m xnet_ros.demo` end to end: bag contents, counters and previews."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ros]

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
pytest.importorskip("rosbags", reason="rosbags is not installed")
cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[2]
FRAMES = 6
OUTPUTS = ("/depth", "/depth/camera_info", "/semantic/labels", "/semantic/color", "/points")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo_out")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "xnet_ros.demo", "--out", str(out), "--frames", str(FRAMES),
         "--width", "320", "--height", "240", "--rate", "10"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), proc.stdout


def test_demo_prints_frames_fps_and_latencies(demo):
    _, summary, stdout = demo
    for text in ("frames", "FPS", "preprocess", "inference", "postprocess", "end-to-end"):
        assert text in stdout, text
    t = summary["timings"]
    assert t["fps"] > 0 and t["infer_ms"]["mean"] > 0 and t["end_to_end_ms"]["mean"] > 0


def test_demo_counters_balance(demo):
    _, summary, _ = demo
    c = summary["counters"]
    assert summary["frames_published"] == FRAMES
    assert 1 <= c["received"] <= FRAMES and c["in_flight"] == 0
    assert c["received"] == c["processed"] + c["dropped"] + c["skipped"] + c["failed"]
    assert c["processed"] >= 1 and c["failed"] == 0
    # one process on loopback DDS: every published frame reaches the node, and the recorder
    # subscribes to every output before the first frame, so none is skipped
    assert c["received"] == FRAMES and c["skipped"] == 0
    assert c["processed"] + c["dropped"] == FRAMES


def test_demo_bag_has_every_topic_with_expected_counts(demo):
    from rosbags.rosbag2 import Reader

    from xnet_ros.bag.messages import make_typestore
    from xnet_ros.demo import BAG_NAME

    out, summary, _ = demo
    processed = summary["counters"]["processed"]
    typestore = make_typestore()
    bag = out / BAG_NAME
    assert (bag / "metadata.yaml").is_file() and list(bag.glob("*.mcap"))
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
        stamps: dict[str, list[int]] = {}
        stats = []
        for conn, _, raw in reader.messages():
            if conn.topic == "/xnet_node/stats":
                stats.append(typestore.deserialize_cdr(raw, conn.msgtype))
            if conn.topic in ("/image", "/depth", "/points"):
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                stamps.setdefault(conn.topic, []).append(
                    msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
                if conn.topic == "/depth":
                    assert (msg.encoding, msg.width, msg.height) == ("32FC1", 320, 240)
                    assert msg.header.frame_id == "camera_optical_frame"
                if conn.topic == "/points":
                    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "label"]
    assert counts["/image"] == FRAMES and counts["/camera_info"] == FRAMES
    for topic in OUTPUTS:
        assert counts[topic] == processed, topic
    assert types["/points"] == "sensor_msgs/msg/PointCloud2"
    assert counts["/diagnostics"] >= 1
    if "/xnet_node/stats" in counts:  # recorded when the xnet_ros messages are built
        assert counts["/xnet_node/stats"] == processed
        assert counts["/semantic/class_table"] == 1
        assert types["/xnet_node/stats"] == "xnet_ros/msg/InferenceStats"
        # each stats message counts its own frame: the last one says what the node counted
        c = summary["counters"]
        assert [m.frames_processed for m in stats] == list(range(1, processed + 1))
        last = stats[-1]
        assert (last.frames_received, last.frames_dropped, last.frames_failed) == (
            c["received"], c["dropped"] + c["skipped"], 0)
    # every output belongs to a published input frame
    assert set(stamps["/depth"]) <= set(stamps["/image"])
    assert stamps["/depth"] == stamps["/points"]
    assert summary["bag_counts"] == counts


def test_demo_previews_are_non_trivial(demo):
    out, summary, _ = demo
    assert sorted(summary["previews"]) == sorted(
        ["input.png", "depth.png", "labels.png", "points.png", "preview.png"])
    for name in summary["previews"]:
        img = cv2.imread(str(out / name), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] >= 240 and img.shape[1] >= 320, name
        assert img.std() > 5.0, f"{name} is (nearly) uniform"
        assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 3, name


def test_demo_accuracy_is_the_mean_abs_rel_of_the_recorded_depth(demo):
    """AbsRel recomputed here from the bag and the re-rendered ground truth (same walk, seed 0):
    mean over frames of mean(|d - gt| / gt), d clipped to [min, max] depth, NaN -> min depth,
    pixels with min < gt < max (the model's range, from its config.json)."""
    from rosbags.rosbag2 import Reader

    from xnet_model.data.synthetic import SyntheticCamera
    from xnet_ros.bag.messages import make_typestore
    from xnet_ros.demo import BAG_NAME

    out, summary, _ = demo
    cfg = json.loads((Path(summary["model"]) / "config.json").read_text())["model"]["depth"]
    lo, hi = cfg["min_depth"], cfg["max_depth"]
    typestore, msgs = make_typestore(), {}
    with Reader(out / BAG_NAME) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic in ("/image", "/depth"):
                m = typestore.deserialize_cdr(raw, conn.msgtype)
                msgs.setdefault(conn.topic, []).append(m)
    index = {(m.header.stamp.sec, m.header.stamp.nanosec): i
             for i, m in enumerate(msgs["/image"])}  # the i-th image is the walk's frame i
    camera = SyntheticCamera(240, 320, seed=0)
    values = []
    for m in msgs["/depth"]:
        gt = camera.frame(index[(m.header.stamp.sec, m.header.stamp.nanosec)]).depth
        d = np.frombuffer(bytes(m.data), "<f4").reshape(240, 320).astype(np.float64)
        d = np.clip(np.nan_to_num(d, nan=lo), lo, hi)
        ok = np.isfinite(gt) & (gt > lo) & (gt < hi)
        values.append(np.mean(np.abs(d[ok] - gt[ok]) / gt[ok]))
    assert summary["accuracy"]["depth_abs_rel"] == pytest.approx(np.mean(values), rel=1e-9)
    assert 0.0 <= summary["accuracy"]["pixel_accuracy"] <= 1.0
