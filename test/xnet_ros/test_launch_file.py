"""launch/xnet.launch.py itself: what it imports, and what it starts.

Where `launch`/`launch_ros` are not installed (the PyPI-wheel dev environment) the file runs
against recording stand-ins of the launch API (launch_stubs.py); where they are (a sourced ROS 2
distro), through `LaunchService` with real processes: missing params file, namespace + remaps +
missing rviz2, exit code 0 on shutdown. The resolved plan itself is tested in test_launch.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xnet_ros import launch_config as lc

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / lc.LAUNCH_FILE
PARAMS = REPO / lc.CONFIG_DIR / lc.PARAMS_FILE
HAVE_LAUNCH_ROS = importlib.util.find_spec("launch_ros") is not None
NO_LAUNCH_ROS = ("launch / launch_ros are not installed (no PyPI wheels); run with a sourced "
                 "ROS 2 distro")
HEAVY = ("numpy", "cv2", "torch", "timm", "xnet_model", "rclpy", "safetensors")


def _call_kwargs(tree: ast.AST, func: str) -> list[dict[str, ast.expr]]:
    """Keyword arguments of every call of `func` (a plain name) in `tree`."""
    return [{k.arg: k.value for k in node.keywords} for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == func]


@pytest.fixture
def share(tmp_path) -> Path:
    """An installed share directory with the default parameter file."""
    share = tmp_path / "share" / lc.PACKAGE
    (share / lc.CONFIG_DIR).mkdir(parents=True)
    (share / lc.CONFIG_DIR / lc.PARAMS_FILE).write_text(PARAMS.read_text())
    return share


# ------------------------------------------------------------------- the launch file itself
ALLOWED_LAUNCH_IMPORTS = {"sys", "launch", "launch.logging", "launch.actions",
                          "launch.substitutions", "launch_ros.actions",
                          "ament_index_python.packages", "xnet_ros"}


def test_launch_file_imports_only_launch_packages_and_launch_config():
    tree = ast.parse(LAUNCH.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
            if node.module == "xnet_ros":
                assert [a.name for a in node.names] == ["launch_config"]
    assert imported <= ALLOWED_LAUNCH_IMPORTS, imported - ALLOWED_LAUNCH_IMPORTS
    # every launch argument is declared from lc.LAUNCH_ARGS; no default is hard-coded here
    (declare,) = _call_kwargs(tree, "DeclareLaunchArgument")
    assert ast.unparse(declare["default_value"]) == "a.default"


@pytest.fixture
def stub_launch(monkeypatch, share):
    """Run launch/xnet.launch.py against the recording stand-ins (see launch_stubs.py)."""
    import launch_stubs

    def run(installed=("xnet_ros", "rviz2"), tty=False, **args):
        env = launch_stubs.Environment(share, installed)
        env.install(monkeypatch.setitem)
        monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
        spec = importlib.util.spec_from_file_location("xnet_launch_under_test", LAUNCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ld = module.generate_launch_description()
        declared = [e for e in ld.entities if isinstance(e, launch_stubs.DeclareLaunchArgument)]
        (opaque,) = [e for e in ld.entities if isinstance(e, launch_stubs.OpaqueFunction)]
        values = {d.name: d.kwargs["default_value"] for d in declared}
        values.update(args)
        actions = opaque.kwargs["function"](launch_stubs.LaunchContext(values))
        return declared, actions, env.logger.records

    return run


def test_launch_file_declares_the_arguments_and_starts_the_plan(stub_launch, share):
    declared, actions, logged = stub_launch(namespace="front", image_topic="/cam/image_raw")
    assert [(d.name, d.kwargs["default_value"], d.kwargs["description"]) for d in declared] == \
        [(a.name, a.default, a.description) for a in lc.LAUNCH_ARGS]
    assert [type(a).__name__ for a in actions] == ["LifecycleNode"]
    node = actions[0].kwargs
    assert (node["package"], node["executable"], node["name"], node["namespace"]) == \
        ("xnet_ros", "xnet_node", "xnet_node", "front")
    assert node["parameters"] == [str(share / "config" / "xnet.yaml")]
    assert ("image", "/cam/image_raw") in node["remappings"]
    assert node["emulate_tty"] is False and logged == []


def test_launch_file_with_rviz(stub_launch, share):
    _, actions, logged = stub_launch(use_rviz="true", namespace="front")
    assert [type(a).__name__ for a in actions] == ["LifecycleNode", "Node"]
    assert actions[1].kwargs["arguments"] == ["-d", str(share / "config" / "xnet.rviz")]
    assert logged == []


def test_launch_file_without_rviz2_warns_and_starts_only_the_node(stub_launch):
    _, actions, logged = stub_launch(installed=("xnet_ros",), use_rviz="true")
    assert [type(a).__name__ for a in actions] == ["LifecycleNode"]
    assert len(logged) == 1 and logged[0][0] == "warning" and "rviz2" in logged[0][1]


def test_launch_file_missing_params_file_fails_before_starting_anything(stub_launch, tmp_path):
    with pytest.raises(lc.LaunchConfigError, match="does not exist"):
        stub_launch(params_file=str(tmp_path / "missing.yaml"))


def test_launch_file_emulates_a_tty_on_a_terminal(stub_launch):
    _, actions, _ = stub_launch(tty=True)
    assert actions[0].kwargs["emulate_tty"] is True


_IMPORT_PROBE = """
import importlib.util, json, sys
sys.path.insert(0, {tests!r})
if importlib.util.find_spec("launch_ros") is None:  # stand-ins where launch is not installed
    import launch_stubs
    launch_stubs.Environment({share!r}).install()
