"""`make demo`: the real xnet_node on a synthetic camera, recorded to an MCAP bag, with previews.

    python -m xnet_ros.demo --out demo_out [--frames 30] [--rate 10] [--model DIR]

One process, one executor, three nodes: a synthetic camera (`synthetic_camera`, publishes
`image` + `camera_info` from xnet_model.data.synthetic at a fixed rate), the real lifecycle node
`xnet_node` (inference on its worker thread) and a recorder that writes every input and output
topic, serialized by rclpy, into `<out>/xnet_demo` (rosbag2, MCAP) with `rosbags`. Afterwards it
writes preview PNGs (input, depth, labels, point cloud, a mosaic), `summary.json`, and prints
frames, FPS and latencies.

Loopback-only DDS settings are applied before rclpy is imported (unless already set), so running
this module on its own never sends DDS traffic off the machine.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]

# A copy of config/fastdds_localhost.xml for installs where the file cannot be found.
_FASTDDS_LOCALHOST_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_big</transport_id><type>SHM</type>
        <segment_size>16777216</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp_lo</transport_id><type>UDPv4</type>
        <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>
        <maxInitialPeersRange>32</maxInitialPeersRange>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="localhost_only_big_shm" is_default_profile="true">
      <rtps>
        <useBuiltinTransports>false</useBuiltinTransports>
        <userTransports>
          <transport_id>shm_big</transport_id><transport_id>udp_lo</transport_id>
        </userTransports>
        <builtin>
          <metatrafficUnicastLocatorList>
            <locator><udpv4><address>127.0.0.1</address></udpv4></locator>
          </metatrafficUnicastLocatorList>
          <initialPeersList>
            <locator><udpv4><address>127.0.0.1</address></udpv4></locator>
          </initialPeersList>
        </builtin>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def _fastdds_profile() -> str:
    candidates = [_REPO / "config" / "fastdds_localhost.xml"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "xnet_ros" / "config"
                              / "fastdds_localhost.xml")
    for path in candidates:
        if path.is_file():
            return str(path)
    path = Path(tempfile.mkdtemp(prefix="xnet_demo_dds_")) / "fastdds_localhost.xml"
    path.write_text(_FASTDDS_LOCALHOST_XML)
    return str(path)


def ensure_loopback_dds() -> None:
    """Loopback-only DDS unless the caller configured it (must run before rclpy starts)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "SYSTEM_DEFAULT")
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = _fastdds_profile()
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    if not os.environ.get("ROS_LOG_DIR"):
        os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="xnet_demo_roslog_")


ensure_loopback_dds()  # before anything below can import rclpy

# ruff: noqa: E402 - the imports below must follow the environment setup
import argparse
import json
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xnet_model.metrics import json_safe

from .bag.io import LATCHED_QOS, make_typestore
from .demo_previews import write_previews
from .launch_config import DEMO_FRAME_ID
from .outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS

BAG_NAME = "xnet_demo"
IMAGE_TOPIC, INFO_TOPIC = "/image", "/camera_info"
STATS_TOPIC, CLASS_TABLE_TOPIC, DIAG_TOPIC = ("/xnet_node/stats", "/semantic/class_table",
                                              "/diagnostics")
PREVIEWS = ("input.png", "depth.png", "labels.png", "points.png", "preview.png")
MSG_TYPES = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image", INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
    "/" + DEPTH: "sensor_msgs/msg/Image", "/" + DEPTH_INFO: "sensor_msgs/msg/CameraInfo",
    "/" + LABELS: "sensor_msgs/msg/Image", "/" + COLOR: "sensor_msgs/msg/Image",
    "/" + POINTS: "sensor_msgs/msg/PointCloud2", STATS_TOPIC: "xnet_ros/msg/InferenceStats",
    CLASS_TABLE_TOPIC: "xnet_ros/msg/ClassTable",
    DIAG_TOPIC: "diagnostic_msgs/msg/DiagnosticArray",
}
OUTPUT_TOPICS = tuple("/" + name for name in ALL_OUTPUTS)


# ------------------------------------------------------------------------------ camera frames
@dataclass
class CameraFrame:
    rgb: np.ndarray
    depth: np.ndarray | None
    labels: np.ndarray | None
    K: np.ndarray


