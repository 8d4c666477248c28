"""Loopback-only DDS settings: one definition (xnet_ros/loopback.py), used by ros_env.sh too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xnet_ros.loopback import apply_loopback_dds, loopback_env

REPO = Path(__file__).resolve().parents[2]


def test_forced_values_and_kept_domain_and_log_dir(tmp_path):
    env = {"ROS_DOMAIN_ID": "42", "ROS_LOG_DIR": str(tmp_path),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp",
           "FASTDDS_DEFAULT_PROFILES_FILE": "/somewhere/else.xml"}
    assert apply_loopback_dds(env) == env
    assert env == {"ROS_DOMAIN_ID": "42", "ROS_LOG_DIR": str(tmp_path),
                   "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
                   "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
                   "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" /
                                                        "fastdds_localhost.xml")}


def test_unset_domain_is_random_and_log_dir_is_new():
    domains = set()
    for _ in range(20):
        env = loopback_env({})
        assert 1 <= int(env["ROS_DOMAIN_ID"]) <= 100
        assert Path(env["ROS_LOG_DIR"]).is_dir()
        domains.add(env["ROS_DOMAIN_ID"])
    assert len(domains) > 1


def test_profile_keeps_traffic_on_loopback():
    text = Path(loopback_env({"ROS_DOMAIN_ID": "1", "ROS_LOG_DIR": "/tmp"})[
        "FASTDDS_DEFAULT_PROFILES_FILE"]).read_text()
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in text
    assert "<address>127.0.0.1</address>" in text and "<type>SHM</type>" in text


@pytest.mark.skipif(sys.platform == "win32", reason="bash")
def test_ros_env_sh_sets_the_same_values(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROS_", "FASTDDS_", "RMW_"))}
    env["ROS_LOG_DIR"] = str(tmp_path)
    out = subprocess.run(
        ["bash", "-c", f"source {REPO / 'tools' / 'ros_env.sh'} 2>/dev/null; env"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    got = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    expected = loopback_env({"ROS_DOMAIN_ID": got["ROS_DOMAIN_ID"], "ROS_LOG_DIR": str(tmp_path)})
    assert {k: got[k] for k in expected} == expected