import launch.actions, launch.logging, launch.substitutions, launch_ros.actions
import ament_index_python.packages
before = set(sys.modules)
from xnet_ros import launch_config
spec = importlib.util.spec_from_file_location("xnet_launch", {launch!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.generate_launch_description()
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_launch_file_imports_no_numpy_cv2_or_torch(share):
    """`ros2 launch` (and --show-args) must not pay for torch: what the launch file and
    launch_config add to sys.modules is the standard library and xnet_ros' plain-data modules."""
    code = _IMPORT_PROBE.format(tests=str(Path(__file__).parent), share=str(share),
                                launch=str(LAUNCH))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    added = json.loads(out.splitlines()[-1])
    heavy = [m for m in added if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy
    ours = {m for m in added if m.startswith("xnet_ros")}
    assert ours <= {"xnet_ros", "xnet_ros.launch_config", "xnet_ros.params",
                    "xnet_ros.cameras"}, ours


# ------------------------------------------------- the real launch packages (ROS 2 distro)
def _installed_executable() -> str | None:
    """lib/xnet_ros/xnet_node of an installed (colcon) xnet_ros, or None."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
        prefix = get_package_prefix(lc.PACKAGE)
    except (ImportError, PackageNotFoundError):
        return None
    path = os.path.join(prefix, "lib", lc.PACKAGE, lc.EXECUTABLE)
    return path if os.path.isfile(path) else None


def _rviz2_installed() -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(lc.RVIZ_PACKAGE)
    except PackageNotFoundError:
        return False
    return True


needs_launch = pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason=NO_LAUNCH_ROS)


def _run_launch(args: dict[str, str], until=None, timeout: float = 180.0) -> tuple[int, dict]:
    """Run the launch file with `LaunchService` in this (main) thread. `until(seen)` is polled
    on a helper thread; when it returns True the service is shut down (SIGINT to the node, as
    on Ctrl-C). Returns the service's return code and what the event handlers saw."""
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessStart
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    seen: dict = {"started": [], "exits": []}
    ls = LaunchService()
    ls.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessStart(on_start=lambda event, context: seen["started"]
                                            .append((event.action.name, event.pid)))),
        RegisterEventHandler(OnProcessExit(on_exit=lambda event, context: seen["exits"]
                                           .append((event.action.name, event.returncode)))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH)),
                                 launch_arguments=list(args.items())),
    ]))
    if until is not None:
        def met() -> bool:
            try:
                return bool(until(seen))
            except Exception:  # e.g. the node is not in the graph yet
                return False

        def watch():
            try:
                end = time.monotonic() + timeout
                while time.monotonic() < end and not met():
                    time.sleep(0.2)
                seen["condition_met"] = met()
            finally:
                ls.shutdown()

        threading.Thread(target=watch, daemon=True).start()
    return ls.run(), seen


@needs_launch
def test_launch_service_missing_params_file_starts_nothing(tmp_path):
    code, seen = _run_launch({"params_file": str(tmp_path / "missing.yaml")})
    assert code != 0 and seen["started"] == []


@needs_launch
@pytest.mark.ros
@pytest.mark.slow
def test_launch_service_namespace_remaps_and_missing_rviz2():
    """The real launch: node in /front, inputs remapped, use_rviz without rviz2 starts only
    the node; LaunchService.shutdown() (Ctrl-C) ends it with exit code 0, no orphan."""
    if _installed_executable() is None:
        pytest.skip("xnet_ros is not installed in the ament index (colcon build + source)")
    if _rviz2_installed():
        pytest.skip("rviz2 is installed: the missing-rviz2 case cannot be reached")
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    probe = rclpy.create_node("launch_probe", context=ctx)

    def active(seen) -> bool:
        subs = dict(probe.get_subscriber_names_and_types_by_node(lc.NODE, "/front"))
        return "/cam/image_raw" in subs and "/cam/info" in subs

    try:
        code, seen = _run_launch({"namespace": "front", "image_topic": "/cam/image_raw",
                                  "camera_info_topic": "/cam/info", "use_rviz": "true"},
                                 until=active)
    finally:
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert seen.get("condition_met"), seen
    assert len(seen["started"]) == 1, seen  # the node, no rviz2
    assert [rc for _, rc in seen["exits"]] == [0], seen  # "process has finished cleanly"
    assert code == 0
    (_, pid), = seen["started"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # no orphan left behind
