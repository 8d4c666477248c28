"""xnet_model never imports ROS: importing every module leaves rclpy & co. unloaded."""

import subprocess
import sys


def test_xnet_model_imports_no_ros():
    code = (
        "import pkgutil, sys, importlib, xnet_model\n"
        "mods = [m.name for m in pkgutil.walk_packages(xnet_model.__path__, 'xnet_model.')]\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in "
        "('rclpy', 'rosbags', 'sensor_msgs', 'std_msgs', 'rosidl_runtime_py', 'xnet_ros'))\n"
        "print(len(mods)); assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) >= 8  # really walked the package
