"""xnet_ros.ros_check: the cause of a failed ROS import, named; the `xnet doctor` ROS rows.

Simulated failures use fake package folders in tmp_path; the real ones run a subprocess with the
environment broken the way users break it (no LD_LIBRARY_PATH, install/ off PYTHONPATH, no
site-packages, another CPython).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xnet_ros import ros_check
from xnet_ros.ros_check import doctor_checks, explain_import_error

REPO = Path(__file__).resolve().parents[2]
OURS = f"{sys.version_info[0]}.{sys.version_info[1]}"
# a CPython that is not this one, for the fake extensions
OTHER_TAG, OTHER = ("cpython-312", "3.12") if OURS != "3.12" else ("cpython-311", "3.11")


def fake_package(root: Path, name: str, so_names: list[str]) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for so in so_names:
        (pkg / so).write_bytes(b"")
    return pkg


def test_wrong_abi_names_both_pythons_and_the_fix(tmp_path, monkeypatch):
    # what a 3.12 interpreter sees with the Kilted wheels (cp311) on its path, mirrored
    pkg = fake_package(tmp_path, "xnet_fake_rclpy",
                       [f"_rclpy_pybind11.{OTHER_TAG}-x86_64-linux-gnu.so", "librcl.so"])
    monkeypatch.syspath_prepend(str(tmp_path))
    exc = ModuleNotFoundError("No module named 'xnet_fake_rclpy._rclpy_pybind11'",
                              name="xnet_fake_rclpy._rclpy_pybind11")
    msg = explain_import_error(exc, env={})
    first = msg.splitlines()[0]
    assert first == (f"ROS 2 import failed: xnet_fake_rclpy in {pkg} is built for CPython "
                     f"{OTHER} ({OTHER_TAG}), but this is CPython {OURS} ({sys.executable}).")
    assert "the ROS 2 Kilted PyPI wheels need CPython 3.11" in msg and "make setup" in msg
    assert msg.splitlines()[-1].startswith("  original error: ModuleNotFoundError: No module")


def test_wrong_abi_of_a_distro_points_at_its_python(tmp_path, monkeypatch):
    site = tmp_path / "opt" / "ros" / "humble" / "lib" / "python3.10" / "site-packages"
    fake_package(site, "xnet_fake_msgs", ["xnet_fake_msgs_s__rosidl_typesupport_c"
                                          ".cpython-310-x86_64-linux-gnu.so"])
    monkeypatch.syspath_prepend(str(site))
    exc = ImportError("cannot import name 'Image'", name="xnet_fake_msgs.msg")
    msg = explain_import_error(exc, env={})
    if OURS == "3.10":
        pytest.skip("this interpreter is 3.10: no mismatch to show")
    assert "is built for CPython 3.10 (cpython-310)" in msg
    assert "run it with the Python ROS 2 humble is built for (python3.10" in msg


def test_missing_shared_library_means_an_unsourced_environment():
    exc = ImportError("librcl_action.so: cannot open shared object file: No such file or "
                      "directory", name="rclpy._rclpy_pybind11")
    msg = explain_import_error(exc, env={})
    assert "the ROS 2 library librcl_action.so is not found (LD_LIBRARY_PATH is unset)" in msg
    assert "`source tools/ros_env.sh`" in msg and "/opt/ros/<distro>/setup.bash" in msg


def test_missing_interface_library_points_at_install():
    exc = ImportError("libxnet_ros__rosidl_generator_c.so: cannot open shared object file: "
                      "No such file or directory", name="xnet_ros.msg._inference_stats")
    msg = explain_import_error(exc, env={"LD_LIBRARY_PATH": "/a:/b"})
    assert "library libxnet_ros__rosidl_generator_c.so is not on LD_LIBRARY_PATH" in msg
    assert "source install/setup.bash" in msg


def msg_error() -> ModuleNotFoundError:
    return ModuleNotFoundError("No module named 'xnet_ros.msg'", name="xnet_ros.msg")


def test_messages_never_built(tmp_path):
    msg = explain_import_error(msg_error(), repo=tmp_path)
    assert "the generated messages (xnet_ros.msg) are not built" in msg
    assert "`make msgs`" in msg and "colcon build" in msg


def test_messages_built_for_another_python(tmp_path):
    other = "3.9" if OURS != "3.9" else "3.10"
    built = tmp_path / f"install/lib/python{other}/site-packages/xnet_ros/msg"
    built.mkdir(parents=True)
    (built / "__init__.py").write_text("")
    msg = explain_import_error(msg_error(), repo=tmp_path)
    assert f"xnet_ros.msg is built for Python {other} ({built})" in msg
    assert f"this is CPython {OURS}" in msg and "make msgs" in msg


def test_messages_built_but_not_on_pythonpath(tmp_path):
    built = tmp_path / f"install/lib/python{OURS}/site-packages/xnet_ros/msg"
    built.mkdir(parents=True)
    (built / "__init__.py").write_text("")
    msg = explain_import_error(msg_error(), repo=tmp_path)
    assert f"xnet_ros.msg is built ({built}) but its folder is not on PYTHONPATH" in msg
    assert "`source tools/ros_env.sh`" in msg


def test_long_original_error_is_shortened():
    text = "\n".join(f"line {i}" for i in range(25))
    msg = explain_import_error(ImportError(text, name="xnet_fake_nothing"))
    original = msg.split("original error: ImportError: ")[1].split("\n    ")
    assert original == ["line 0", "line 1", "line 2", "...", "line 22", "line 23", "line 24"]


# --- real failures, in a subprocess ---

EXPLAIN = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from xnet_ros.ros_check import explain_import_error
try:
    exec(sys.argv[2])
except ImportError as e:
    print(explain_import_error(e, env={}, ros_root=Path(sys.argv[3]), repo=Path(sys.argv[4])))
else:
    print("imported")
"""


