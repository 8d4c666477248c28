"""README's "Requirements and setup" against what is really installed.

The Python it states for `make setup` must be the ABI of the installed rclpy extension and the
interpreter `.venv` was built with; the Pythons it states for `make setup-model` must be the
ones requirements-model.lock covers; the disk it states must be what `.venv` takes.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import pytest

from xnet_ros import ros_check

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SETUP_SCRIPT = (REPO / "tools" / "setup_venv.sh").read_text()


def requirements_rows() -> dict[str, list[str]]:
    """{first cell: cells} of the table under '## Requirements and setup'."""
    section = README.split("## Requirements and setup", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| what"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def row(command: str) -> list[str]:
    (cells,) = [c for first, c in requirements_rows().items() if first.startswith(command)]
    return cells


def ros_python() -> str:
    m = re.fullmatch(r"CPython (3\.\d+) only", row("`make setup`,")[1])
    assert m, row("`make setup`,")
    return m.group(1)


def test_readme_python_for_ros_is_the_one_setup_and_diagnostics_use():
    version = ros_python()
    assert re.search(rf"^ROS_PYTHON={re.escape(version)}\b", SETUP_SCRIPT, re.M)
    assert version == ros_check.WHEELS_PYTHON
    # the first screen says the same
    intro = README.split("## Contents", 1)[0]
    assert f"CPython {version}\n" in intro or f"CPython {version} " in intro


def test_readme_model_pythons_are_the_ones_the_lock_covers():
    m = re.fullmatch(r"CPython (3\.\d+)–(3\.\d+)", row("`make setup-model`")[1])
    assert m, row("`make setup-model`")
    lock = (REPO / "requirements-model.lock").read_text()
    (covered,) = re.findall(r"^# python: (.*)$", lock, re.M)
    versions = covered.split()
    assert (versions[0], versions[-1]) == m.groups()
    assert re.search(rf"^MIN_MODEL_PYTHON={re.escape(versions[0])}$", SETUP_SCRIPT, re.M)
    assert f'python_requires=">={versions[0]}"' in (REPO / "setup.py").read_text()


def test_venv_interpreter_matches_the_rclpy_abi():
    """The issue's failure mode: a .venv whose Python is not the one rclpy is compiled for."""
    pkg = ros_check.package_dir("rclpy")
    if pkg is None:
        pytest.skip("rclpy is not installed here (a `make setup-model` install, or no setup)")
    sos = sorted(p.name for p in pkg.glob("_rclpy_pybind11*.so"))
    assert sos, f"no rclpy extension in {pkg}"
    tags = {m.group(1) + "." + m.group(2)
            for name in sos if (m := re.search(r"\.cpython-(\d)(\d+)-", name))}
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert tags == {running}, f"rclpy is built for {tags}, this Python is {running}"
    if "/opt/ros/" not in str(pkg):  # the PyPI wheels of `make setup`, not a distro's rclpy
        assert tags == {ros_python()}
    cfg = REPO / ".venv" / "pyvenv.cfg"
    if cfg.is_file() and Path(sys.prefix).resolve() == (REPO / ".venv").resolve():
        (built,) = re.findall(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", cfg.read_text(), re.M)
        assert built == running


def venv_gib(venv: Path) -> float:
    total = 0
    for root, _, files in os.walk(venv):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_blocks * 512
    return total / 2**30


def test_readme_disk_for_venv_is_what_it_takes():
    venv = REPO / ".venv"
    stamp = venv / ".lock.sha256"
    lock = REPO / "requirements.lock"
    if not stamp.is_file() or stamp.read_text().strip() != hashlib.sha256(
            lock.read_bytes()).hexdigest():
        pytest.skip(".venv is not a `make setup` build of requirements.lock")
    m = re.search(r"~(\d+) GB for `\.venv`", row("`make setup`,")[2])
    assert m, row("`make setup`,")
    assert abs(venv_gib(venv) - int(m.group(1))) < 1.0
