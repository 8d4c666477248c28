"""The rclpy side of xnet_node: messages from pipeline results, QoS profiles, parameter
declaration, subscriber counts. The fields themselves come from the ROS-free
`pipeline.FramePipeline` (via `outputs.build_outputs`)."""

from __future__ import annotations

import array
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_system_default,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from .geometry import PointCloudData
from .params import (
    COLOR,
    DEPTH,
    DEPTH_INFO,
    INPUT_QOS,
    LABELS,
    LATCHED_QOS,
    OUTPUT_QOS,
    POINTS,
    ParamError,
    ParamSpec,
    QosSpec,
)

try:  # generated from msg/ (`make msgs` + `source tools/ros_env.sh`, or a colcon install)
    from xnet_ros.msg import ClassInfo, ClassTable, InferenceStats

    MSG_IMPORT_ERROR = ""
except ImportError as _exc:  # the node still runs; stats and class table are not published
    ClassInfo = ClassTable = InferenceStats = None
    MSG_IMPORT_ERROR = str(_exc)

try:  # publisher matched events: rclpy of Iron and later
    from rclpy.event_handler import PublisherEventCallbacks

    PublisherEventCallbacks(matched=lambda info: None)
    MATCHED_EVENTS = True
except (ImportError, TypeError):  # Humble: subscriber counts are polled instead
    MATCHED_EVENTS = False

QOS_DEPTH = OUTPUT_QOS.depth
OUTPUT_TYPES = {DEPTH: Image, DEPTH_INFO: CameraInfo, LABELS: Image, COLOR: Image,
                POINTS: PointCloud2}


# ---------------------------------------------------------------------------------------- QoS
def qos_profile(spec: QosSpec) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
        reliability=ReliabilityPolicy.RELIABLE if spec.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.transient_local
                    else DurabilityPolicy.VOLATILE))


def make_qos(name: str, depth: int = QOS_DEPTH) -> QoSProfile:
    """The deprecated input_qos/output_qos values: `sensor_data` (best effort), `reliable` or
    `system_default`; volatile, keep last `depth`."""
    if name == "system_default":
        return qos_profile_system_default
    spec = INPUT_QOS if name == "sensor_data" else OUTPUT_QOS
    return qos_profile(QosSpec(spec.reliable, depth))


def latched_qos() -> QoSProfile:
    """Reliable + transient local, depth 1: late subscribers get the last message."""
    return qos_profile(LATCHED_QOS)


def overridable() -> QoSOverridingOptions:
    """QoS overrides (history, depth, reliability) as read-only `qos_overrides.` parameters."""
    return QoSOverridingOptions.with_default_policies()


class Publishers:
    """A node's publishers by name, and the subscriptions matched to each: kept current by
    publisher matched events, or, where rclpy has none (Humble), asked of the publisher."""

    def __init__(self) -> None:
        self._pubs: dict[str, Any] = {}
        self._matched: dict[str, int] = {}

    def event_callbacks(self, name: str) -> Any:
        """`event_callbacks` for the publisher of `name` (None without matched events)."""
        if not MATCHED_EVENTS:
            return None
        self._matched[name] = 0

        def matched(info: Any) -> None:
            self._matched[name] = int(info.current_count)

        return PublisherEventCallbacks(matched=matched)

    def add(self, name: str, publisher: Any) -> None:
        self._pubs[name] = publisher

    def get(self, name: str) -> Any:
        return self._pubs.get(name)

    def clear(self) -> list[Any]:
        """Forget every publisher; returns them (to destroy)."""
        pubs = list(self._pubs.values())
        self._pubs, self._matched = {}, {}
        return pubs

    def count(self, name: str) -> int:
        if MATCHED_EVENTS:
            return self._matched.get(name, 0)
        pub = self._pubs.get(name)
        return pub.get_subscription_count() if pub is not None else 0

    def counts(self) -> dict[str, int]:
        return {name: self.count(name) for name in self._pubs}


# ----------------------------------------------------------------------------------- messages
def uint8_array(data: Any) -> array.array:
    """uint8[] message data as array.array('B') (bytes is copied element-wise by Humble's
    checks, a numpy array costs ~50 ms); an array.array('B') is returned as is."""
    if isinstance(data, array.array) and data.typecode == "B":
        return data
    return array.array("B", bytes(data) if not isinstance(data, (bytes, bytearray)) else data)


def with_data(msg: Any, data: Any) -> Any:
    """`msg.data = data` without copying the buffer; returns msg.

    Generated messages keep a field's value in the `_<name>` slot. On Jazzy and later their
    constructor and, with field checks off (the default), their setter each copy a uint8[]
    value into a new array.array: two copies of every image, ~1 ms per 4 MB. rclpy's publish
    copies the buffer into the C message anyway, so the slot takes the array itself (the
    setter where a message class has no such slot)."""
    data = uint8_array(data)
    if "_data" in getattr(type(msg), "__slots__", ()):
        msg._data = data
    else:
        msg.data = data
    return msg


