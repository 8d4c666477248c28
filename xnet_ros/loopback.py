"""Loopback-only DDS settings for tests, the demo and benchmarks: the one definition.

With no settings, Fast DDS sends discovery traffic out of every network interface. Every ROS
process this project starts for itself stays on the machine instead:

    ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT
    FASTDDS_DEFAULT_PROFILES_FILE=<config/fastdds_localhost.xml>  (127.0.0.1 + shared memory)
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp
    ROS_DOMAIN_ID=<random 1..100>  unless set
    ROS_LOG_DIR=<a new temporary directory>  unless set

The first three are forced. `tools/ros_env.sh` runs this file (`python3 xnet_ros/loopback.py`
prints `export` lines), `test/conftest.py` and `python -m xnet_ros.demo` call
`apply_loopback_dds()` before rclpy starts. Standard library only, runnable as a plain file. A
robot deployment keeps the user's normal ROS networking: the node itself never calls this.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

PROFILE_NAME = "fastdds_localhost.xml"


def profile_path(environ: MutableMapping[str, str] = os.environ) -> Path:
    """config/fastdds_localhost.xml of the source tree or of an installed xnet_ros."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME]
    prefixes = [p for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in [*prefixes, sys.prefix]:
        candidates.append(Path(prefix) / "share" / "xnet_ros" / "config" / PROFILE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{PROFILE_NAME} not found (looked in: "
                            f"{', '.join(str(p.parent) for p in candidates)})")


def loopback_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """The variables that keep DDS on this machine, given the current environment."""
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path(environ)),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "ROS_DOMAIN_ID": environ.get("ROS_DOMAIN_ID") or str(random.randint(1, 100)),
        "ROS_LOG_DIR": environ.get("ROS_LOG_DIR") or tempfile.mkdtemp(prefix="xnet_roslog_"),
    }


def apply_loopback_dds(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the loopback-only variables (before rclpy starts); returns them."""
    env = loopback_env(environ)
    environ.update(env)
    return env


def main() -> int:
    try:
        env = loopback_env()
    except FileNotFoundError as exc:
        print(f"echo {shlex.quote(f'loopback DDS: {exc}')} >&2; false")
        return 1
    print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
