"""Launch wiring: executable, parameter file, remaps and RViz config agree with the node.

What the launch file starts is `xnet_ros.launch_config.plan` (plain data), tested here directly;
the launch file itself (its imports, LaunchService runs) is tested in test_launch_file.py. The
params-file and remap test marked `ros` loads them into a real node in-process.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import re
import time
from pathlib import Path

import pytest
import yaml

from xnet_ros import launch_config as lc
from xnet_ros.params import (
    ALL_OUTPUTS,
    COLOR,
    DEPTH,
    INPUT_CAMERA_INFO,
    INPUT_COMPRESSED,
    INPUT_IMAGE,
    LABELS,
    POINTS,
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
    # setup.py and CMakeLists.txt both read the entry points from resource/entry_points.txt
    setup_call = next(n for n in ast.walk(ast.parse((REPO / "setup.py").read_text()))
                      if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    value = next(k.value for k in setup_call.keywords if k.arg == "entry_points")
    assert "entry_points.txt" in {n.value for n in ast.walk(value) if isinstance(n, ast.Constant)}
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.read(REPO / "resource" / "entry_points.txt")
    scripts = [f"{k} = {v}" for k, v in parser["console_scripts"].items()]
    entries = {s.split("=")[0].strip(): s.split("=")[1].strip() for s in scripts}
    assert entries.get(lc.EXECUTABLE) == lc.ENTRY_POINT == "xnet_ros.main:main"

    script = REPO / "scripts" / lc.EXECUTABLE
    assert script.is_file() and script.stat().st_mode & 0o111
    module, func = lc.ENTRY_POINT.split(":")
    imports = [(n.module, a.name) for n in ast.walk(ast.parse(script.read_text()))
               if isinstance(n, ast.ImportFrom) for a in n.names]
    assert imports == [(module, func)]
    cmake = re.sub(r"#[^\n]*", "", (REPO / "CMakeLists.txt").read_text())
    pattern = rf"PROGRAMS\s+scripts/{lc.EXECUTABLE}\s+DESTINATION\s+lib/\$\{{PROJECT_NAME\}}"
    assert re.search(pattern, cmake)
    # the entry point exists (read the source: importing it is cheap, but keep this ROS-free)
    spec = importlib.util.find_spec(module)
    src = ast.parse(Path(spec.origin).read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in src.body)


def test_launch_and_config_files_are_installed():
    tree = ast.parse((REPO / "setup.py").read_text())
    globs = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "glob"}
    assert {"launch/*.launch.py", "config/*.yaml", "config/*.rviz"} <= globs
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"foreach\(_dir launch config\)", cmake)
    for path in (LAUNCH, PARAMS, RVIZ):
        assert path.is_file(), path


# ------------------------------------------------------------------ launch_config.plan
@pytest.fixture
def share(tmp_path) -> Path:
    """An installed share directory with the default parameter file."""
    share = tmp_path / "share" / lc.PACKAGE
    (share / lc.CONFIG_DIR).mkdir(parents=True)
    (share / lc.CONFIG_DIR / lc.PARAMS_FILE).write_text(PARAMS.read_text())
    return share


def _plan(share: Path, installed=("xnet_ros", "rviz2"), tty=False, **args):
    values = {a.name: a.default for a in lc.LAUNCH_ARGS}
    values.update(args)
    return lc.plan(values, str(share), package_installed=lambda p: p in installed,
                   stdout_is_tty=tty)


def test_plan_defaults(share):
    plan = _plan(share)
    assert plan.node == {
        "package": "xnet_ros", "executable": "xnet_node", "name": "xnet_node",
        "namespace": "", "parameters": [str(share / "config" / "xnet.yaml")], "remappings": [],
        "arguments": ["--ros-args", "--log-level", "info"], "output": "screen",
        "emulate_tty": False, "additional_env": {"PYTHONUNBUFFERED": "1"}}
    assert plan.rviz is None and plan.warnings == ()


def test_plan_namespace_remaps_model_and_rviz(share, tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("{}")
    plan = _plan(share, params_file=str(own), model="/models/m", namespace="/front/",
                 image_topic="/cam/image_raw/", camera_info_topic="/cam/info",
                 use_rviz="True", log_level="debug")
    node = plan.node
    assert node["namespace"] == "front"
    assert node["parameters"] == [str(own), {"model": "/models/m"}]
    assert node["remappings"] == [("image", "/cam/image_raw"),
                                  ("image/compressed", "/cam/image_raw/compressed"),
                                  ("camera_info", "/cam/info")]
    assert node["arguments"] == ["--ros-args", "--log-level", "debug"]
    rviz = plan.rviz
    assert rviz["package"] == rviz["executable"] == "rviz2"
    assert rviz["arguments"] == ["-d", str(share / "config" / "xnet.rviz")]
    assert dict(rviz["remappings"])["/points"] == "/front/points"
    assert plan.warnings == ()


def test_plan_relative_params_file_is_made_absolute(share, tmp_path, monkeypatch):
    (tmp_path / "rel.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert _plan(share, params_file="rel.yaml").node["parameters"] == [str(tmp_path / "rel.yaml")]


def test_plan_missing_params_file_is_an_error_naming_it(share, tmp_path):
    missing = tmp_path / "nope" / "xnet.yaml"
    with pytest.raises(lc.LaunchConfigError, match=rf"params_file '{re.escape(str(missing))}' "
                                                   "does not exist"):
        _plan(share, params_file=str(missing))
    (share / "config" / "xnet.yaml").unlink()  # a broken install: the default is missing
    with pytest.raises(lc.LaunchConfigError, match=r"default parameter file .*xnet\.yaml"):
        _plan(share)


def test_plan_without_rviz2_warns_once_and_runs_the_node_alone(share):
    plan = _plan(share, installed=("xnet_ros",), use_rviz="true")
    assert plan.rviz is None and plan.node["executable"] == "xnet_node"
    assert len(plan.warnings) == 1
    assert "rviz2 is not installed" in plan.warnings[0] and "without RViz" in plan.warnings[0]


@pytest.mark.parametrize("tty", [False, True])
def test_plan_emulates_a_tty_only_on_a_terminal(share, tty):
    """Coloured log lines (ANSI codes) only when `ros2 launch` writes to a terminal."""
    assert _plan(share, tty=tty).node["emulate_tty"] is tty


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


def test_plan_with_cameras_one_node_remaps_per_camera(share):
    plan = _plan(share, cameras="front, left", image_topic="/{camera}/image_raw",
                 camera_info_topic="/{camera}/camera_info", namespace="robot", use_rviz="true")
    node = plan.node
    assert node["parameters"] == [str(share / "config" / "xnet.yaml"),
                                  {"cameras": ["front", "left"]}]
    assert node["remappings"] == [
        ("front/image", "/front/image_raw"), ("front/image/compressed",
                                              "/front/image_raw/compressed"),
        ("front/camera_info", "/front/camera_info"),
        ("left/image", "/left/image_raw"), ("left/image/compressed", "/left/image_raw/compressed"),
        ("left/camera_info", "/left/camera_info")]
    # RViz shows the first camera
    assert dict(plan.rviz["remappings"])["/depth"] == "/robot/front/depth"
    # defaults: the node's own <camera>/image topics, no rules; relative names stay inside
    assert _plan(share, cameras="front,left").node["remappings"] == []
    assert lc.node_remappings("image_raw", "camera_info", ["front"]) == [
        ("front/image", "front/image_raw"),
        ("front/image/compressed", "front/image_raw/compressed")]
    # one camera may take an absolute topic; several would all read the same one
    assert lc.node_remappings("/cam/image_raw", "/cam/info", ["front"])[0] == (
        "front/image", "/cam/image_raw")
    with pytest.raises(lc.LaunchConfigError, match=r"image_topic:=/cam/image_raw would give "
                                                   r"every camera the same topic; use \{camera\}"):
        _plan(share, cameras="front,left", image_topic="/cam/image_raw")
    with pytest.raises(lc.LaunchConfigError, match=r"cameras:=front,a b: 'a b' is not a relative"):
        _plan(share, cameras="front,a b")


def test_rviz_remaps_follow_the_namespace():
    assert lc.rviz_remappings("") == [] and lc.rviz_remappings("/") == []
    rules = dict(lc.rviz_remappings("/front/"))
    for name in ALL_OUTPUTS:
        assert rules[f"/{name}"] == f"/front/{name}"
    assert lc.output_topics("front")[POINTS] == "/front/points"


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
    tree = ast.parse((REPO / "xnet_ros" / "demo.py").read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert ("launch_config", "DEMO_FRAME_ID") in imported
    used = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "DEMO_FRAME_ID"]
    assert used, "the demo's camera must publish in RViz's fixed frame"


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
            assert node.params.autostart and node.autostart()  # as xnet_ros.main does
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
        # several cameras: `cameras` from the file, remaps per camera
        two = tmp_path / "two.yaml"
        two.write_text(text.replace("cameras: []", "cameras: [front, left]"))
        cli = ["--ros-args", "--params-file", str(two), "-p", f"model:={small_model}",
               "-p", "warmup:=false"]
        for src, dst in lc.node_remappings("/{camera}/image_raw", "info", ["front", "left"]):
            cli += ["-r", f"{src}:={dst}"]
        node = XnetNode(context=ctx, namespace="robot", cli_args=cli)
        try:
            assert node.params.cameras == ["front", "left"] and node.autostart()
            subs = dict(node.get_subscriber_names_and_types_by_node(lc.NODE, "/robot"))
            assert {"/front/image_raw", "/left/image_raw", "/robot/front/info",
                    "/robot/left/info"} <= set(subs), subs
            pubs = dict(node.get_publisher_names_and_types_by_node(lc.NODE, "/robot"))
            assert all(f"/robot/{c}/{name}" in pubs for c in ("front", "left")
                       for name in ALL_OUTPUTS)
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