def image_msg(header: Header, fields: dict[str, Any]) -> Image:
    return with_data(Image(header=header, **{k: v for k, v in fields.items() if k != "data"}),
                     fields["data"])


def camera_info_msg(header: Header, fields: dict[str, Any]) -> CameraInfo:
    return CameraInfo(header=header, **fields)


def pointcloud_msg(header: Header, pc: PointCloudData) -> PointCloud2:
    return with_data(PointCloud2(
        header=header, height=pc.height, width=pc.width,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in pc.fields],
        is_bigendian=bool(pc.is_bigendian), point_step=pc.point_step, row_step=pc.row_step,
        is_dense=bool(pc.is_dense)), pc.data)


def output_msg(name: str, header: Header, fields: Any) -> Any:
    if name == POINTS:
        return pointcloud_msg(header, fields)
    if name == DEPTH_INFO:
        return camera_info_msg(header, fields)
    return image_msg(header, fields)


def stats_msg(header: Header, result: Any, s: Any, backend: str, model_name: str,
              publish_ms: float) -> Any:
    """xnet_ros/InferenceStats of a pipeline result; `s` is the worker snapshot that counts
    it; `publish_ms` (publishing the outputs) counts in postprocess and total."""
    t, u32, u16 = result.timings, 0xFFFFFFFF, 0xFFFF
    (in_w, in_h), (out_w, out_h) = result.input_size, result.output_size
    return InferenceStats(
        header=header, backend=backend, model_name=model_name,
        preprocess_ms=float(t["pre_ms"]), infer_ms=float(t["infer_ms"]),
        postprocess_ms=float(t["post_ms"] + publish_ms),
        total_ms=float(t["total_ms"] + publish_ms),
        frames_received=s.received & u32, frames_processed=s.processed & u32,
        frames_dropped=s.dropped_total & u32, frames_failed=s.failed & u32,
        rate_hz=float(s.rate_hz), input_width=min(in_w, u16), input_height=min(in_h, u16),
        output_width=min(out_w, u16), output_height=min(out_h, u16),
        **({"camera": result.camera} if result.camera else {}))


def class_table_msg(header: Header, meta: Any) -> Any:
    """xnet_ros/ClassTable of a model's `ModelMetadata`."""
    classes = [ClassInfo(id=i, name=name, r=int(rgb[0]), g=int(rgb[1]), b=int(rgb[2]))
               for i, (name, rgb) in enumerate(zip(meta.class_names, meta.palette))]
    return ClassTable(header=header, model_name=meta.name, classes=classes)


def diagnostic_status(level: int, name: str, message: str, hardware_id: str,
                      values: dict[str, Any]) -> DiagnosticStatus:
    return DiagnosticStatus(level=bytes([level]), name=name, message=message,
                            hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


# --------------------------------------------------------------------------------- parameters
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


def declare_parameters(node: Any, specs: list[ParamSpec]) -> dict[str, ParamError]:
    """Declare every schema parameter on `node`. An override rclpy rejects (wrong type, out of
    range) does not kill the node: the default is declared instead and the error is returned
    (the next configure fails, naming it). Integers are accepted for doubles."""
    overrides = getattr(node, "_parameter_overrides", {})
    errors: dict[str, ParamError] = {}
    for spec in specs:
        try:
            _declare(node, spec.name, spec.default, descriptor_for(spec))
            continue
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            err = ParamError(spec.name, str(exc))
        value = spec.default
        override = overrides.get(spec.name)
        if override is not None:
            coerced, err = spec.coerce(override.value)
            err = err or spec.check(coerced)
            if err is None:
                value = coerced  # e.g. an integer given for a double
        if err:
            errors[spec.name] = ParamError(
                spec.name, f"{err.message} (the default {spec.default!r} is in use)")
        _declare(node, spec.name, value, descriptor_for(spec), ignore_override=True)
    return errors


def _declare(node: Any, name: str, value: Any, descriptor: ParameterDescriptor,
             ignore_override: bool = False) -> None:
    """declare_parameter; an empty list is declared as a string array (rclpy would infer a
    byte array) and set to [] unless an override gave it a value."""
    if not (isinstance(value, list) and not value):
        node.declare_parameter(name, value, descriptor, ignore_override=ignore_override)
        return
    param = node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor,
                                   ignore_override=ignore_override)
    if param.type_ == Parameter.Type.NOT_SET:  # no override, or an empty list (`[]`)
        node.set_parameters([Parameter(name, Parameter.Type.STRING_ARRAY, [])])