def synthetic_frames(n: int, height: int, width: int, seed: int = 0) -> list[CameraFrame]:
    """`n` frames of xnet_model.data.synthetic's camera walking through a procedural room."""
    from xnet_model.data import synthetic

    frames: list[CameraFrame] = []
    camera_cls = getattr(synthetic, "SyntheticCamera", None)
    if camera_cls is not None:
        for frame in camera_cls(height, width, seed=seed):
            frames.append(CameraFrame(frame.rgb, frame.depth, frame.labels, frame.K))
            if len(frames) == n:
                break
        return frames
    # older synthetic module: the same walk, rendered frame by frame
    scene = synthetic.make_scene(seed, walk=True)
    for i in range(n):
        pose = synthetic.walk_pose(scene.room.size, 2 * math.pi * i / 120)
        f = synthetic.render(scene, height, width, pose=pose)
        frames.append(CameraFrame(f.rgb, f.depth, f.labels, f.K))
    return frames


# --------------------------------------------------------------------------------- the model
def resolve_model(arg: str | None, workdir: Path) -> tuple[Path, str]:
    """(model dir, note). The packaged demo model unless --model; if it is not there (not
    trained yet), a random-weight model so the pipeline still runs."""
    from .params import ModelPathError, resolve_model_path

    if arg:
        return resolve_model_path(arg), "from --model"
    try:
        return resolve_model_path(""), "packaged demo model"
    except ModelPathError as exc:
        from xnet_model import build_model

        path = workdir / "random_model"
        build_model("atto_x_atto_multitask", data={"input_size": [120, 160]}).save(path)
        return path, f"RANDOM WEIGHTS, outputs are noise: {exc}"


# ---------------------------------------------------------------------------------- the bag
class BagRecorder:
    """Writes raw CDR (as rclpy receives it with raw=True) into a rosbag2 MCAP bag."""

    def __init__(self, path: Path, topics: dict[str, str]):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.typestore = make_typestore()
        self.writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.lock = threading.Lock()
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        for topic, msgtype in topics.items():
            if msgtype not in self.typestore.fielddefs:
                continue  # xnet_ros/msg definitions not found: topic not recorded
            qos = [LATCHED_QOS] if topic == CLASS_TABLE_TOPIC else []
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos)
            self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        with self.lock:
            self.writer.write(self.connections[topic], stamp_ns, data)
            self.counts[topic] += 1

    def close(self) -> None:
        with self.lock:
            self.writer.close()


