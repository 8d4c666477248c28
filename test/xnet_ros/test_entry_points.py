"""`xnet bag` and `xnet doctor`'s ROS rows reach xnet_model's CLI through entry points, also when
the egg-info that the CMake/colcon install writes for xnet_ros comes first on PYTHONPATH."""

from __future__ import annotations

import configparser
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "resource" / "entry_points.txt"


def _groups(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # entry point names are case-sensitive
    parser.read(path)
    return {g: dict(parser[g]) for g in parser.sections()}


def test_entry_points_list():
    groups = _groups(SOURCE)
    assert groups["xnet.commands"] == {"bag": "xnet_ros.bag.cli:main"}
    assert groups["xnet.doctor"] == {"ros": "xnet_ros.ros_check:doctor_checks"}
    assert groups["console_scripts"]["xnet_node"] == "xnet_ros.main:main"


def test_visible_to_the_running_interpreter():
    """Whatever xnet_ros metadata wins on sys.path (editable install or install/'s egg-info)
    carries the same entry points."""
    assert {ep.name: ep.value for ep in entry_points(group="xnet.commands")} == {
        "bag": "xnet_ros.bag.cli:main"}
    assert {ep.name: ep.value for ep in entry_points(group="xnet.doctor")} == {
        "ros": "xnet_ros.ros_check:doctor_checks"}


def test_cmake_install_egg_info_has_them():
    eggs = sorted((REPO / "install").glob("lib/python3*/site-packages/xnet_ros-*.egg-info"))
    if not eggs:
        pytest.skip("install/ has no xnet_ros egg-info (run `make msgs`)")
    for egg in eggs:
        assert _groups(egg / "entry_points.txt") == _groups(SOURCE), egg
