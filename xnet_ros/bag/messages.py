"""The messages `xnet bag` writes, as rosbags dataclasses: types, offered QoS, construction.

`MessageFactory` wraps the fields `xnet_ros.pipeline.FramePipeline` produces (the node's own
fields) into rosbags messages, as `xnet_ros.ros_messages` wraps them into rclpy messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ..geometry import PointCloudData
from ..params import LATCHED_QOS as LATCHED_SPEC
from ..params import OUTPUT_QOS as OUTPUT_SPEC
from ..params import QosSpec

# The sensor_msgs/std_msgs types written here are identical (same RIHS01 hashes) from Humble to
# Kilted, so bags written with the Humble store play back on all three.
TYPESTORE = Stores.ROS2_HUMBLE
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
CLASS_TABLE = "xnet_ros/msg/ClassTable"
MSG_NAMES = ("ClassInfo", "ClassTable", "InferenceStats")  # msg/, in dependency order

_NEVER = QosTime(0, 0)  # rmw "unspecified" = default / infinite


def rosbags_qos(spec: QosSpec) -> Qos:
    """The offered QoS recorded with a topic (`ros2 bag play` re-publishes with it)."""
    return Qos(QosHistory.KEEP_LAST, spec.depth,
               QosReliability.RELIABLE if spec.reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if spec.transient_local else QosDurability.VOLATILE,
               _NEVER, _NEVER, QosLiveliness.AUTOMATIC, _NEVER, False)


# As the node: outputs reliable, volatile, keep last 5; the class table latched.
OUTPUT_QOS = rosbags_qos(OUTPUT_SPEC)
LATCHED_QOS = rosbags_qos(LATCHED_SPEC)


def make_typestore() -> Any:
    """The Humble typestore, plus xnet_ros/msg types when their .msg files can be found."""
    typestore = get_typestore(TYPESTORE)
    msg_dir = _find_msg_dir()
    if msg_dir is not None:
        types: dict[str, Any] = {}
        for name in MSG_NAMES:
            types.update(get_types_from_msg((msg_dir / f"{name}.msg").read_text(),
                                            f"xnet_ros/msg/{name}"))
        typestore.register(types)
    return typestore


def _find_msg_dir() -> Path | None:
    """msg/ of the source tree, or share/xnet_ros/msg of an installed package."""
    candidates = [Path(__file__).resolve().parents[2] / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "xnet_ros" / "msg")
    for path in candidates:
        if all((path / f"{name}.msg").is_file() for name in MSG_NAMES):
            return path
    return None


class MessageFactory:
    """rosbags dataclass messages from the fields `xnet_ros.outputs.build_outputs` returns."""

    def __init__(self, typestore: Any):
        self.types = typestore.types

    def header(self, stamp: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(stamp), 1_000_000_000)
        return self.types["std_msgs/msg/Header"](
            stamp=self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id=frame_id)

    def image(self, fields: dict[str, Any], header: Any) -> Any:
        return self.types[IMAGE](
            header=header, height=fields["height"], width=fields["width"],
            encoding=fields["encoding"], is_bigendian=fields["is_bigendian"],
            step=fields["step"], data=np.frombuffer(fields["data"], dtype=np.uint8))

    def camera_info(self, fields: dict[str, Any], header: Any) -> Any:
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types[CAMERA_INFO](
            header=header, height=fields["height"], width=fields["width"],
            distortion_model=fields["distortion_model"],
            d=np.asarray(fields["d"], dtype=np.float64),
            k=np.asarray(fields["k"], dtype=np.float64),
            r=np.asarray(fields["r"], dtype=np.float64),
            p=np.asarray(fields["p"], dtype=np.float64),
            binning_x=0, binning_y=0, roi=roi)

    def pointcloud(self, cloud: PointCloudData, header: Any) -> Any:
        point_field = self.types["sensor_msgs/msg/PointField"]
        fields = [point_field(name=name, offset=offset, datatype=datatype, count=count)
                  for name, offset, datatype, count in cloud.fields]
        return self.types[POINTCLOUD2](
            header=header, height=cloud.height, width=cloud.width, fields=fields,
            is_bigendian=bool(cloud.is_bigendian), point_step=cloud.point_step,
            row_step=cloud.row_step, data=np.frombuffer(cloud.data, dtype=np.uint8),
            is_dense=bool(cloud.is_dense))

    def from_output(self, value: Any, header: Any) -> Any:
        """The message for one `FrameOutputs.fields` value (image, camera info or cloud)."""
        if isinstance(value, PointCloudData):
            return self.pointcloud(value, header)
        if "encoding" in value:
            return self.image(value, header)
        return self.camera_info(value, header)

    def class_table(self, header: Any, meta: Any) -> Any:
        """xnet_ros/ClassTable of a model's `ModelMetadata` (names and palette)."""
        info = self.types["xnet_ros/msg/ClassInfo"]
        classes = [info(id=i, name=name, r=int(rgb[0]), g=int(rgb[1]), b=int(rgb[2]))
                   for i, (name, rgb) in enumerate(zip(meta.class_names, meta.palette))]
        return self.types[CLASS_TABLE](header=header, model_name=meta.name, classes=classes)
