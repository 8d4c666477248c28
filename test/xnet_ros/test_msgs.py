"""The package's interfaces (msg/) and its ROS build files.

Message tests need the interfaces built (`make msgs`) and `source tools/ros_env.sh`; they skip
otherwise. The build-file tests only read package.xml / CMakeLists.txt.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MSG_DIR = REPO / "msg"
DISCOVERY_TIMEOUT_S = 15.0


def _msgs():
    """Import the generated message module, or skip (interfaces not built / env not sourced)."""
    try:
        from xnet_ros import msg
    except ImportError as exc:
        pytest.skip(f"xnet_ros.msg not importable ({exc}); run `make msgs` and "
                    "`source tools/ros_env.sh`")
    return msg


# --------------------------------------------------------------------------- build files


def test_package_xml_format3_ament_cmake():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package"
    assert root.get("format") == "3"
    assert root.findtext("name") == "xnet_ros"
    assert root.findtext("license") == "Apache-2.0"
    assert root.findtext("export/build_type") == "ament_cmake"
    assert "ament_cmake" in [e.text for e in root.findall("buildtool_depend")]
    assert "rosidl_default_generators" in [e.text for e in root.findall("buildtool_depend")]
    assert "rosidl_default_runtime" in [e.text for e in root.findall("exec_depend")]
    assert root.findtext("member_of_group") == "rosidl_interface_packages"


def test_every_msg_file_is_generated():
    text = (REPO / "CMakeLists.txt").read_text()
    text = re.sub(r"#[^\n]*", "", text)  # drop comments
    assert re.search(r"rosidl_generate_interfaces\s*\(\s*\$\{PROJECT_NAME\}", text)
    listed = set(re.findall(r"\"?(msg/[A-Za-z0-9_]+\.msg)\"?", text))
    on_disk = {f"msg/{p.name}" for p in MSG_DIR.glob("*.msg")}
    assert on_disk, "no msg/*.msg files"
    assert on_disk == listed, f"missing in CMakeLists.txt: {on_disk - listed}, " \
                              f"listed but absent: {listed - on_disk}"


def test_node_script_installed_for_ros2_run():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"PROGRAMS\s+scripts/xnet_node\s+DESTINATION\s+lib/\$\{PROJECT_NAME\}", text)
    script = REPO / "scripts" / "xnet_node"
    assert script.stat().st_mode & 0o111, "scripts/xnet_node must be executable"
    assert "from xnet_ros.main import main" in script.read_text()  # the entry point (issue 9)


# --------------------------------------------------------------------------- messages


@pytest.mark.ros
def test_source_and_generated_modules_coexist():
    msg = _msgs()
    import xnet_ros
    import xnet_ros.conversions  # a source module of the same Python package

    assert msg.InferenceStats.__module__.startswith("xnet_ros.msg")
    assert len(xnet_ros.__path__) >= 1
    # The source tree first (its modules win), then the install dir that holds msg/.
    source = (REPO / "xnet_ros").resolve()
    installed = Path(msg.__file__).resolve().parents[1]
    paths = [Path(p).resolve() for p in xnet_ros.__path__]
    assert Path(xnet_ros.conversions.__file__).resolve().parent == source
    assert paths[0] == source, paths
    if installed != source:  # a colcon install merges both into one directory
        assert installed.name == "xnet_ros" and installed.parent.name == "site-packages"
        assert installed in paths[1:], paths


@pytest.mark.ros
def test_inference_stats_fields():
    msg = _msgs()
    m = msg.InferenceStats()
    types = m.get_fields_and_field_types()
    expected = {
        "header": "std_msgs/Header",
        "backend": "string",
        "model_name": "string",
        "preprocess_ms": "float",
        "infer_ms": "float",
        "postprocess_ms": "float",
        "total_ms": "float",
        "frames_received": "uint32",
        "frames_processed": "uint32",
        "frames_dropped": "uint32",
        "frames_failed": "uint32",
        "rate_hz": "float",
        "input_width": "uint16",
        "input_height": "uint16",
        "output_width": "uint16",
        "output_height": "uint16",
        "camera": "string",  # issue 14: the camera of a multi-camera node
    }
    assert types == expected

    m.header.frame_id = "camera_optical"
    m.header.stamp.sec = 12
    m.backend = "torch-cpu"
    m.model_name = "xnet-tiny"
    m.preprocess_ms = 1.5
    m.infer_ms = 20.25
    m.postprocess_ms = 2.0
    m.total_ms = 30.0
    m.frames_received = 2**32 - 1
    m.frames_processed = 10
    m.frames_dropped = 3
    m.frames_failed = 1
    m.rate_hz = 14.5
    m.input_width, m.input_height = 1280, 720
    m.output_width, m.output_height = 640, 360
    assert m.frames_received == 4294967295
    assert isinstance(m.infer_ms, float) and m.infer_ms == pytest.approx(20.25)
    # range checks of the generated setters (opt-in since Jazzy: check_fields or
    # ROS_PYTHON_CHECK_FIELDS=1)
    checked = msg.InferenceStats(check_fields=True)
    with pytest.raises(AssertionError):
        checked.input_width = 70000
    with pytest.raises(AssertionError):
        checked.frames_dropped = -1


@pytest.mark.ros
def test_class_table_fields():
    msg = _msgs()
    info = msg.ClassInfo(id=7, name="road", r=128, g=64, b=128)
    assert info.get_fields_and_field_types() == {
        "id": "uint16", "name": "string", "r": "uint8", "g": "uint8", "b": "uint8"}
    with pytest.raises(AssertionError):
        msg.ClassInfo(r=256, check_fields=True)
    table = msg.ClassTable(model_name="xnet-tiny", classes=[info, msg.ClassInfo(id=8, name="sky")])
    assert table.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "model_name": "string",
        "classes": "sequence<xnet_ros/ClassInfo>"}
    assert [c.name for c in table.classes] == ["road", "sky"]


@pytest.mark.ros
def test_serialization_roundtrip():
    msg = _msgs()
    from rclpy.serialization import deserialize_message, serialize_message

    table = msg.ClassTable(model_name="m", classes=[
        msg.ClassInfo(id=i, name=f"c{i}", r=i, g=2 * i, b=255 - i) for i in range(20)])
    assert deserialize_message(serialize_message(table), msg.ClassTable) == table
    stats = msg.InferenceStats(backend="onnxruntime-cpu", infer_ms=3.25, frames_processed=9)
    assert deserialize_message(serialize_message(stats), msg.InferenceStats) == stats


@pytest.mark.ros
def test_publish_late_joiner_receives_latched_class_table():
    """Publish InferenceStats + ClassTable, then create the subscriber node: the transient-local
    ClassTable reaches the late joiner; InferenceStats (same QoS here) too."""
    msg = _msgs()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        executor = SingleThreadedExecutor(context=ctx)
        pub_node = rclpy.create_node("xnet_msgs_test_pub", context=ctx)
        stats_pub = pub_node.create_publisher(msg.InferenceStats, "~/stats", latched)
        table_pub = pub_node.create_publisher(msg.ClassTable, "~/class_table", latched)
        executor.add_node(pub_node)

        stats = msg.InferenceStats(backend="torch-cpu", model_name="xnet-tiny", infer_ms=12.5,
                                   frames_received=5, frames_processed=4, frames_dropped=1,
                                   input_width=64, input_height=48,
                                   output_width=32, output_height=24)
        stats.header.frame_id = "cam"
        stats.header.stamp = pub_node.get_clock().now().to_msg()
        table = msg.ClassTable(model_name="xnet-tiny", classes=[
            msg.ClassInfo(id=0, name="road", r=128, g=64, b=128),
            msg.ClassInfo(id=1, name="sky", r=70, g=130, b=180)])
        table.header.stamp = stats.header.stamp
        stats_pub.publish(stats)
        table_pub.publish(table)

        # the late joiner
        sub_node = rclpy.create_node("xnet_msgs_test_sub", context=ctx)
        got: dict[str, object] = {}
        sub_node.create_subscription(msg.InferenceStats, "/xnet_msgs_test_pub/stats",
                                     lambda m: got.setdefault("stats", m), latched)
        sub_node.create_subscription(msg.ClassTable, "/xnet_msgs_test_pub/class_table",
                                     lambda m: got.setdefault("table", m), latched)
        executor.add_node(sub_node)

        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
        while len(got) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert "table" in got, "late joiner did not get the transient-local ClassTable"
        assert "stats" in got, "late joiner did not get the transient-local InferenceStats"
        assert got["table"] == table
        assert [c.name for c in got["table"].classes] == ["road", "sky"]
        assert got["stats"] == stats
        assert got["stats"].header.frame_id == "cam"

        executor.shutdown()
        sub_node.destroy_node()
        pub_node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
