"""What `launch/xnet.launch.py` starts, as plain data: standard library only.

`plan()` turns the launch arguments into the keyword arguments of the launch actions (the node,
RViz or not, warnings); the launch file only wraps them into `launch_ros` actions. So the tests
check the wiring without `launch_ros`, and `ros2 launch ... --show-args` needs neither numpy,
OpenCV nor torch (this module and `params` import nothing else; a test checks it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .cameras import camera_name_problems, camera_topic
from .params import (
    ALL_OUTPUTS,
    COLOR,
    DEPTH,
    INPUT_CAMERA_INFO,
    INPUT_COMPRESSED,
    INPUT_IMAGE,
    LABELS,
    NODE_NAME,
    POINTS,
)

PACKAGE = "xnet_ros"
EXECUTABLE = "xnet_node"  # console script (setup.py) and lib/xnet_ros/xnet_node (CMake)
ENTRY_POINT = "xnet_ros.main:main"
NODE = NODE_NAME
CONFIG_DIR = "config"
PARAMS_FILE = "xnet.yaml"
RVIZ_FILE = "xnet.rviz"
LAUNCH_FILE = "xnet.launch.py"
RVIZ_PACKAGE = "rviz2"
# The demo's camera frame (xnet_ros.demo publishes its images in it); RViz's fixed frame.
DEMO_FRAME_ID = "camera_optical_frame"
RVIZ_OUTPUTS = (DEPTH, COLOR, LABELS, POINTS)  # topics shown by config/xnet.rviz


class LaunchConfigError(ValueError):
    """A launch argument is unusable; raised before any process is started."""


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str


LAUNCH_ARGS = (
    LaunchArg("params_file", "", f"Parameter file (empty = share/{PACKAGE}/{CONFIG_DIR}/"
                                 f"{PARAMS_FILE}); a missing file is an error"),
    LaunchArg("model", "", "Model directory; overrides the params file's `model` when "
                           "non-empty (empty = keep it; '' there = the packaged demo model)"),
    LaunchArg("namespace", "", "Namespace of the node and all its topics"),
    LaunchArg("cameras", "", "Comma-separated camera names (e.g. front,left): one node, one "
                             "model for all, topics <camera>/image, <camera>/depth, ...; empty "
                             "= one camera, topics without prefix"),
    LaunchArg("image_topic", INPUT_IMAGE, "Input image topic (remap of `image`; "
                                          "`image/compressed` follows it). With cameras: "
                                          "per camera, {camera} is replaced by its name and "
                                          "a relative name is taken inside <camera>/"),
    LaunchArg("camera_info_topic", INPUT_CAMERA_INFO, "Input camera_info topic (remap of "
                                                      "`camera_info`; with cameras as "
                                                      "image_topic)"),
    LaunchArg("use_rviz", "false", f"Start rviz2 with {CONFIG_DIR}/{RVIZ_FILE} (skipped with a "
                                   "warning when rviz2 is not installed)"),
    LaunchArg("log_level", "info", "Node log level (debug, info, warn, error)"),
)
LAUNCH_ARG_NAMES = tuple(a.name for a in LAUNCH_ARGS)

# (node topic, launch argument, suffix): node topic := value of the argument + suffix
REMAPS = (
    (INPUT_IMAGE, "image_topic", ""),
    (INPUT_COMPRESSED, "image_topic", "/compressed"),
    (INPUT_CAMERA_INFO, "camera_info_topic", ""),
)


@dataclass(frozen=True)
class LaunchPlan:
    """What the launch file starts: keyword arguments of `launch_ros.actions.LifecycleNode`
    (`node`) and of `launch_ros.actions.Node` for RViz (`rviz`, None = no RViz), and warnings
    to log first."""

    node: dict[str, Any]
    rviz: dict[str, Any] | None
    warnings: tuple[str, ...] = ()


def is_true(value: str) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def parse_cameras(value: str) -> list[str]:
    """The `cameras` launch argument ('front,left') as names; LaunchConfigError if invalid."""
    names = [n.strip().strip("/") for n in str(value).split(",") if n.strip().strip("/")]
    problems = camera_name_problems(names)
    if problems:
        raise LaunchConfigError(f"cameras:={value}: {'; '.join(problems)}")
    return names


def _camera_target(value: str, camera: str, arg: str, many: bool) -> str:
    """Where `value` (image_topic or camera_info_topic) points for one camera."""
    if "{camera}" in value:
        return value.replace("{camera}", camera)
    if not value.startswith("/"):
        return camera_topic(camera, value)
    if many:
        raise LaunchConfigError(f"{arg}:={value} would give every camera the same topic; "
                                f"use {{camera}} in it (e.g. {arg}:=/{{camera}}/image_raw) or a "
                                "relative name")
    return value


def node_remappings(image_topic: str, camera_info_topic: str,
                    cameras: list[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Remap rules for the node (per camera, with `cameras`); identity rules are left out."""
    values = {"image_topic": image_topic, "camera_info_topic": camera_info_topic}
    rules = []
    for camera in cameras or [""]:
        for topic, arg, suffix in REMAPS:
            value = values[arg].rstrip("/")
            if camera:
                value = _camera_target(value, camera, arg, len(cameras) > 1)
            target = value + suffix if value else ""
            if target and target != camera_topic(camera, topic):
                rules.append((camera_topic(camera, topic), target))
    return rules


