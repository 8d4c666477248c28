"""xnet_node with several cameras (`cameras: [front, left]`), in-process over loopback DDS.

One node, one model, one batched forward pass for the pending frames of both cameras: topics
and headers per camera, per-camera stats and diagnostics, a broken camera next to a good one,
a 30 Hz and a 5 Hz camera, a distorted camera_info (rectified outputs). Real KITTI frames, the
small random model of conftest.py (32x64 network input).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
cv2 = pytest.importorskip("cv2")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from test_node import (  # noqa: E402
    DISCOVERY_S,
    KITTI,
    OUTPUT_TYPES,
    RECEIVE_S,
    RELIABLE,
    Ros,
    no_callback_errors,  # noqa: F401 (autouse: a callback that raised fails the test)
    wait_until,
)

from xnet_ros import node as xnode  # noqa: E402
from xnet_ros.outputs import DEPTH, DEPTH_INFO, POINTS  # noqa: E402

CAMERAS = ("front", "left")
FX, CX, CY = 721.5377, 609.5593, 172.854


@pytest.fixture(scope="module")
def frames(fixtures_dir) -> dict[str, np.ndarray]:
    """front: the KITTI frame 1242x375; left: the same camera at 640x480 (another size)."""
    path = fixtures_dir / KITTI / "0000000000.png"
    if not path.is_file():
        pytest.skip(f"KITTI fixture frame missing: {path}")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return {"front": rgb, "left": cv2.resize(rgb, (640, 480))}


@pytest.fixture(scope="module")
def ros():
    r = Ros()
    try:
        yield r
    finally:
        r.close()


class Cameras:
    """Publishes `<camera>/image` + `<camera>/camera_info`, records every output per camera."""

    def __init__(self, ros: Ros, namespace: str, cameras=CAMERAS, outputs=tuple(OUTPUT_TYPES)):
        self.node = ros.add(rclpy.create_node(f"probe_{namespace}", namespace=namespace,
                                              context=ros.context))
        self.cond = threading.Condition()
        self.msgs: dict[str, list] = {}
        self.image_pubs = {c: self.node.create_publisher(Image, f"{c}/image", RELIABLE)
                           for c in cameras}
        self.info_pubs = {c: self.node.create_publisher(CameraInfo, f"{c}/camera_info",
                                                        RELIABLE) for c in cameras}
        for c in cameras:
            for name in outputs:
                self.node.create_subscription(OUTPUT_TYPES[name], f"{c}/{name}",
                                              self._recorder(f"{c}/{name}"), RELIABLE)
        try:
            from xnet_ros.msg import InferenceStats

            self.node.create_subscription(InferenceStats, "xnet_node/stats",
                                          self._recorder("stats"), RELIABLE)
            self.has_stats = True
        except ImportError:
            self.has_stats = False
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      self._recorder("diagnostics"), 10)

    def _recorder(self, key):
        def record(msg):
            with self.cond:
                self.msgs.setdefault(key, []).append(msg)
                self.cond.notify_all()
        return record

    def wait(self, key, pred=lambda m: True, timeout=RECEIVE_S):
        with self.cond:
            found = []

            def check():
                found[:] = [m for m in self.msgs.get(key, []) if pred(m)]
                return bool(found)

            assert self.cond.wait_for(check, timeout), f"no {key} message in {timeout} s"
            return found[0]

    def count(self, key, pred=lambda m: True) -> int:
        with self.cond:
            return sum(1 for m in self.msgs.get(key, []) if pred(m))

    def header(self, camera: str, sec: int) -> Header:
        h = Header(frame_id=f"{camera}_optical")
        h.stamp.sec = sec
        return h

    def send_info(self, camera: str, rgb: np.ndarray, d=(), p=None) -> None:
        h, w = rgb.shape[:2]
        sx, sy = w / 1242, h / 375
        k = [FX * sx, 0.0, CX * sx, 0.0, FX * sy, CY * sy, 0.0, 0.0, 1.0]
        p = p or [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
        self.info_pubs[camera].publish(CameraInfo(
            header=self.header(camera, 0), width=w, height=h, k=k, p=p,
            d=list(d), distortion_model="plumb_bob"))

    def send_image(self, camera: str, sec: int, rgb: np.ndarray) -> None:
        self.image_pubs[camera].publish(Image(
            header=self.header(camera, sec), height=rgb.shape[0], width=rgb.shape[1],
            encoding="rgb8", step=rgb.shape[1] * 3, data=rgb.tobytes()))


def start(ros, model_dir, namespace, **params):
    overrides = [Parameter("model", value=str(model_dir)), Parameter("warmup", value=False),
                 Parameter("cameras", value=list(CAMERAS)),
                 Parameter("error_throttle_sec", value=0.2), Parameter("lazy", value=False)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    node = xnode.XnetNode(context=ros.context, namespace=namespace,
                          parameter_overrides=overrides)
    assert node.autostart(), node.diagnostic_status().message
    return ros.add(node)


def connect(node, probe: Cameras, outputs=None) -> None:
    assert wait_until(lambda: all(pub.get_subscription_count() >= 1 for pub in
                                  [*probe.image_pubs.values(), *probe.info_pubs.values()])
                      and all(n >= 1 for topic, n in node.output_subscription_counts().items()
                              if outputs is None or topic in outputs),
                      DISCOVERY_S), node.output_subscription_counts()


def wait_calibrated(node, probe, camera, rgb, **kw):
    probe.send_info(camera, rgb, **kw)
    assert wait_until(lambda: node._pipeline.calibration(camera) is not None, RECEIVE_S)


# ---------------------------------------------------------------------------------- tests
def test_two_cameras_topics_headers_stats_and_diagnostics(ros, model_dir, frames):
    node = start(ros, model_dir, "two")
    probe = Cameras(ros, "two")
    try:
        assert node.cameras == list(CAMERAS)
        subs = dict(node.get_subscriber_names_and_types_by_node("xnet_node", "/two"))
        assert {"/two/front/image", "/two/front/camera_info", "/two/left/image",
                "/two/left/camera_info"} <= set(subs)
        pubs = dict(node.get_publisher_names_and_types_by_node("xnet_node", "/two"))
        for c in CAMERAS:
            assert all(f"/two/{c}/{name}" in pubs for name in OUTPUT_TYPES), pubs
        assert "/two/depth" not in pubs and "/two/image" not in subs  # no single-camera topics
        connect(node, probe)
        # left is distorted (barrel, P = K): its outputs are in the rectified camera
        wait_calibrated(node, probe, "front", frames["front"])
        wait_calibrated(node, probe, "left", frames["left"], d=(-0.2, 0.05, 0.0, 0.0, 0.0))
        for sec in (1, 2):
            for c in CAMERAS:
                probe.send_image(c, sec, frames[c])
            assert wait_until(lambda s=sec: all(node.worker_snapshot(c).received == s
                                                for c in CAMERAS), RECEIVE_S)
            assert node._worker.wait_idle(RECEIVE_S)
        for c in CAMERAS:
            h, w = frames[c].shape[:2]
            for name in OUTPUT_TYPES:
                m = probe.wait(f"{c}/{name}", lambda m: m.header.stamp.sec == 2)
                assert m.header.frame_id == f"{c}_optical", (c, name)
            depth = probe.wait(f"{c}/{DEPTH}", lambda m: m.header.stamp.sec == 2)
            assert (depth.width, depth.height, depth.encoding) == (w, h, "32FC1")
            info = probe.wait(f"{c}/{DEPTH_INFO}")
            assert list(info.d) == [] and info.k[0] == pytest.approx(FX * w / 1242)
            assert probe.count(f"{c}/{POINTS}") >= 1
        s = node.worker_snapshot()
        assert {c: (x.received, x.processed, x.failed) for c, x in s.cameras.items()} == {
            "front": (2, 2, 0), "left": (2, 2, 0)}
        assert s.received == 4 and s.balanced
        if probe.has_stats:
            for c in CAMERAS:
                stats = probe.wait("stats", lambda m, c=c: m.camera == c
                                   and m.header.stamp.sec == 2)
                assert (stats.frames_received, stats.frames_processed) == (2, 2)
                assert stats.input_width == frames[c].shape[1] and stats.infer_ms > 0
        statuses = probe.wait("diagnostics", lambda a: len(a.status) == 3 and any(
            kv.key == "frames_processed" and kv.value == "2" for st in a.status[1:]
            for kv in st.values)).status
        names = [st.name for st in statuses]
        assert names == ["/two/xnet_node: inference", "/two/xnet_node: inference front",
                         "/two/xnet_node: inference left"]
        direct = {kv.key: kv.value for kv in node.diagnostic_status("left").values}
        assert direct["frames_processed"] == "2" and direct["input_size"] == "640x480"
        assert direct["intrinsics"] == "camera_info" and direct["cameras"] == "left"
        whole = {kv.key: kv.value for kv in node.diagnostic_status().values}
        assert whole["frames_received"] == "4" and whole["cameras"] == "front, left"
    finally:
        ros.remove(probe.node)
        ros.remove(node)


@pytest.mark.parametrize("backend, cpu_streams", [("torch", 1), ("torch", 2),
                                                   ("onnxruntime", 2)],
                         ids=["in-turn", "overlapped-delivery", "onnxruntime-lanes"])
def test_a_broken_camera_never_stops_the_other(ros, model_dir, frames, backend, cpu_streams,
                                               tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("XNET_ENGINE_CACHE", str(tmp_path / "engines"))
    threads = torch.get_num_threads()  # cpu_streams divides the process's torch threads
    name = f"broken{cpu_streams}{backend[0]}"
    node = start(ros, model_dir, name, cpu_streams=cpu_streams, backend=backend)
    probe = Cameras(ros, name)
    try:
        # with two CPU streams the outputs are built and published on a delivery thread
        # while the next batch's forward pass runs (torch or onnxruntime: two lanes)
        assert (node._worker._finisher is not None) == (cpu_streams > 1)
        assert node._worker._lanes == cpu_streams and backend in node._backend
        connect(node, probe)
        bad = Image(height=10, width=10, encoding="yuv9000", step=30, data=bytes(300))
        for sec in range(1, 6):
            bad.header = probe.header("left", sec)
            probe.image_pubs["left"].publish(bad)
            probe.send_image("front", sec, frames["front"])
            assert wait_until(lambda s=sec: all(node.worker_snapshot(c).received == s
                                                for c in CAMERAS), RECEIVE_S)
            assert node._worker.wait_idle(RECEIVE_S)
        assert wait_until(lambda: probe.count(f"front/{DEPTH}") == 5, RECEIVE_S)
        assert probe.count(f"left/{DEPTH}") == 0
        s = node.worker_snapshot()
        front, left = s.cameras["front"], s.cameras["left"]
        assert (front.processed, front.failed) == (5, 0)
        assert (left.received, left.failed) == (5, 5) and "yuv9000" in left.last_error
        levels = {c: node.diagnostic_status(c).level for c in CAMERAS}
        assert levels == {"front": b"\x00", "left": b"\x02"}  # OK, ERROR
        assert node.lifecycle_state == "active"
    finally:
        ros.remove(probe.node)
        ros.remove(node)
        torch.set_num_threads(threads)


def test_a_5_hz_camera_is_served_next_to_a_30_hz_one(ros, model_dir, frames):
    """front at 30 Hz, left at 5 Hz, for 3 s, into one node that computes only ~/stats (the
    forward pass, no outputs): the fast camera saturates the worker, the slow one is not
    starved (the exact policy is tested without ROS in test_worker.py)."""
    node = start(ros, model_dir, "rates", lazy=True)
    probe = Cameras(ros, "rates", outputs=())
    if not probe.has_stats:
        pytest.skip("xnet_ros.msg not built: ~/stats (what keeps a lazy node working) missing")
    stop, sent = threading.Event(), {"front": 0, "left": 0}
    try:
        connect(node, probe, outputs=("~/stats",))

        def stream(camera, hz):
            sec = 0
            while not stop.is_set() and sec < int(3 * hz):
                sec += 1
                probe.send_image(camera, sec, frames["left"])
                sent[camera] += 1
                time.sleep(1.0 / hz)

        threads = [threading.Thread(target=stream, args=a) for a in (("front", 30), ("left", 5))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        streamed_s = time.monotonic() - t0
        stop.set()
        assert wait_until(lambda: node.worker_snapshot().in_flight == 0, RECEIVE_S)
        time.sleep(0.5)
        s = node.worker_snapshot()
        front, left = s.cameras["front"], s.cameras["left"]
        assert left.received >= 12 and front.received >= 60  # DDS (reliable, loopback) kept all
        assert front.processed >= 10, front
        # left is never starved: most of its frames are served. Not "at least as well as
        # front": with two inference lanes on two cores one lane's forward pass of a left frame
        # can stall for 0.3-0.9 s while the other lane keeps serving front (measured; the
        # policy itself, longest-waiting camera first, is tested without ROS in test_worker.py).
        # front is in most batches, so the streaming time / front.processed estimates one.
        batch_s = streamed_s / front.processed
        assert left.processed >= 0.6 * left.received * min(1.0, 0.2 / batch_s), (left, front)
        assert s.balanced and front.balanced and left.balanced
    finally:
        stop.set()
        ros.remove(probe.node)
        ros.remove(node)


def test_invalid_camera_names_fail_configure_naming_the_parameter(ros, model_dir):
    node = xnode.XnetNode(context=ros.context, namespace="badcam", parameter_overrides=[
        Parameter("model", value=str(model_dir)), Parameter("cameras", value=["front", "a b"])])
    try:
        assert not node.autostart() and node.lifecycle_state == "unconfigured"
        assert "cameras: 'a b' is not a relative topic namespace" in node._config_error
    finally:
        node.destroy_node()
