"""Launch wiring: executable, parameter file, remaps and RViz config agree with the node.

Most checks read the files and `xnet_ros.launch_config` (ROS-free); the launch file itself is
only imported when `launch_ros` is installed (it is not in the PyPI-wheel dev environment).
The params-file and remap tests marked `ros` load them into a real node in-process.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import time
from pathlib import Path

import pytest
import yaml

from xnet_ros import launch_config as lc
from xnet_ros.outputs import ALL_OUTPUTS, COLOR, DEPTH, LABELS, POINTS
from xnet_ros.params import (
    INPUT_CAMERA_INFO,
    INPUT_COMPRESSED,
    INPUT_IMAGE,
    QOS_RELIABILITY,
    NodeParams,
    param_specs,
)

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / lc.LAUNCH_FILE
PARAMS = REPO / lc.CONFIG_DIR / lc.PARAMS_FILE
RVIZ = REPO / lc.CONFIG_DIR / lc.RVIZ_FILE


def _yaml_params() -> tuple[str, dict]:
    doc = yaml.safe_load(PARAMS.read_text())
    assert isinstance(doc, dict) and len(doc) == 1, "one node section expected"
    (key, section), = doc.items()
    assert set(section) == {"ros__parameters"}
    return key, section["ros__parameters"]


# ---------------------------------------------------------------------------- executable
def test_executable_is_a_console_script_and_a_ros2_run_script():
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    scripts = [ast.literal_eval(e) for e in v.elts]
    entries = {s.split("=")[0].strip(): s.split("=")[1].strip() for s in scripts}
    assert entries.get(lc.EXECUTABLE) == lc.ENTRY_POINT

    script = REPO / "scripts" / lc.EXECUTABLE
    assert script.is_file() and script.stat().st_mode & 0o111
    module, func = lc.ENTRY_POINT.split(":")
    assert f"from {module} import {func}" in script.read_text()
    cmake = re.sub(r"#[^\n]*", "", (REPO / "CMakeLists.txt").read_text())
    pattern = rf"PROGRAMS\s+scripts/{lc.EXECUTABLE}\s+DESTINATION\s+lib/\$\{{PROJECT_NAME\}}"
    assert re.search(pattern, cmake)
    # the entry point exists (read the source: importing it needs rclpy)
    spec = importlib.util.find_spec(module)
    src = ast.parse(Path(spec.origin).read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in src.body)


def test_launch_and_config_files_are_installed():
    setup = (REPO / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert 'glob("config/*.rviz")' in setup
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"foreach\(_dir launch config\)", cmake)
    for path in (LAUNCH, PARAMS, RVIZ):
        assert path.is_file(), path


# --------------------------------------------------------------------------- launch file
def test_launch_file_declares_every_argument_and_uses_launch_config():
    text = LAUNCH.read_text()
    tree = ast.parse(text)
    assert "from xnet_ros import launch_config as lc" in text
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names
    for attr in ("PACKAGE", "EXECUTABLE", "NODE", "LAUNCH_ARGS", "node_parameters",
                 "node_remappings", "rviz_remappings", "RVIZ_FILE", "PARAMS_FILE"):
        assert f"lc.{attr}" in text, attr
    assert set(lc.LAUNCH_ARG_NAMES) >= {"params_file", "model", "namespace", "image_topic",
                                         "camera_info_topic", "use_rviz"}
    for arg in lc.LAUNCH_ARG_NAMES:  # every argument is used
        assert f'arg("{arg}")' in text, arg


def test_remaps_target_the_node_input_topics():
    node_topics = {INPUT_IMAGE, INPUT_COMPRESSED, INPUT_CAMERA_INFO}
    assert {topic for topic, _, _ in lc.REMAPS} == node_topics
    assert all(arg in lc.LAUNCH_ARG_NAMES for _, arg, _ in lc.REMAPS)
    assert lc.node_remappings(INPUT_IMAGE, INPUT_CAMERA_INFO) == []  # defaults: identity
    assert lc.node_remappings("/cam/image_raw", "/cam/camera_info") == [
        ("image", "/cam/image_raw"), ("image/compressed", "/cam/image_raw/compressed"),
        ("camera_info", "/cam/camera_info")]
    assert lc.node_parameters("/p.yaml", "") == ["/p.yaml"]
    assert lc.node_parameters("/p.yaml", "/m") == ["/p.yaml", {"model": "/m"}]


def test_rviz_remaps_follow_the_namespace():
    assert lc.rviz_remappings("") == [] and lc.rviz_remappings("/") == []
    rules = dict(lc.rviz_remappings("/front/"))
    for name in ALL_OUTPUTS:
        assert rules[f"/{name}"] == f"/front/{name}"
    assert lc.output_topics("front")[POINTS] == "/front/points"


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installed (not available as a PyPI wheel); "
                           "run with a sourced ROS 2 distro")
def test_launch_description_loads():
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("xnet_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    declared = [e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == list(lc.LAUNCH_ARG_NAMES)


# ---------------------------------------------------------------------------- params file
def test_params_file_keys_are_exactly_the_declared_parameters():
    key, values = _yaml_params()
    specs = {s.name: s for s in param_specs()}
    assert set(values) == set(specs), (f"missing: {set(specs) - set(values)}, "
                                       f"unknown: {set(values) - set(specs)}")
    for name, value in values.items():
        spec = specs[name]
        # exact YAML type: rcl parses 1 as integer, 1.0 as double (a mismatch fails at start)
        assert type(value) is spec.type, f"{name}: {type(value).__name__} in the file, " \
                                         f"declared {spec.type.__name__}"
        assert spec.check(value) is None
    params, errors = NodeParams.from_mapping(values)
    assert errors == [] and params.validate() == []


def test_params_file_node_key_matches_any_namespace():
    key, _ = _yaml_params()
    assert key.startswith("/") and key.endswith(lc.NODE)
    for fqn in (f"/{lc.NODE}", f"/front/{lc.NODE}", f"/robot/cam/{lc.NODE}"):
        # rcl: `**` matches any number of namespace tokens (including none), `*` one token
        pattern = re.escape(key).replace("/\\*\\*", "(/[^/]+)*").replace("\\*", "[^/]+")
        assert re.fullmatch(pattern, fqn), (key, pattern, fqn)


# ---------------------------------------------------------------------------------- RViz
def _rviz_displays() -> list[dict]:
    doc = yaml.safe_load(RVIZ.read_text())
    manager = doc["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == lc.DEMO_FRAME_ID
    return manager["Displays"]


def test_rviz_shows_the_node_outputs_with_matching_qos():
    displays = _rviz_displays()
    by_topic = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    node_reliability = QOS_RELIABILITY[NodeParams().output_qos]
    rviz_reliability = {"reliable": "Reliable", "best_effort": "Best Effort"}[node_reliability]
    expected = {DEPTH: "rviz_default_plugins/Image", COLOR: "rviz_default_plugins/Image",
                LABELS: "rviz_default_plugins/Image", POINTS: "rviz_default_plugins/PointCloud2"}
    assert set(lc.RVIZ_OUTPUTS) == set(expected)
    for name, cls in expected.items():
        topic = lc.output_topics()[name]
        assert topic in by_topic, f"no display for {topic}"
        d = by_topic[topic]
        assert d["Class"] == cls
        assert d["Topic"]["Reliability Policy"] == rviz_reliability, name
        assert d["Topic"]["Durability Policy"] == "Volatile", name
        assert d["Topic"]["History Policy"] == "Keep Last" and d["Topic"]["Depth"] >= 1
    cloud = by_topic[lc.output_topics()[POINTS]]
    assert cloud["Color Transformer"] == "RGB8" and cloud["Position Transformer"] == "XYZ"
    assert by_topic["/depth"]["Enabled"] and by_topic["/semantic/color"]["Enabled"]
    assert cloud["Enabled"]


def test_demo_uses_the_rviz_fixed_frame():
    src = (REPO / "xnet_ros" / "demo.py").read_text()
    assert "DEMO_FRAME_ID" in src


# ---------------------------------------------------------- with ROS: load into a real node
@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    from xnet_model import build_model

    path = tmp_path_factory.mktemp("launch_model") / "model"
    build_model("atto_x_atto_multitask", data={"input_size": [64, 96]}).save(path)
    return path


@pytest.mark.ros
def test_params_file_and_remaps_apply_to_the_real_node(tmp_path, small_model):
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
    from rclpy.context import Context

    from xnet_ros.node import XnetNode, make_qos

    # the shipped file with two non-default values, loaded by rcl into a namespaced node
    text = PARAMS.read_text().replace("points_stride: 2", "points_stride: 3")
    text = text.replace("frame_id: \"\"", "frame_id: \"cam_opt\"")
    params_file = tmp_path / "xnet.yaml"
    params_file.write_text(text)
    remaps = lc.node_remappings("/cam/image_raw", "/cam/info")
    cli = ["--ros-args", "--params-file", str(params_file), "-p", f"model:={small_model}",
           "-p", "warmup:=false"]
    for src, dst in remaps:
        cli += ["-r", f"{src}:={dst}"]
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = XnetNode(context=ctx, namespace="front", cli_args=cli)
        try:
            assert node.get_fully_qualified_name() == f"/front/{lc.NODE}"
            assert node.params.points_stride == 3 and node.params.frame_id == "cam_opt"
            _, values = _yaml_params()
            for name, value in values.items():
                if name not in ("points_stride", "frame_id", "model", "warmup"):
                    assert getattr(node.params, name) == value, name
            assert node.lifecycle_state == "active", node.diagnostic_status().message
            subs = dict(node.get_subscriber_names_and_types_by_node(lc.NODE, "/front"))
            assert "/cam/image_raw" in subs and "/cam/info" in subs
            pubs = dict(node.get_publisher_names_and_types_by_node(lc.NODE, "/front"))
            for name in ALL_OUTPUTS:
                assert f"/front/{name}" in pubs, name
            # output QoS as RViz expects it
            qos = make_qos(node.params.output_qos)
            assert qos.reliability.name.lower() == QOS_RELIABILITY[node.params.output_qos]
            infos = node.get_publishers_info_by_topic("/front/points")
            assert infos and all(i.qos_profile.reliability == qos.reliability for i in infos)
        finally:
            node.destroy_node()
        # ... and into a node without namespace
        node = XnetNode(context=ctx, cli_args=["--ros-args", "--params-file", str(params_file),
                                               "-p", "autostart:=false"])
        try:
            assert node.params.points_stride == 3 and node.lifecycle_state == "unconfigured"
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    time.sleep(0.1)