def explain_in(python: str, statement: str, tmp_path: Path, *flags: str, env=None,
               repo: Path = REPO) -> str:
    out = subprocess.run(
        [python, *flags, "-c", EXPLAIN, str(REPO), statement, str(tmp_path / "opt_ros"),
         str(repo)],
        capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_real_not_installed_with_an_unsourced_distro(tmp_path):
    """-S: no site-packages, so no rclpy; a fake /opt/ros/humble (Python 3.10) is installed."""
    humble = tmp_path / "opt_ros" / "humble"
    (humble / "lib" / "python3.10" / "site-packages").mkdir(parents=True)
    (humble / "setup.bash").write_text("")
    msg = explain_in(sys.executable, "import rclpy", tmp_path, "-S", repo=tmp_path)
    assert msg.startswith(f"ROS 2 import failed: rclpy is not installed for this interpreter, "
                          f"CPython {OURS}")
    assert f"ROS 2 humble is installed in {humble} but not sourced: `source {humble}/setup.bash`" \
        in msg
    if OURS != "3.10":
        assert f"it needs python3.10, not this {OURS}" in msg


def test_real_not_installed_without_any_ros(tmp_path):
    msg = explain_in(sys.executable, "import rclpy", tmp_path, "-S", repo=tmp_path)
    assert "make setup && make msgs" in msg and "make setup-model" in msg


def ros_site() -> Path:
    pkg = ros_check.package_dir("rclpy")
    if pkg is None:
        pytest.skip("rclpy (ROS 2) is not installed")
    return pkg.parent


def test_real_missing_library_without_ld_library_path(tmp_path):
    site = ros_site()
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"  # the wheels' .pth would set LD_LIBRARY_PATH
    env["PYTHONPATH"] = str(site)
    msg = explain_in(sys.executable, "import rclpy.impl.implementation_singleton", tmp_path,
                     env=env)
    if msg.strip() == "imported":
        pytest.skip("the ROS libraries load without LD_LIBRARY_PATH here (system ROS)")
    assert "is not found (LD_LIBRARY_PATH is unset): the ROS environment is not sourced" in msg


def other_cpython() -> str | None:
    for v in ("3.12", "3.13", "3.10"):
        exe = shutil.which(f"python{v}")
        if exe and v != OURS:
            probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return exe
    return None


def test_real_wrong_abi_with_another_cpython(tmp_path):
    """The issue's failure: another CPython importing the cp311 rclpy of .venv."""
    site = ros_site()
    exe = other_cpython()
    if exe is None:
        pytest.skip("no CPython other than this one on PATH (python3.10/3.12/3.13)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    msg = explain_in(exe, "import rclpy.impl.implementation_singleton", tmp_path, env=env)
    tag = next(iter(ros_check.extension_tags(site / "rclpy")))
    assert f"rclpy in {site / 'rclpy'} is built for CPython {ros_check.python_version(tag)} " \
        f"({tag}), but this is CPython" in msg


# --- xnet doctor ---

def test_doctor_entry_point_is_registered():
    # every xnet_ros distribution on the path: under tools/ros_env.sh the interfaces' egg-info in
    # install/ (no entry points) comes first and hides the editable install's from
    # importlib.metadata.entry_points()
    eps = [ep for dist in importlib.metadata.distributions()
           if (dist.metadata["Name"] or "").lower().replace("-", "_") == "xnet_ros"
           for ep in dist.entry_points if ep.group == "xnet.doctor"]
    # the egg-info of `make msgs` (CMakeLists.txt installs resource/entry_points.txt) may
    # declare the same entry point again: one target, whatever the number of declarations
    (ep,) = {e.value: e for e in eps if e.name == "ros"}.values()
    assert ep.value == "xnet_ros.ros_check:doctor_checks"
    assert ep.load() is doctor_checks


@pytest.mark.ros
def test_doctor_rows_all_ok_in_the_project_environment():
    ros_site()
    if not os.environ.get("AMENT_PREFIX_PATH"):
        pytest.skip("the ROS environment is not sourced (source tools/ros_env.sh)")
    rows = doctor_checks()
    assert [r["name"] for r in rows] == ["Python ABI", "ROS environment", "rclpy",
                                         "ROS messages", "xnet_ros messages",
                                         "post-processing kernels"]
    assert all(r["ok"] for r in rows), rows
    assert all(r["reason"] == "" for r in rows)
    tag = sys.implementation.cache_tag
    assert rows[0]["detail"].endswith(f"is {tag}") and f" is {tag}; rclpy" in rows[0]["detail"]


def test_doctor_without_rclpy(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from xnet_ros.ros_check import doctor_checks; print(doctor_checks())")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = eval(out.stdout)  # a list of plain dicts
    assert len(rows) == 1 and rows[0]["name"] == "ROS 2 (rclpy)" and rows[0]["ok"] is False
    assert rows[0]["detail"].startswith(f"not installed for CPython {OURS}")
    assert rows[0]["reason"].startswith("only the node needs it")
