"""The demo's recorder: every input and output topic, as the raw CDR rclpy receives it, into a
rosbag2 MCAP bag (`rosbags`), and kept in memory for the report."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from .bag.messages import LATCHED_QOS, make_typestore
from .outputs import ALL_OUTPUTS, DEPTH_INFO, POINTS
from .ros_messages import ClassTable, InferenceStats, latched_qos

IMAGE_TOPIC, INFO_TOPIC = "/image", "/camera_info"
STATS_TOPIC, CLASS_TABLE_TOPIC, DIAG_TOPIC = ("/xnet_node/stats", "/semantic/class_table",
                                              "/diagnostics")
OUTPUT_TOPICS = tuple("/" + name for name in ALL_OUTPUTS)
MSG_CLASSES = {  # what each topic carries (the xnet_ros ones only with the built interfaces)
    IMAGE_TOPIC: Image, INFO_TOPIC: CameraInfo, DIAG_TOPIC: DiagnosticArray,
    **{"/" + name: Image for name in ALL_OUTPUTS},
    "/" + DEPTH_INFO: CameraInfo, "/" + POINTS: PointCloud2,
    **({STATS_TOPIC: InferenceStats, CLASS_TABLE_TOPIC: ClassTable}
       if InferenceStats is not None else {}),
}


def msgtype(cls: type) -> str:
    """'pkg/msg/Name' of an rclpy message class."""
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


class Recorder:
    """Subscribes a node to every topic of MSG_CLASSES (reliable; the class table latched)."""

    def __init__(self, node: Any, bag_path: Path):
        from rosbags.rosbag2 import StoragePlugin, Writer

        typestore = make_typestore()
        self.topics = {t: c for t, c in MSG_CLASSES.items() if msgtype(c) in typestore.fielddefs}
        self._writer = Writer(bag_path, version=8, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {
            topic: self._writer.add_connection(
                topic, msgtype(cls), typestore=typestore,
                offered_qos_profiles=[LATCHED_QOS] if topic == CLASS_TABLE_TOPIC else [])
            for topic, cls in self.topics.items()}
        self._cond = threading.Condition()
        self.received: dict[str, list[tuple[int, bytes]]] = {t: [] for t in self.topics}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in self.topics.items():
            qos = latched_qos() if topic == CLASS_TABLE_TOPIC else reliable
            node.create_subscription(cls, topic, self._callback(topic), qos, raw=True)

    def _callback(self, topic: str) -> Any:
        def record(data: bytes) -> None:
            now = time.time_ns()
            with self._cond:
                self._writer.write(self._connections[topic], now, data)
                self.received[topic].append((now, data))
        return record

    def count(self, topic: str) -> int:
        with self._cond:
            return len(self.received.get(topic, ()))

    def messages(self, topic: str) -> list[tuple[int, Any]]:
        """(reception time ns, deserialized message) of every message on `topic`."""
        with self._cond:
            raw = list(self.received.get(topic, ()))
        return [(t, deserialize_message(data, self.topics[topic])) for t, data in raw]

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {t: len(v) for t, v in self.received.items()}

    def close(self) -> None:
        with self._cond:
            self._writer.close()
