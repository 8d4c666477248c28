"""What `launch/xnet.launch.py` wires together, as plain data (no launch / rclpy imports).

The launch file only turns these into launch actions, so the tests can check the wiring
(executable, parameter file, remaps, RViz topics) without `launch_ros` installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from .params import INPUT_CAMERA_INFO, INPUT_COMPRESSED, INPUT_IMAGE, NODE_NAME

PACKAGE = "xnet_ros"
EXECUTABLE = "xnet_node"  # console script (setup.py) and lib/xnet_ros/xnet_node (CMake)
ENTRY_POINT = "xnet_ros.node:main"
NODE = NODE_NAME
CONFIG_DIR = "config"
PARAMS_FILE = "xnet.yaml"
RVIZ_FILE = "xnet.rviz"
LAUNCH_FILE = "xnet.launch.py"
# The demo's camera frame (xnet_ros.demo publishes its images in it); RViz's fixed frame.
DEMO_FRAME_ID = "camera_optical_frame"
RVIZ_OUTPUTS = (DEPTH, COLOR, LABELS, POINTS)  # topics shown by config/xnet.rviz


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str  # params_file: the launch file substitutes <share>/config/xnet.yaml
    description: str


LAUNCH_ARGS = (
    LaunchArg("params_file", "", f"Parameter file (default: share/{PACKAGE}/{CONFIG_DIR}/"
                                 f"{PARAMS_FILE})"),
    LaunchArg("model", "", "Model directory; overrides the params file's `model` when "
                           "non-empty (empty = keep it; '' there = the packaged demo model)"),
    LaunchArg("namespace", "", "Namespace of the node and all its topics"),
    LaunchArg("image_topic", INPUT_IMAGE, "Input image topic (remap of `image`; "
                                          "`image/compressed` follows it)"),
    LaunchArg("camera_info_topic", INPUT_CAMERA_INFO, "Input camera_info topic (remap of "
                                                      "`camera_info`)"),
    LaunchArg("use_rviz", "false", f"Start rviz2 with {CONFIG_DIR}/{RVIZ_FILE}"),
    LaunchArg("log_level", "info", "Node log level (debug, info, warn, error)"),
)
LAUNCH_ARG_NAMES = tuple(a.name for a in LAUNCH_ARGS)

# (node topic, launch argument, suffix): node topic := value of the argument + suffix
REMAPS = (
    (INPUT_IMAGE, "image_topic", ""),
    (INPUT_COMPRESSED, "image_topic", "/compressed"),
    (INPUT_CAMERA_INFO, "camera_info_topic", ""),
)


def is_true(value: str) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def node_remappings(image_topic: str, camera_info_topic: str) -> list[tuple[str, str]]:
    """Remap rules for the node; identity rules are left out."""
    values = {"image_topic": image_topic, "camera_info_topic": camera_info_topic}
    rules = []
    for topic, arg, suffix in REMAPS:
        target = values[arg].rstrip("/") + suffix
        if target and target != topic:
            rules.append((topic, target))
    return rules


def node_parameters(params_file: str, model: str) -> list:
    """The node's `parameters=`: the YAML file, then `model` only if given (it wins)."""
    params: list = [params_file]
    if model:
        params.append({"model": model})
    return params


def _absolute(namespace: str, topic: str) -> str:
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


def rviz_remappings(namespace: str) -> list[tuple[str, str]]:
    """RViz's config uses absolute topics (/depth, ...); move them into the node's namespace."""
    if not namespace.strip("/"):
        return []
    topics = [*ALL_OUTPUTS, f"{DEPTH}/compressed"]
    return [(f"/{t}", _absolute(namespace, t)) for t in topics]


def output_topics(namespace: str = "") -> dict[str, str]:
    """Absolute output topic names for a namespace."""
    return {name: _absolute(namespace, name) for name in ALL_OUTPUTS}


__all__ = [
    "CONFIG_DIR", "DEMO_FRAME_ID", "DEPTH_INFO", "ENTRY_POINT", "EXECUTABLE", "LAUNCH_ARGS",
    "LAUNCH_ARG_NAMES", "LAUNCH_FILE", "NODE", "PACKAGE", "PARAMS_FILE", "REMAPS", "RVIZ_FILE",
    "RVIZ_OUTPUTS", "LaunchArg", "is_true", "node_parameters", "node_remappings",
    "output_topics", "rviz_remappings",
]
