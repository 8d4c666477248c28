"""package.xml declares what `rosdep install --from-paths src` must install for the node and
the launch file to import: every third-party module the packages import maps to a declared
key, or is optional (backends, bag tools, training) and listed below with the reason."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# import name -> rosdep key. The pip/system keys are those of ros/rosdistro
# rosdep/python.yaml (checked at commit 8468e88): python3-torch, python3-timm-pip,
# python3-numpy, python3-opencv, python3-yaml. safetensors has no key: timm requires it.
RUNTIME_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "torch": "python3-torch",
    "timm": "python3-timm-pip",
    "safetensors": "python3-timm-pip",
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
}
OPTIONAL = {  # import-guarded; pip extras of setup.py, documented in README / docs/runtime.md
    "onnx": "onnxruntime backend / ONNX export (extra `onnx`)",
    "onnxruntime": "onnxruntime backend (extra `onnx`)",
    "torch_tensorrt": "TensorRT backend (JetPack / NVIDIA wheels; no rosdep key)",
    "modelopt": "TensorRT int8 quantisation (extra `tensorrt`)",
    "rosbags": "offline bag tools (extra `bag`)",
    "mcap": "offline bag tools (extra `bag`)",
    "matplotlib": "bag / experiment reports (extra `bag`)",
    "tqdm": "progress bars of training and the bag tools (extra `bag`)",
    "PIL": "image reading in benchmarks/gpu_check.py where cv2 is missing (cv2 is preferred)",
}
OWN = {"xnet_model", "xnet_ros"}


def _root() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def _deps(root: ET.Element, *tags: str) -> set[str]:
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> one file importing it, over xnet_model, xnet_ros and launch/."""
    found: dict[str, str] = {}
    for pkg in ("xnet_model", "xnet_ros", "launch"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_format_3():
    root = _root()
    assert root.tag == "package" and root.get("format") == "3"


def test_every_runtime_import_has_a_declared_rosdep_key():
    declared = _deps(_root(), "depend", "exec_depend")
    imports = _third_party_imports()
    unknown = {m: f for m, f in imports.items() if m not in RUNTIME_KEYS and m not in OPTIONAL}
    assert unknown == {}, f"new third-party imports: add a rosdep key or list as optional: " \
                          f"{unknown}"
    missing = {m: RUNTIME_KEYS[m] for m in imports if m in RUNTIME_KEYS
               and RUNTIME_KEYS[m] not in declared}
    assert missing == {}, f"package.xml lacks exec_depend for {missing}"
    # the network and the launch file explicitly (issue 9: rosdep left a node that can't import)
    assert {"python3-torch", "python3-timm-pip", "python3-numpy", "python3-opencv",
            "python3-yaml", "launch", "launch_ros", "ament_index_python"} <= declared


def test_rviz2_is_optional_and_pytest_is_a_test_dependency():
    root = _root()
    assert "rviz2" not in _deps(root, "depend", "exec_depend")  # launch warns without it
    assert "python3-pytest" in _deps(root, "test_depend")