# ------------------------------------------------------------------------------------- run
@dataclass
class DemoResult:
    frames_published: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    bag: str = ""
    bag_counts: dict[str, int] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)
    model: str = ""
    model_note: str = ""
    backend: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": math.nan, "p50": math.nan, "p95": math.nan, "max": math.nan}
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def run_demo(out: Path, frames: int = 30, rate: float = 10.0, width: int = 640,
             height: int = 480, model: str | None = None, seed: int = 0,
             timeout: float = 120.0, log=print) -> DemoResult:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from .conversions import image_to_array

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    bag_path = out / BAG_NAME
    if bag_path.exists():  # a previous demo's bag (rosbags never overwrites)
        shutil.rmtree(bag_path)
    result = DemoResult(bag=str(bag_path))
    workdir = Path(tempfile.mkdtemp(prefix="xnet_demo_"))

    model_dir, note = resolve_model(model, workdir)
    result.model, result.model_note = str(model_dir), note
    log(f"model: {model_dir} ({note})")
    t0 = time.perf_counter()
    cam_frames = synthetic_frames(frames, height, width, seed)
    log(f"camera: {len(cam_frames)} synthetic {width}x{height} frames rendered in "
        f"{time.perf_counter() - t0:.1f} s, publishing at {rate:g} Hz in frame "
        f"'{DEMO_FRAME_ID}'")

    from . import node as xnode

    # topics whose messages this process can receive (xnet_ros/msg needs the built interfaces)
    topics = {t: m for t, m in MSG_TYPES.items()
              if not m.startswith("xnet_ros/") or xnode.InferenceStats is not None}
    recorder = BagRecorder(bag_path, topics)
    if STATS_TOPIC not in recorder.connections:
        log("warning: xnet_ros/msg not importable or its definitions not found: "
            f"{STATS_TOPIC} and {CLASS_TABLE_TOPIC} are not recorded")
    received: dict[str, list[tuple[int, bytes]]] = {t: [] for t in MSG_TYPES}
    recv_lock = threading.Condition()

    xnode.tune_malloc()  # as main() does for the standalone node
    ctx = Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    nodes = []
    try:
        # --- the node under demonstration (default parameters, the chosen model)
        t0 = time.perf_counter()
        xnet = xnode.XnetNode(context=ctx, parameter_overrides=[
            Parameter("model", value=str(model_dir)), Parameter("log_period", value=0.0)])
        nodes.append(xnet)
        if xnet.lifecycle_state != "active":
            raise RuntimeError(f"xnet_node did not start: {xnet.diagnostic_status().message}")
        result.timings["model_load_s"] = time.perf_counter() - t0
        model_info = xnet._model
        result.backend = model_info.backend
        max_depth = (float(model_info.predictor.cfg.depth.max_depth)
                     if model_info.predictor.cfg.depth is not None else 10.0)
        log(f"xnet_node: active, {model_info.name} on {model_info.backend} "
            f"(configure {result.timings['model_load_s']:.1f} s)")

        # --- recorder: raw CDR of every topic straight into the bag
        rec = rclpy.create_node("xnet_demo_recorder", context=ctx)
        nodes.append(rec)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        type_classes = {"sensor_msgs/msg/Image": Image,
                        "sensor_msgs/msg/CameraInfo": CameraInfo,
                        "sensor_msgs/msg/PointCloud2": PointCloud2}
        from diagnostic_msgs.msg import DiagnosticArray
        type_classes["diagnostic_msgs/msg/DiagnosticArray"] = DiagnosticArray
        if xnode.InferenceStats is not None:
            type_classes["xnet_ros/msg/InferenceStats"] = xnode.InferenceStats
            type_classes["xnet_ros/msg/ClassTable"] = xnode.ClassTable

        def recorder_cb(topic):
            def cb(data: bytes):
                now = time.time_ns()
                if topic in recorder.connections:
                    recorder.write(topic, now, data)
                with recv_lock:
                    received[topic].append((now, data))
                    recv_lock.notify_all()
            return cb

        for topic, msgtype in topics.items():
            cls = type_classes.get(msgtype)
            if cls is None:
                continue
            qos = latched if topic == CLASS_TABLE_TOPIC else reliable
            rec.create_subscription(cls, topic, recorder_cb(topic), qos, raw=True)

        # --- the synthetic camera
        cam = rclpy.create_node("synthetic_camera", context=ctx)
        nodes.append(cam)
        cam_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        image_pub = cam.create_publisher(Image, "image", cam_qos)
        info_pub = cam.create_publisher(CameraInfo, "camera_info", cam_qos)
        for n in nodes:
            executor.add_node(n)

        # discovery: the node and the recorder see the camera, the recorder sees every output
        end = time.monotonic() + 20.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
            counts = xnet.output_subscription_counts()
            if (image_pub.get_subscription_count() >= 2 and info_pub.get_subscription_count() >= 2
                    and all(counts.get(t, 0) >= 1 for t in ALL_OUTPUTS)):
                break
        else:
            raise RuntimeError("discovery timed out (loopback DDS): "
                               f"{xnet.output_subscription_counts()}")

        stamps: dict[int, int] = {}  # header stamp ns -> frame index
        state: dict[str, Any] = {"next": 0, "t_first": 0.0, "t_last_pub": 0.0}

        def publish_frame(info: bool = True, image: bool = True):
            i = state["next"]
            if i >= len(cam_frames):
                return
            f = cam_frames[i]
            if info:
                state["header"] = Header(stamp=cam.get_clock().now().to_msg(),
                                         frame_id=DEMO_FRAME_ID)
            header = state["header"]
            if info:
                k = f.K
                info_pub.publish(CameraInfo(
                    header=header, width=width, height=height, distortion_model="plumb_bob",
                    d=[0.0] * 5, k=[float(v) for v in k.reshape(-1)],
                    r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                    p=[float(k[0, 0]), 0.0, float(k[0, 2]), 0.0, 0.0, float(k[1, 1]),
                       float(k[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]))
            if not image:
                return
            stamps[header.stamp.sec * 1_000_000_000 + header.stamp.nanosec] = i
            image_pub.publish(Image(header=header, height=height, width=width, encoding="rgb8",
                                    is_bigendian=0, step=width * 3, data=f.rgb.tobytes()))
            state["next"] = i + 1
            now = time.perf_counter()
            state["t_first"] = state["t_first"] or now
            state["t_last_pub"] = now

        # camera_info of frame 0 first, so that every frame (the first too) has intrinsics
        publish_frame(image=False)
        end = time.monotonic() + 10.0
        while xnet._camera_info is None and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
        publish_frame(info=False)
        timer = cam.create_timer(1.0 / rate, publish_frame)
        deadline = time.monotonic() + timeout
        while state["next"] < len(cam_frames) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        cam.destroy_timer(timer)
        result.frames_published = state["next"]

        # drain: the node idle and quiet, the recorder holding every output of every processed
        # frame (the node's input is best effort: a frame lost in DDS is never received)
        waited = [*OUTPUT_TOPICS] + ([STATS_TOPIC] if STATS_TOPIC in recorder.connections
                                     else [])
        last_received, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            s = xnet.worker_snapshot()
            if s.received != last_received or s.in_flight:
                last_received, quiet_since = s.received, time.monotonic()
                continue
            with recv_lock:
                complete = all(len(received[t]) >= s.processed for t in waited)
            if complete and time.monotonic() - quiet_since > 0.5:
                break
        t_end = time.perf_counter()
        for _ in range(20):  # let the last stats/diagnostics through
            executor.spin_once(timeout_sec=0.01)
        snap = xnet.worker_snapshot()
        result.counters = {"received": snap.received, "processed": snap.processed,
                           "dropped": snap.dropped, "skipped": snap.skipped,
                           "failed": snap.failed, "in_flight": snap.in_flight}

        # --- numbers
        with recv_lock:
            got = {t: list(v) for t, v in received.items()}
        depth_msgs = [(t, deserialize_message(d, Image)) for t, d in got["/" + DEPTH]]
        e2e = [(t - (m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec)) / 1e6
               for t, m in depth_msgs]
        stats_msgs = ([deserialize_message(d, xnode.InferenceStats) for _, d in got[STATS_TOPIC]]
                      if xnode.InferenceStats is not None else [])
        lat = {"pre_ms": _stats([m.preprocess_ms for m in stats_msgs]),
               "infer_ms": _stats([m.infer_ms for m in stats_msgs]),
               "post_ms": _stats([m.postprocess_ms for m in stats_msgs]),
               "node_total_ms": _stats([m.total_ms for m in stats_msgs]),
               "end_to_end_ms": _stats(e2e)}
        if not stats_msgs:  # no custom messages: the node's own latency window
            for key in ("pre_ms", "infer_ms", "post_ms"):
                s = snap.latency[key]
                lat[key] = {"mean": s.mean, "p50": s.p50, "p95": s.p95, "max": s.max}
        span = max(t_end - state["t_first"], 1e-9)
        busy_ms = sum(lat[k]["mean"] for k in ("pre_ms", "infer_ms", "post_ms"))
        result.timings["node_capacity_fps"] = 1000.0 / busy_ms if busy_ms > 0 else math.nan
        result.timings.update({
            "wall_s": span, "fps": snap.processed / span,
            "camera_rate_hz": rate, "node_rate_hz": snap.rate_hz, **lat})

        # --- accuracy against the synthetic ground truth (meaningful for the trained model)
        abs_rel, acc = [], []
        label_msgs = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in
                      (deserialize_message(d, Image) for _, d in got["/" + LABELS])}
        for _, m in depth_msgs:
            key = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
            gt = cam_frames[stamps[key]] if key in stamps else None
            if gt is None or gt.depth is None:
                continue
            pred = image_to_array(m)
            ok = np.isfinite(pred) & (gt.depth > 1e-3)
            if ok.any():
                abs_rel.append(float(np.mean(np.abs(pred[ok] - gt.depth[ok]) / gt.depth[ok])))
            lm = label_msgs.get((m.header.stamp.sec, m.header.stamp.nanosec))
            if lm is not None and gt.labels is not None:
                acc.append(float(np.mean(image_to_array(lm) == gt.labels)))
        if abs_rel:
            result.accuracy["depth_abs_rel"] = float(np.mean(abs_rel))
        if acc:
            result.accuracy["pixel_accuracy"] = float(np.mean(acc))

        # --- previews from the last frame that has every output
        by_stamp: dict[str, dict[int, bytes]] = {}
        for topic in (IMAGE_TOPIC, "/" + DEPTH, "/" + COLOR, "/" + POINTS):
            cls = PointCloud2 if topic == "/" + POINTS else Image
            by_stamp[topic] = {}
            for _, data in got[topic]:
                m = deserialize_message(data, cls)
                by_stamp[topic][m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec] = m
        common = set.intersection(*(set(v) for v in by_stamp.values()))
        if common:
            last = max(common)
            frame = {"image": by_stamp[IMAGE_TOPIC][last], DEPTH: by_stamp["/" + DEPTH][last],
                     COLOR: by_stamp["/" + COLOR][last], POINTS: by_stamp["/" + POINTS][last]}
            result.previews = write_previews(out, frame, max_depth)
        else:
            log("warning: no frame with every output was recorded; no previews")
    finally:
        for n in nodes:
            executor.remove_node(n)
            n.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown(context=ctx)
        recorder.close()
        shutil.rmtree(workdir, ignore_errors=True)
    result.bag_counts = dict(recorder.counts)
    result.timings["total_s"] = time.perf_counter() - t_start
    (out / "summary.json").write_text(json.dumps(json_safe(result.__dict__), indent=2) + "\n")
    return result


def format_report(r: DemoResult, out: Path) -> str:
    c, t = r.counters, r.timings

    def lat(key):
        s = t.get(key) or {}
        return (f"mean {s.get('mean', math.nan):7.1f}  p50 {s.get('p50', math.nan):7.1f}  "
                f"p95 {s.get('p95', math.nan):7.1f}  max {s.get('max', math.nan):7.1f}")

    lines = [
        "",
        f"xnet_ros demo: {Path(r.model).name} ({r.model_note}) on {r.backend}",
        f"  frames   published {r.frames_published}, received {c.get('received')}, processed "
        f"{c.get('processed')}, dropped {c.get('dropped', 0) + c.get('skipped', 0)} (slot busy), "
        f"failed {c.get('failed')}",
        f"  rate     {t.get('fps', math.nan):.1f} FPS processed over {t.get('wall_s', 0):.1f} s "
        f"(camera {t.get('camera_rate_hz', 0):g} Hz); the node alone: "
        f"{t.get('node_capacity_fps', math.nan):.1f} FPS (1 / mean processing time)",
        "  latency  ms",
        f"    preprocess   {lat('pre_ms')}",
        f"    inference    {lat('infer_ms')}",
        f"    postprocess  {lat('post_ms')}",
        f"    end-to-end   {lat('end_to_end_ms')}  (image stamp -> outputs received)",
    ]
    if r.accuracy:
        lines.append("  vs ground truth  " + ", ".join(f"{k} {v:.3f}"
                                                       for k, v in r.accuracy.items()))
    lines.append(f"  bag      {r.bag} (MCAP): " + ", ".join(
        f"{k} {v}" for k, v in sorted(r.bag_counts.items())))
    lines.append(f"  previews {', '.join(str(out / p) for p in r.previews)}")
    lines.append(f"  total    {t.get('total_s', 0):.1f} s (model configure "
                 f"{t.get('model_load_s', 0):.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xnet_ros.demo", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory")
    ap.add_argument("--frames", type=int, default=30, help="frames the camera publishes")
    ap.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--model", default=None,
                    help="model directory (default: the packaged demo model)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.rate <= 0 or args.width < 16 or args.height < 16:
        ap.error("need --frames >= 1, --rate > 0, --width/--height >= 16")
    try:
        result = run_demo(args.out, args.frames, args.rate, args.width, args.height,
                          args.model, args.seed, args.timeout)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_report(result, args.out))
    return 0 if result.counters.get("processed") else 1


if __name__ == "__main__":
    sys.exit(main())
