"""rcl_publish: outputs serialized in place equal the middleware's serialization, and published
through rcl they reach subscribers as the messages rclpy would have sent."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from xnet_ros import rcl_publish  # noqa: E402
from xnet_ros.geometry import Intrinsics  # noqa: E402
from xnet_ros.outputs import BufferPool, OutputOptions, build_outputs  # noqa: E402
from xnet_ros.params import ALL_OUTPUTS, DEPTH, DEPTH_INFO, LABELS, POINTS  # noqa: E402
from xnet_ros.rcl_publish import SerializedPublishing, frame_output, self_check  # noqa: E402
from xnet_ros.ros_messages import output_msg  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
DISCOVERY_S = 20.0


def header(frame_id: str = "cam_optical") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = 42, 7
    return h


def outputs(pool: BufferPool, organized: bool = True, size=(45, 61)):
    rng = np.random.default_rng(3)
    h, w = size
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.2, 6.0, (12, 16)).astype(np.float32)
    depth[3, 4] = np.nan  # invalid points: NaN in organized clouds, dropped in dense ones
    labels = rng.integers(0, 10, (12, 16)).astype(np.int64)
    intr = Intrinsics(50.0, 52.0, w / 2, h / 2, w, h)
    opts = OutputOptions(min_depth=0.3, points_stride=2, points_organized=organized,
                         num_classes=10)
    return build_outputs(rgb, depth, labels, intr, opts, buffers=pool)


def test_self_check_passes_with_this_middleware():
    assert self_check() == ""
    publishing, why_not = SerializedPublishing.load()
    assert publishing is not None and why_not == ""


def test_self_check_names_a_serialization_that_differs(monkeypatch):
    def wrong_width(stamp, frame_id, fields, nbytes):
        return rcl_publish.image_prefix(stamp, frame_id, {**fields, "width": 1}, nbytes)

    monkeypatch.setattr(rcl_publish, "frame_output", lambda name, h, fields: (
        rcl_publish.frame_in_place(fields["data"], wrong_width(
            (h.stamp.sec, h.stamp.nanosec), h.frame_id, fields, fields["data"].nbytes))
        if name != POINTS else None))
    assert "depth" in self_check()
    publishing, why_not = SerializedPublishing.load()
    assert publishing is None and "differs" in why_not


@pytest.mark.parametrize("organized", [True, False])
def test_every_output_deserializes_to_the_message_rclpy_would_send(organized):
    out = outputs(BufferPool(headroom=True), organized)
    assert set(out.fields) == set(ALL_OUTPUTS)
    for name, fields in out.fields.items():
        framed = frame_output(name, header(), fields)
        expected = output_msg(name, header(), fields)
        got = deserialize_message(ctypes.string_at(framed.address, framed.length),
                                  type(expected))
        assert got == expected, name
    assert out.fields[POINTS].is_dense is not organized


def test_outputs_without_room_are_left_to_rclpy():
    out = outputs(BufferPool())  # plain buffers, as the bag tools use
    assert all(frame_output(name, header(), f) is None for name, f in out.fields.items()
               if name != DEPTH_INFO)  # a camera info is serialized into bytes of its own
    roomy = outputs(BufferPool(headroom=True))
    assert frame_output(DEPTH, header("f" * 600), roomy.fields[DEPTH]) is None  # no room


class Pair:
    """A publisher and a subscriber of one topic, in one context."""

    def __init__(self, msg_type, topic: str):
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("xnet_rcl_publish_test", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.got: list = []
        self.node.create_subscription(msg_type, topic, self.got.append, RELIABLE)
        self.pub = self.node.create_publisher(msg_type, topic, RELIABLE)
        deadline = time.monotonic() + DISCOVERY_S
        while self.pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
        assert self.pub.get_subscription_count() == 1, "no discovery"

    def receive(self, n: int) -> list:
        deadline = time.monotonic() + DISCOVERY_S
        while len(self.got) < n and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
        return self.got

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.mark.parametrize("name, msg_type", [(LABELS, Image), (POINTS, PointCloud2),
                                            (DEPTH_INFO, CameraInfo)])
def test_published_through_rcl_arrives_as_the_message_and_the_buffer_is_free(name, msg_type):
    publishing, _ = SerializedPublishing.load()
    pair = Pair(msg_type, "rcl_publish_test")
    try:
        out = outputs(BufferPool(headroom=True))
        fields = out.fields[name]
        expected = output_msg(name, header(), fields)
        assert publishing.publish(pair.pub, name, header(), fields)
        if name != DEPTH_INFO:
            data = fields.data if name == POINTS else fields["data"]
            data[:] = bytes(len(data))  # after publish: must not show
        if name != DEPTH_INFO:
            assert not publishing.publish(pair.pub, name, header("f" * 600), fields)  # rclpy's
        got = pair.receive(1)
        assert len(got) == 1 and got[0] == expected
        pair.node.destroy_publisher(pair.pub)
        with pytest.raises(Exception, match="(?i)destr|invalid"):
            publishing.publish(pair.pub, name, header(), fields)
    finally:
        pair.close()


def test_an_inactive_lifecycle_publisher_is_left_to_rclpy():
    class Inactive:
        is_activated = False
        handle = object()

    publishing, _ = SerializedPublishing.load()
    out = outputs(BufferPool(headroom=True))
    assert not publishing.publish(Inactive(), DEPTH, header(), out.fields[DEPTH])
