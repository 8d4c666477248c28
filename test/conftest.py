"""Shared test fixtures: paths to ../shared/fixtures, tiny model configs, ROS loopback env."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("XNET_FIXTURES", REPO.parent / "shared" / "fixtures"))


def _set_loopback_dds() -> None:
    """Loopback-only DDS for every ROS process a test starts (see ../shared/ros/README.md)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_localhost.xml")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="xnet_roslog_")


_set_loopback_dds()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set XNET_FIXTURES)")
    return FIXTURES
