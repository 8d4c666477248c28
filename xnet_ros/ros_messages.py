"""rclpy message and QoS construction for the node: output fields -> sensor_msgs, parameter
descriptors. The fields themselves come from the ROS-free `outputs.build_outputs`."""

from __future__ import annotations

import array
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_system_default,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from .geometry import PointCloudData
from .outputs import DEPTH_INFO, POINTS
from .params import ParamSpec

QOS_DEPTH = 5


def make_qos(name: str, depth: int = QOS_DEPTH) -> QoSProfile:
    """`sensor_data` (best effort), `reliable` or `system_default`, volatile, keep-last."""
    if name == "system_default":
        return qos_profile_system_default
    reliability = (ReliabilityPolicy.BEST_EFFORT if name == "sensor_data"
                   else ReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Reliable + transient local, depth 1: late subscribers (transient local) get the table."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def uint8_array(data: Any) -> array.array:
    """uint8[] message data as array.array('B'): the generated setters take it as is on every
    distro (bytes is copied element-wise by Humble's checks, a numpy array costs ~50 ms)."""
    if isinstance(data, array.array) and data.typecode == "B":
        return data
    return array.array("B", bytes(data) if not isinstance(data, (bytes, bytearray)) else data)


def image_msg(header: Header, fields: dict[str, Any]) -> Image:
    return Image(header=header, **{**fields, "data": uint8_array(fields["data"])})


def camera_info_msg(header: Header, fields: dict[str, Any]) -> CameraInfo:
    return CameraInfo(header=header, **fields)


def pointcloud_msg(header: Header, pc: PointCloudData) -> PointCloud2:
    return PointCloud2(
        header=header, height=pc.height, width=pc.width,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in pc.fields],
        is_bigendian=bool(pc.is_bigendian), point_step=pc.point_step, row_step=pc.row_step,
        data=uint8_array(pc.data), is_dense=bool(pc.is_dense),
    )


def output_msg(name: str, header: Header, fields: Any) -> Any:
    if name == POINTS:
        return pointcloud_msg(header, fields)
    if name == DEPTH_INFO:
        return camera_info_msg(header, fields)
    return image_msg(header, fields)


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=spec.name, description=spec.description,
                               additional_constraints=spec.constraints,
                               read_only=spec.read_only)
    if spec.range is not None:
        lo, hi = spec.range
        if spec.type is int:
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return desc
