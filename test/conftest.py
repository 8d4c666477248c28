"""Shared test fixtures: paths to ../shared/fixtures, tiny model configs, ROS loopback env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xnet_ros.loopback import apply_loopback_dds

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("XNET_FIXTURES", REPO.parent / "shared" / "fixtures"))

# Loopback-only DDS for every ROS process a test starts (see ../shared/ros/README.md).
apply_loopback_dds()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set XNET_FIXTURES)")
    return FIXTURES
