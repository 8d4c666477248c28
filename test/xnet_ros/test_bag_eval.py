"""`xnet bag eval` on the KITTI MCAP fixture and on sqlite3/MCAP bags with synthetic GT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from xnet_model.metrics import DepthMetricAccumulator, SegmentationMetric, depth_metrics
from xnet_ros.bag.cli import main
from xnet_ros.bag.evaluate import StampMatcher
from xnet_ros.bag.io import BagReader
from xnet_ros.conversions import image_to_array

KITTI = "rosbag/kitti_tiny_ros2_mcap"
KITTI_IMAGE = "/kitti/camera_color_left/image_raw"
TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
H, W = 48, 64
MAX_DEPTH = 10.0
MS = 1_000_000


def stamp_of(i: int) -> int:
    return 2_000_000_000_000 + i * 100 * MS


def image_msg(stamp: int, encoding: str, arr: np.ndarray):
    sec, nsec = divmod(stamp, 1_000_000_000)
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                   frame_id="cam")
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    return T["sensor_msgs/msg/Image"](header=hdr, height=arr.shape[0], width=arr.shape[1],
                                      encoding=encoding, is_bigendian=0,
                                      step=data.size // arr.shape[0], data=data)


def frame_rgb(i: int, size=(H, W)) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)


def gt_depth(i: int, size=(H, W)) -> np.ndarray:
    depth = np.random.default_rng(100 + i).uniform(0.5, 9.5, size).astype(np.float32)
    depth[: size[0] // 4] = 0.0  # no return
    return depth


def gt_labels(i: int) -> np.ndarray:
    labels = np.random.default_rng(200 + i).integers(0, 10, (H, W), dtype=np.uint8)
    labels[:, : W // 8] = 255  # ignore
    return labels


def write_bag(path: Path, n: int, *, storage: str = "sqlite3", gt_offset_ns: int = 0,
              missing_gt: tuple[int, ...] = (), gt_bag_delay_ns: int = 0,
              size=(H, W), labels: bool = True, missing_labels: tuple[int, ...] = ()) -> Path:
    """/cam/image_raw rgb8, /gt/depth 32FC1 m, /gt/depth_mm 16UC1 mm, /gt/labels mono8.
    GT header stamps are the image's + gt_offset_ns; GT is written gt_bag_delay_ns later."""
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        conns = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=TS)
                 for t in ("/cam/image_raw", "/gt/depth", "/gt/depth_mm", "/gt/labels")}
        info = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo",
                                     typestore=TS)
        del info  # present, wrong type for GT
        for i in range(n):
            msgs = [("/cam/image_raw", 0, image_msg(stamp_of(i), "rgb8", frame_rgb(i, size)))]
            if i not in missing_gt:
                gt_stamp, depth = stamp_of(i) + gt_offset_ns, gt_depth(i, size)
                mm = np.round(depth * 1000).astype(np.uint16)
                msgs += [("/gt/depth", gt_bag_delay_ns, image_msg(gt_stamp, "32FC1", depth)),
                         ("/gt/depth_mm", gt_bag_delay_ns, image_msg(gt_stamp, "16UC1", mm))]
                if labels and i not in missing_labels:
                    msgs.append(("/gt/labels", gt_bag_delay_ns,
                                 image_msg(gt_stamp, "mono8", gt_labels(i))))
            for topic, delay, msg in msgs:
                writer.write(conns[topic], stamp_of(i) + delay,
                             TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def evaluate(bag, model_dir, report, *args) -> int:
    return main(["eval", str(bag), "--model", str(model_dir), "--report", str(report),
                 "--quiet", *map(str, args)])


def load(report: Path) -> dict:
    return json.loads((report / "metrics.json").read_text())


def nan_to_none(metrics: dict) -> dict:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


# ---------------------------------------------------------------------------------------------
# KITTI


def kitti_arrays(fixtures_dir, gt_topic):
    images, gts = [], []
    with BagReader(fixtures_dir / KITTI) as bag:
        for topic, _, raw in bag.messages([KITTI_IMAGE, gt_topic]):
            msg = bag.deserialize(raw, "sensor_msgs/msg/Image")
            arr = image_to_array(msg)
            if topic == KITTI_IMAGE:
                images.append(arr)
            else:
                if msg.encoding == "16UC1":  # millimetres; 65535 = saturated, unknown
                    arr = np.where(arr == 65535, np.nan, arr.astype(np.float32) / 1000)
                gts.append(arr.astype(np.float32))
    return images, gts


@pytest.mark.parametrize("gt_topic", ["depth_gt", "depth_gt_mm"])
def test_kitti_metrics_equal_xnet_model_metrics(fixtures_dir, model_dir, predictor, tmp_path,
                                                gt_topic):
    gt_topic = f"/kitti/camera_color_left/{gt_topic}"
    report = tmp_path / "report"
    assert evaluate(fixtures_dir / KITTI, model_dir, report, "--image-topic", KITTI_IMAGE,
                    "--depth-topic", gt_topic, "--crop", "garg", "--max-depth", 80) == 0
    doc = load(report)
    images, gts = kitti_arrays(fixtures_dir, gt_topic)
    accumulator = DepthMetricAccumulator(min_depth=1e-3, max_depth=80.0, crop="garg")
    for rgb, gt, frame in zip(images, gts, doc["frames"], strict=True):
        pred = predictor.predict(rgb).depth
        accumulator.update(pred, gt)
        expected = depth_metrics(pred, gt, min_depth=1e-3, max_depth=80.0, crop="garg")
        assert frame["depth"] == pytest.approx(expected, rel=1e-9)
    assert doc["depth"] == pytest.approx(accumulator.compute(), rel=1e-9)
    assert doc["counts"]["images"] == doc["counts"]["matched"] == 3
    assert doc["counts"]["without_gt"] == 0


def test_kitti_16uc1_and_32fc1_gt_agree_within_mm(fixtures_dir, model_dir, tmp_path):
    """16UC1 saturates at 65.535 m, so both are compared below that."""
    docs = []
    for topic in ("depth_gt", "depth_gt_mm"):
        report = tmp_path / topic
        assert evaluate(fixtures_dir / KITTI, model_dir, report, "--image-topic", KITTI_IMAGE,
                        "--depth-topic", f"/kitti/camera_color_left/{topic}",
                        "--max-depth", 65) == 0
        docs.append(load(report)["depth"])
    metres, millimetres = docs
    assert metres["count"] == millimetres["count"] == 3
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert millimetres[key] == pytest.approx(metres[key], rel=1e-3, abs=1e-3)
    for key in ("d1", "d2", "d3"):  # pixels near a threshold may flip
        assert millimetres[key] == pytest.approx(metres[key], abs=2e-3)


def test_kitti_report_files(fixtures_dir, model_dir, tmp_path):
    report = tmp_path / "report"
    assert evaluate(fixtures_dir / KITTI, model_dir, report, "--image-topic", KITTI_IMAGE,
                    "--depth-topic", "/kitti/camera_color_left/depth_gt", "--num-panels", 2,
                    "--max-depth", 80) == 0
    doc = load(report)
    assert doc["files"]["panels"] == ["panel_000000.png", "panel_000002.png"]
    assert doc["files"]["plots"] == ["abs_rel_over_time.png", "error_histogram.png"]
    markdown = (report / "report.md").read_text()
    for name in doc["files"]["panels"] + doc["files"]["plots"]:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in markdown
    assert f"| {doc['depth']['abs_rel']:.4f} |" in markdown


# ---------------------------------------------------------------------------------------------
# Synthetic sqlite3 / MCAP bags


def test_depth_and_labels_metrics_equal_direct_computation(tmp_path, model_dir, predictor):
    bag = write_bag(tmp_path / "in", 4, gt_bag_delay_ns=250 * MS)  # GT arrives 2 frames late
    report = tmp_path / "report"
    assert evaluate(bag, model_dir, report, "--image-topic", "/cam/image_raw", "--depth-topic",
                    "/gt/depth", "--labels-topic", "/gt/labels", "--max-depth", MAX_DEPTH) == 0
    doc = load(report)
    accumulator = DepthMetricAccumulator(min_depth=1e-3, max_depth=MAX_DEPTH)
    segmentation = SegmentationMetric(10, ignore_index=255)
    for i in range(4):
        prediction = predictor.predict(frame_rgb(i))
        accumulator.update(prediction.depth, gt_depth(i))
        segmentation.update(prediction.labels, gt_labels(i))
    assert nan_to_none(doc["depth"]) == pytest.approx(nan_to_none(accumulator.compute()),
                                                      rel=1e-9)
    expected = segmentation.compute()
    assert doc["segmentation"]["mIoU"] == pytest.approx(expected["mIoU"], rel=1e-12)
    assert doc["segmentation"]["aAcc"] == pytest.approx(expected["aAcc"], rel=1e-12)
    assert [c["IoU"] for c in doc["segmentation"]["classes"]] == pytest.approx(
        [None if math.isnan(v) else v for v in expected["IoU"]], rel=1e-12)
    assert doc["counts"]["matched"] == 4
    assert [f["stamp_ns"] for f in doc["frames"]] == [stamp_of(i) for i in range(4)]


# ---------------------------------------------------------------------------------------------
# Hand-computed metrics: a model whose heads ignore the features predicts 5 m and class 3
# everywhere, so each metric below is a few lines of arithmetic, independent of depth_metrics.

CONST_SIZE = (32, 64)  # the model's input size: no resizing anywhere
CONST_DEPTH, CONST_CLASS = 5.0, 3


@pytest.fixture(scope="module")
def constant_model_dir(tmp_path_factory) -> Path:
    import torch

    from xnet_model import build_model

    model = build_model("atto_x_atto_multitask", data={"input_size": list(CONST_SIZE)})
    assert model.cfg.depth.max_depth == 10.0 and model.cfg.semantic.num_classes == 10
    with torch.no_grad():
        model.heads.depth.weight.zero_()
        model.heads.depth.bias.zero_()  # depth = sigmoid(0) * 10 m = 5 m
        model.heads.semantic.weight.zero_()
        model.heads.semantic.bias.zero_()
        model.heads.semantic.bias[CONST_CLASS] = 1.0  # argmax = class 3
    path = tmp_path_factory.mktemp("constant") / "model"
    model.save(path)
    return path


# (row, col) -> GT depth in metres; every other pixel 0 (no return)
HAND_DEPTH = [
    # valid: 4, 5, 8, 2.5; not evaluated: 10 (= max depth), 12 (beyond), NaN
    {(1, 1): 4.0, (2, 5): 5.0, (10, 20): 8.0, (31, 63): 2.5,
     (0, 0): 10.0, (5, 5): 12.0, (6, 6): np.nan},
    {(3, 3): 5.0, (4, 40): 6.25, (7, 7): 10.0},  # valid: 5, 6.25
    {(8, 8): 10.0, (9, 9): 0.0},  # nothing valid
]
# (row, col) -> GT class; every other pixel 255 (ignore)
HAND_LABELS = [
    {(1, 1): 3, (2, 2): 3, (3, 3): 3, (4, 4): 1},
    {(5, 5): 3, (6, 6): 3},
    {(7, 7): 3},
]
# Per frame, pred p = 5 against the valid g:
# frame 0, g = 4, 5, 8, 2.5:
#   abs_rel = (1/4 + 0 + 3/8 + 2.5/2.5) / 4 = 0.40625
#   sq_rel  = (1/4 + 0 + 9/8 + 6.25/2.5) / 4 = 0.96875
#   rmse    = sqrt((1 + 0 + 9 + 6.25) / 4) = sqrt(4.0625)
#   e = ln(p/g) = ln 1.25, 0, ln 0.625, ln 2; mean e = ln(1.5625) / 4 = ln(1.25) / 2
#   rmse_log = sqrt((ln^2 1.25 + ln^2 0.625 + ln^2 2) / 4) = sqrt(0.18778736747887043)
#   log10   = (log10 1.25 + log10 1.6 + log10 2) / 4 = log10(4) / 4
#   silog   = 100 sqrt(0.18778736747887043 - (ln(1.25) / 2)^2)
#   ratios 1.25, 1, 1.6, 2: d1 = 1/4 (1.25 is not < 1.25), d2 = 2/4 (< 1.5625), d3 = 3/4
# frame 1, g = 5, 6.25:
#   abs_rel = (0 + 1.25/6.25) / 2 = 0.1; sq_rel = (0 + 1.5625/6.25) / 2 = 0.125
#   rmse = sqrt(1.5625 / 2); e = 0, ln 0.8: rmse_log = |ln 0.8| / sqrt 2,
#   log10 = |log10 0.8| / 2, silog = 100 sqrt(ln^2 0.8 / 2 - ln^2 0.8 / 4) = 100 |ln 0.8| / 2
#   ratios 1, 1.25: d1 = 1/2, d2 = d3 = 1
HAND_FRAME_METRICS = [
    {"abs_rel": 0.40625, "sq_rel": 0.96875, "rmse": 2.0155644370746373,
     "rmse_log": 0.43334439823178794, "log10": 0.1505149978319906,
     "silog": 41.873512672761414, "d1": 0.25, "d2": 0.5, "d3": 0.75},
    {"abs_rel": 0.1, "sq_rel": 0.125, "rmse": 0.8838834764831844,
     "rmse_log": 0.157786318312326, "log10": 0.048455006504028196,
     "silog": 11.157177565710485, "d1": 0.5, "d2": 1.0, "d3": 1.0},
]
# the bag's metrics: the mean of frames 0 and 1 (frame 2 has no valid pixel)
HAND_MEAN = {"abs_rel": 0.253125, "sq_rel": 0.546875, "rmse": 1.4497239567789109,
             "rmse_log": 0.295565358272057, "log10": 0.0994850021680094,
             "silog": 26.51534511923595, "d1": 0.375, "d2": 0.75, "d3": 0.875, "count": 2}


def write_hand_bag(path: Path) -> Path:
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=TS)
                 for t in ("/cam/image_raw", "/gt/depth", "/gt/labels")}
        for i, (depth_px, label_px) in enumerate(zip(HAND_DEPTH, HAND_LABELS, strict=True)):
            depth = np.zeros(CONST_SIZE, np.float32)
            for pixel, value in depth_px.items():
                depth[pixel] = value
            labels = np.full(CONST_SIZE, 255, np.uint8)
            for pixel, value in label_px.items():
                labels[pixel] = value
            for topic, msg in (("/cam/image_raw", image_msg(stamp_of(i), "rgb8",
                                                            frame_rgb(i, CONST_SIZE))),
                               ("/gt/depth", image_msg(stamp_of(i), "32FC1", depth)),
                               ("/gt/labels", image_msg(stamp_of(i), "mono8", labels))):
                writer.write(conns[topic], stamp_of(i), TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def test_hand_computed_metrics(tmp_path, constant_model_dir):
    bag = write_hand_bag(tmp_path / "in")
    report = tmp_path / "report"
    assert evaluate(bag, constant_model_dir, report, "--image-topic", "/cam/image_raw",
                    "--depth-topic", "/gt/depth", "--labels-topic", "/gt/labels",
                    "--max-depth", MAX_DEPTH) == 0
    doc = load(report)
    for frame, expected in zip(doc["frames"], HAND_FRAME_METRICS):
        assert frame["depth"] == pytest.approx(expected, rel=1e-9)
    assert doc["frames"][2]["depth"] == dict.fromkeys(HAND_FRAME_METRICS[0])  # all NaN -> null
    assert doc["depth"] == pytest.approx(HAND_MEAN, rel=1e-9)
    assert doc["counts"]["depth"]["no_valid_pixels"] == 1
    assert doc["counts"]["matched"] == 3
    # Labelled pixels, all predicted 3: class 3 in GT 3 + 2 + 1 = 6 times, class 1 once.
    # Class 3: intersection 6, union 7 -> IoU 6/7; class 1: intersection 0, union 1 -> IoU 0;
    # other classes absent from GT and (labelled) prediction: null.
    seg = doc["segmentation"]
    iou = [c["IoU"] for c in seg["classes"]]
    assert [i for i, v in enumerate(iou) if v is not None] == [1, 3]
    assert (iou[1], iou[3]) == pytest.approx((0.0, 6 / 7), rel=1e-12)
    assert seg["mIoU"] == pytest.approx((6 / 7 + 0.0) / 2, rel=1e-12)
    assert seg["aAcc"] == pytest.approx(6 / 7, rel=1e-12)
    assert seg["mAcc"] == pytest.approx((1.0 + 0.0) / 2, rel=1e-12)  # Acc 3 = 6/6, Acc 1 = 0/1
    assert [f["pixel_acc"] for f in doc["frames"]] == pytest.approx([3 / 4, 1.0, 1.0])


def test_nearest_matching_with_tolerance(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 3, gt_offset_ns=3 * MS, labels=False)
    args = ("--image-topic", "/cam/image_raw", "--depth-topic", "/gt/depth",
            "--max-depth", MAX_DEPTH)
    assert evaluate(bag, model_dir, tmp_path / "exact", *args) == 0
    exact = load(tmp_path / "exact")
    assert exact["counts"]["without_gt"] == 3 and exact["counts"]["matched"] == 0
    assert exact["depth"]["count"] == 0 and exact["depth"]["abs_rel"] is None
    assert evaluate(bag, model_dir, tmp_path / "near", *args, "--match", "nearest",
                    "--tolerance-ms", 5) == 0
    near = load(tmp_path / "near")
    assert near["counts"]["matched"] == 3
    assert [f["depth_dt_ms"] for f in near["frames"]] == pytest.approx([3.0] * 3)
    assert evaluate(bag, model_dir, tmp_path / "tight", *args, "--match", "nearest",
                    "--tolerance-ms", 2) == 0
    assert load(tmp_path / "tight")["counts"]["without_gt"] == 3


def test_frames_without_gt_are_counted_and_listed(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 4, missing_gt=(1, 2), labels=False)
    report = tmp_path / "report"
    assert evaluate(bag, model_dir, report, "--image-topic", "/cam/image_raw",
                    "--depth-topic", "/gt/depth", "--max-depth", MAX_DEPTH) == 0
    doc = load(report)
    assert (doc["counts"]["images"], doc["counts"]["matched"], doc["counts"]["without_gt"]) == \
        (4, 2, 2)
    assert [f["gt"] for f in doc["frames"]] == ["matched", "without_gt", "without_gt", "matched"]
    assert doc["depth"]["count"] == 2
    markdown = (report / "report.md").read_text()
    assert f"| 1 | {stamp_of(1)} | without_gt |" in markdown


def test_partial_gt_when_only_depth_matches(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 3, missing_labels=(1,))
    report = tmp_path / "report"
    assert evaluate(bag, model_dir, report, "--image-topic", "/cam/image_raw", "--depth-topic",
                    "/gt/depth_mm", "--labels-topic", "/gt/labels", "--max-depth",
                    MAX_DEPTH) == 0
    doc = load(report)
    assert (doc["counts"]["matched"], doc["counts"]["partial"]) == (2, 1)
    assert doc["counts"]["labels"]["without_gt"] == 1
    assert doc["frames"][1]["gt"] == "partial" and doc["frames"][1]["pixel_acc"] is None


def test_gt_topic_without_messages_is_an_error(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 2, labels=False)
    err = run_error(capsys, bag, model_dir, tmp_path / "report", "--image-topic",
                    "/cam/image_raw", "--depth-topic", "/gt/depth", "--labels-topic",
                    "/gt/labels")
    assert "GT labels topic '/gt/labels' has no messages" in err


def test_stamp_matcher():
    matcher = StampMatcher(tolerance_ns=10, nearest=True)
    for stamp in (100, 120, 140):
        matcher.add(stamp, np.full(1, stamp))
    assert matcher.match(120)[0] == 120
    assert matcher.match(127)[0] == 120 and matcher.match(133)[0] == 140
    assert matcher.match(155) is None  # 15 from the nearest
    assert matcher.settled(125) and not matcher.settled(135)  # 140 may be beaten by a later GT
    matcher.prune(135)
    assert sorted(matcher.items) == [140]
    exact = StampMatcher(tolerance_ns=10, nearest=False)
    exact.add(100, np.zeros(1))
    assert exact.match(101) is None and exact.settled(99) and not exact.settled(100 + 1)


def test_truncated_bag_writes_partial_report(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 10, storage="mcap", size=(240, 320), labels=False)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])
    report = tmp_path / "report"
    assert evaluate(bag, model_dir, report, "--image-topic", "/cam/image_raw", "--depth-topic",
                    "/gt/depth", "--max-depth", MAX_DEPTH) == 3
    assert "results for the frames read before" in capsys.readouterr().err
    doc = load(report)
    assert doc["read_error"]
    assert 0 < doc["counts"]["images"] < 10
    assert doc["counts"]["matched"] + doc["counts"]["without_gt"] == doc["counts"]["images"]
    assert "**Incomplete:**" in (report / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# Errors


def run_error(capsys, *args) -> str:
    assert evaluate(*args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_errors(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 1)
    report = tmp_path / "report"
    err = run_error(capsys, bag, model_dir, report, "--image-topic", "/cam/image_raw",
                    "--depth-topic", "/gt/nope")
    assert "GT depth topic '/gt/nope' is not in bag" in err
    assert "/gt/depth_mm" in err and "sensor_msgs/msg/CameraInfo" in err
    err = run_error(capsys, bag, model_dir, report, "--image-topic", "/cam/image_raw",
                    "--depth-topic", "/cam/camera_info")
    assert "has type sensor_msgs/msg/CameraInfo, expected sensor_msgs/msg/Image" in err
    err = run_error(capsys, bag, model_dir, report, "--image-topic", "/cam/image_raw")
    assert "--depth-topic and/or --labels-topic" in err
    err = run_error(capsys, bag, tmp_path / "no_model", report, "--image-topic",
                    "/cam/image_raw", "--depth-topic", "/gt/depth")
    assert "model directory not found" in err
    err = run_error(capsys, bag, model_dir, report, "--image-topic", "/cam/camera_info",
                    "--depth-topic", "/gt/depth")
    assert "image topic '/cam/camera_info' has type" in err
    assert not report.exists()  # nothing written for rejected input


def test_wrong_gt_encoding_is_counted_not_fatal(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 2)
    report = tmp_path / "report"
    # A mono8 image is no depth: every GT message fails, every frame is without GT.
    assert evaluate(bag, model_dir, report, "--image-topic", "/cam/image_raw", "--depth-topic",
                    "/gt/labels") == 0
    doc = load(report)
    assert doc["counts"]["depth"]["gt_failed"] == 2
    assert doc["counts"]["without_gt"] == 2