def node_parameters(params_file: str, model: str, cameras: list[str] | None = None) -> list:
    """The node's `parameters=`: the YAML file, then `model` and `cameras` only if given (they
    win)."""
    params: list = [params_file]
    if model:
        params.append({"model": model})
    if cameras:
        params.append({"cameras": list(cameras)})
    return params


def _absolute(namespace: str, topic: str) -> str:
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


def rviz_remappings(namespace: str, camera: str = "") -> list[tuple[str, str]]:
    """RViz's config uses absolute topics (/depth, ...); move them into the node's namespace
    (and to the first camera's outputs with `cameras`)."""
    if not namespace.strip("/") and not camera:
        return []
    topics = [*ALL_OUTPUTS, f"{DEPTH}/compressed"]
    return [(f"/{t}", _absolute(namespace, camera_topic(camera, t))) for t in topics]


def output_topics(namespace: str = "") -> dict[str, str]:
    """Absolute output topic names for a namespace."""
    return {name: _absolute(namespace, name) for name in ALL_OUTPUTS}


def resolve_params_file(value: str, share_dir: str) -> str:
    """The parameter file to use (absolute); LaunchConfigError naming the path if missing."""
    path = value or os.path.join(share_dir, CONFIG_DIR, PARAMS_FILE)
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        what = "params_file" if value else "the installed default parameter file"
        raise LaunchConfigError(f"{what} {path!r} does not exist (launch argument "
                                f"params_file:=<file.yaml>)")
    return path


def plan(args: Mapping[str, str], share_dir: str, *,
         package_installed: Callable[[str], bool], stdout_is_tty: bool) -> LaunchPlan:
    """Resolve the launch arguments (every name of LAUNCH_ARGS, as strings).

    `share_dir` is this package's share directory; `package_installed(name)` says whether a
    ROS package is in the ament index (RViz is only started when rviz2 is); `stdout_is_tty`:
    emulate a terminal for the node (coloured log lines) only when `ros2 launch` itself
    writes to one, so piped or captured output has no ANSI escape codes.
    """
    values = {a.name: str(args.get(a.name, a.default)) for a in LAUNCH_ARGS}
    params_file = resolve_params_file(values["params_file"], share_dir)
    cameras = parse_cameras(values["cameras"])
    namespace = values["namespace"].strip("/")
    node = {
        "package": PACKAGE,
        "executable": EXECUTABLE,
        "name": NODE,
        "namespace": namespace,
        "parameters": node_parameters(params_file, values["model"], cameras),
        "remappings": node_remappings(values["image_topic"], values["camera_info_topic"],
                                      cameras),
        "arguments": ["--ros-args", "--log-level", values["log_level"]],
        "output": "screen",
        "emulate_tty": bool(stdout_is_tty),
        "additional_env": {"PYTHONUNBUFFERED": "1"},  # log lines appear as they happen
    }
    rviz, warnings = None, []
    if is_true(values["use_rviz"]):
        if package_installed(RVIZ_PACKAGE):
            rviz = {
                "package": RVIZ_PACKAGE,
                "executable": "rviz2",
                "name": "rviz2",
                "arguments": ["-d", os.path.join(share_dir, CONFIG_DIR, RVIZ_FILE)],
                "remappings": rviz_remappings(namespace, cameras[0] if cameras else ""),
                "output": "screen",
            }
        else:
            warnings.append(f"use_rviz:=true but {RVIZ_PACKAGE} is not installed (apt install "
                            f"ros-$ROS_DISTRO-rviz2): starting {NODE} without RViz")
    return LaunchPlan(node=node, rviz=rviz, warnings=tuple(warnings))


__all__ = [
    "CONFIG_DIR", "DEMO_FRAME_ID", "ENTRY_POINT", "EXECUTABLE", "LAUNCH_ARGS", "LAUNCH_ARG_NAMES",
    "LAUNCH_FILE", "NODE", "PACKAGE", "PARAMS_FILE", "REMAPS", "RVIZ_FILE", "RVIZ_OUTPUTS",
    "RVIZ_PACKAGE", "LaunchArg", "LaunchConfigError", "LaunchPlan", "is_true",
    "node_parameters", "node_remappings", "output_topics", "parse_cameras", "plan",
    "resolve_params_file", "rviz_remappings",
]
