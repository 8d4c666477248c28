"""Ctrl-C / `ros2 launch` shutdown of the real `xnet_node` executable (subprocesses).

A terminal's Ctrl-C sends SIGINT to the node and `ros2 launch` forwards another one (then
SIGTERM): two or more signals 50 ms apart, at start-up, while the model loads, idle and while
frames are being processed, must each end the node with exit code 0 (what `ros2 launch`
reports as "process has finished cleanly"), no traceback, and every thread joined (the node's
last log line says so). The node runs the packaged demo model over loopback DDS (conftest).
Also here, as it needs the executable's `main()`: Fast DDS's asynchronous publication, which
`main()` turns on, never sends an output buffer that the next frame already reuses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
cv2 = pytest.importorskip("cv2")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from xnet_ros.conversions import array_to_image_fields  # noqa: E402
from xnet_ros.main import PUBLICATION_MODE_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "xnet_node"  # what `ros2 run` / `ros2 launch` execute
KITTI = "kitti/KITTI_tiny/2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000000.png"
START_S = 180.0  # model loading on a busy 2-core machine takes 20-40 s
EXIT_S = 30.0
GAP_S = 0.05
STOPPED = "all threads joined"


class NodeProcess:
    """`scripts/xnet_node` in its own namespace; stderr (the ROS log) collected line by line."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        env = dict(os.environ, RCUTILS_COLORIZED_OUTPUT="0")
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--ros-args", "-r", f"__ns:=/{namespace}",
             "-p", "log_period:=0.0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.out: list[str] = []
        streams = ((self.proc.stderr, self.lines), (self.proc.stdout, self.out))
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in streams]
        for t in self._readers:
            t.start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.lines) + list(self.out))

    def wait_for(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            if self.proc.poll() is not None:
                return bool(pred())
            time.sleep(0.05)
        return bool(pred())

    def signal(self, *signals: int) -> None:
        for i, sig in enumerate(signals):
            if i:
                time.sleep(GAP_S)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def finish(self) -> tuple[int, str]:
        try:
            code = self.proc.wait(EXIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"xnet_node did not exit within {EXIT_S} s of the signals:\n"
                        + "".join(self.lines[-30:]))
        for t in self._readers:
            t.join(5)
        return code, "".join(self.lines) + "".join(self.out)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def assert_clean_exit(node: NodeProcess, *first_signal: str) -> str:
    """`first_signal`: the name(s) the node may report as the one that stopped it."""
    code, log = node.finish()
    assert code == 0, f"exit code {code}:\n{log}"
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert any(f"stopped ({name}): {STOPPED}" in log for name in first_signal), log
    return log


@pytest.fixture
def node_process():
    started: list[NodeProcess] = []

    def start(case: str) -> NodeProcess:
        started.append(NodeProcess(f"shutdown_{case}_{os.getpid()}"))
        return started[-1]

    yield start
    for node in started:
        node.kill()


@pytest.fixture(scope="module")
def probe():
    """A node of the test process (own context) that sees the graph, publishes frames and
    counts the outputs."""
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("shutdown_probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    def spin():
        with contextlib.suppress(Exception):
            executor.spin()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    thread.join(5)


# ---------------------------------------------------------------------------------- cases
def test_signals_during_startup(node_process):
    """Interrupted while importing rclpy / torch / timm (before any node exists: the process
    ends at once, nothing raised into the imports): SIGTERM + SIGINT."""
    node = node_process("startup")
    time.sleep(1.0)
    node.signal(signal.SIGTERM, signal.SIGINT)
    # Both may arrive while a C extension imports; Python then runs the pending handlers in
    # signal-number order (SIGINT = 2 first), so either name is the "first" one.
    log = assert_clean_exit(node, "SIGTERM", "SIGINT")
    assert "active:" not in log


def test_signals_while_the_model_loads(node_process):
    """The node exists in the graph and loads the model (autostart configure), not active
    yet: SIGINT twice."""
    node = node_process("loading")
    assert node.wait_for(lambda: node.logged("loading the model"), START_S), "".join(node.lines)
    assert not node.logged("active:"), "the model loaded before the signal: case not reached"
    node.signal(signal.SIGINT, signal.SIGINT)
    log = assert_clean_exit(node, "SIGINT")
    assert "active:" not in log


def test_signals_when_idle(node_process):
    """Active, no input: SIGINT then SIGTERM (ros2 launch's escalation), 50 ms apart."""
    node = node_process("idle")
    assert node.wait_for(lambda: node.logged("active:"), START_S), "".join(node.lines)
    node.signal(signal.SIGINT, signal.SIGTERM)
    assert_clean_exit(node, "SIGINT")


def test_signals_mid_inference(node_process, probe, fixtures_dir):
    """Frames stream in (real KITTI image, 20 Hz) and outputs come back; then four signals
    50 ms apart while the worker is busy."""
    rgb = cv2.cvtColor(cv2.imread(str(fixtures_dir / KITTI)), cv2.COLOR_BGR2RGB)
    node = node_process("inference")
    ns = node.namespace
    image_pub = probe.create_publisher(Image, f"/{ns}/image", qos_profile_sensor_data)
    info_pub = probe.create_publisher(CameraInfo, f"/{ns}/camera_info", qos_profile_sensor_data)
    depth_count = [0]
    probe.create_subscription(Image, f"/{ns}/depth",
                              lambda _: depth_count.__setitem__(0, depth_count[0] + 1),
                              qos_profile_sensor_data)
    fields = array_to_image_fields(rgb, "rgb8")
    h, w = rgb.shape[:2]
    info = CameraInfo(height=h, width=w, k=[721.5, 0.0, w / 2, 0.0, 721.5, h / 2, 0.0, 0.0, 1.0])
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            msg = Image(**fields)
            msg.header.frame_id = "camera"
            msg.header.stamp = probe.get_clock().now().to_msg()
            info.header = msg.header
            info_pub.publish(info)
            image_pub.publish(msg)
            time.sleep(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        assert node.wait_for(lambda: node.logged("active:"), START_S), "".join(node.lines)
        assert node.wait_for(lambda: depth_count[0] >= 2, 60.0), \
            f"no depth output: {''.join(node.lines)}"
        node.signal(signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT)
        assert_clean_exit(node, "SIGINT")
    finally:
        stop.set()
        publisher.join(5)


def test_asynchronous_publication_sends_each_frames_own_outputs(node_process, probe):
    """Two different frames in turn, as fast as the node takes them: every depth and colour
    message equals the other messages of its frame, byte for byte, and differs from the other
    frame's (a reused buffer sent after the next frame wrote into it would mix them)."""
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(128, 60, (120, 160, 3)), 0, 255).astype(np.uint8)]
    frames.append(np.ascontiguousarray(frames[0][::-1]))
    node = node_process("async")
    ns = node.namespace
    reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = probe.create_publisher(Image, f"/{ns}/image", reliable)
    received: dict[str, list] = {"depth": [], "semantic/color": []}
    for name, msgs in received.items():
        probe.create_subscription(Image, f"/{ns}/{name}", msgs.append, reliable)
    try:
        assert node.wait_for(lambda: node.logged("active:"), START_S), "".join(node.lines)
        mode = os.environ.get(PUBLICATION_MODE_ENV, "ASYNCHRONOUS")  # main()'s default
        assert node.logged(f"Fast DDS publication mode {mode}"), "".join(node.lines)
        assert node.wait_for(lambda: image_pub.get_subscription_count() > 0, 30.0)
        for sec in range(1, 41):
            msg = Image(**array_to_image_fields(frames[sec % 2], "rgb8"))
            msg.header.frame_id, msg.header.stamp.sec = "camera", sec
            image_pub.publish(msg)
            time.sleep(rng.uniform(0.01, 0.04))  # jitter: the node cannot lock onto one frame
        assert node.wait_for(lambda: all(len(m) >= 10 for m in received.values()), 60.0)
        time.sleep(1.0)
        for name, msgs in received.items():
            payloads = [{bytes(m.data) for m in msgs if m.header.stamp.sec % 2 == k}
                        for k in (0, 1)]
            assert all(len(p) <= 1 for p in payloads), name  # one payload per frame
            assert not payloads[0] & payloads[1], name
        node.signal(signal.SIGINT)
        assert_clean_exit(node, "SIGINT")
    finally:
        node.kill()
