"""tools/setup_venv.sh (`make setup`, `make setup-model`) with fake interpreters and a fake uv.

The script runs in a scratch copy of the repo layout with a PATH that holds only the fakes and
the coreutils it needs (no real python), so each test decides exactly which interpreters exist.
Fake interpreters answer the script's probe and log every other call; `-m venv DIR` creates a
fake DIR/bin/python, so even a full build runs end to end without downloading anything.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "setup_venv.sh"
TOOLS = ("bash", "sh", "dirname", "sha256sum", "cut", "sed", "sort", "head", "tail", "df", "du",
         "awk", "cat", "rm", "mkdir", "cp", "touch", "chmod")

FAKE_PYTHON = """#!/bin/bash
# fake CPython {ver}: answers the probe (and any -c), logs everything else
if [[ $1 == -c ]]; then echo "cpython {ver} {venv_ok} $0"; exit 0; fi
echo "$0 $*" >> "$FAKE_LOG"
if [[ $1 == -m && $2 == venv ]]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi
exit 0
"""
BROKEN_SHIM = """#!/bin/bash
echo "pyenv: $(basename "$0"): command not found" >&2
exit 127
"""
FAKE_UV = """#!/bin/bash
echo "uv $*" >> "$FAKE_LOG"
py=$FAKE_UV_HOME/cpython-3.11/bin/python3.11
if [[ $1 == python && $2 == find ]]; then
  if [[ -x $py ]]; then echo "$py"; exit 0; fi
  echo "error: No interpreter found for Python 3.11" >&2; exit 2
fi
if [[ $1 == python && $2 == install ]]; then mkdir -p "${py%/*}"; cp "$FAKE_PY311" "$py"; fi
exit 0
"""


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_python(path: Path, ver: str, venv_ok: bool = True) -> Path:
    return write_exe(path, FAKE_PYTHON.format(ver=ver, venv_ok=int(venv_ok)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.repo = root / "repo"
        self.bin = root / "bin"  # the fakes on PATH
        self.log = root / "calls.log"
        self.uv_home = root / "uv"
        (self.repo / "tools").mkdir(parents=True)
        shutil.copy(SCRIPT, self.repo / "tools" / "setup_venv.sh")
        (self.repo / "requirements.lock").write_text("torch==2.14.1\nros-kilted-rclpy==9.1.2\n")
        (self.repo / "requirements-model.lock").write_text(
            "# python: 3.10 3.11 3.12 3.13\ntorch==2.14.1\n")
        (self.repo / "requirements-model.in").write_text("torch==2.14.1\n")
        (self.repo / "setup.py").write_text("# the project (pip install -e . is faked)\n")
        sysbin = root / "sysbin"
        sysbin.mkdir()
        for tool in TOOLS:
            (sysbin / tool).symlink_to(shutil.which(tool))
        self.bin.mkdir()
        self.log.touch()
        self.py311_template = fake_python(root / "templates" / "python3.11", "3.11")
        self.path = f"{self.bin}:{sysbin}"

    @property
    def venv_python(self) -> Path:
        return self.repo / ".venv" / "bin" / "python"

    def run(self, *args: str, dry: bool = False, **env: str) -> subprocess.CompletedProcess:
        environ = {"PATH": self.path, "HOME": str(self.root), "FAKE_LOG": str(self.log),
                   "FAKE_UV_HOME": str(self.uv_home), "FAKE_PY311": str(self.py311_template),
                   "XNET_SETUP_MIN_FREE_GB": "0", **env}
        if dry:
            environ["XNET_SETUP_DRY_RUN"] = "1"
        return subprocess.run(["bash", str(self.repo / "tools" / "setup_venv.sh"), *args],
                              env=environ, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[str]:
        """Logged calls (the fakes do not log `python -c`: the probe)."""
        return self.log.read_text().splitlines()


@pytest.fixture
def box(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


def test_python_env_wins_over_path(box):
    chosen = fake_python(box.root / "opt" / "py311", "3.11")
    fake_python(box.bin / "python3.11", "3.11")
    out = box.run(dry=True, PYTHON=str(chosen))
    assert out.returncode == 0, out.stderr
    assert f"would build .venv with {chosen} (CPython 3.11)" in out.stdout
    assert "there is no usable .venv" in out.stdout
    assert not (box.repo / ".venv").exists()


def test_python_env_with_another_version_is_an_error(box):
    py312 = fake_python(box.root / "opt" / "py312", "3.12")
    fake_python(box.bin / "python3.11", "3.11")  # not silently used instead of PYTHON
    out = box.run(PYTHON=str(py312))
    assert out.returncode == 1
    assert f"{py312}: CPython 3.12" in out.stderr
    assert not (box.repo / ".venv").exists() and box.calls() == []


def test_python311_on_path(box):
    fake_python(box.bin / "python3", "3.12")
    py = fake_python(box.bin / "python3.11", "3.11")
    out = box.run(dry=True)
    assert f"would build .venv with {py} (CPython 3.11)" in out.stdout


def test_broken_pyenv_shim_falls_through_to_python3(box):
    write_exe(box.bin / "python3.11", BROKEN_SHIM)
    py3 = fake_python(box.bin / "python3", "3.11")
    out = box.run(dry=True)
    assert f"would build .venv with {py3} (CPython 3.11)" in out.stdout


def test_uv_managed_python_is_found(box):
    fake_python(box.bin / "python3", "3.12")
    write_exe(box.bin / "uv", FAKE_UV)
    uv_py = fake_python(box.uv_home / "cpython-3.11" / "bin" / "python3.11", "3.11")
    out = box.run(dry=True)
    assert f"would build .venv with {uv_py} (CPython 3.11)" in out.stdout
    assert "uv python install" not in box.log.read_text()


def test_uv_installs_311_then_builds(box):
    """No 3.11 anywhere but uv: `uv python install 3.11`, then the whole build with it."""
    fake_python(box.bin / "python3", "3.12")
    write_exe(box.bin / "uv", FAKE_UV)
    out = box.run()
    assert out.returncode == 0, out.stderr
    uv_py = box.uv_home / "cpython-3.11" / "bin" / "python3.11"
    venv_py = box.venv_python
    assert box.calls() == [
        "uv python find 3.11",
        "uv python install 3.11",
        "uv python find 3.11",
        f"{uv_py} -m venv .venv",
        f"{venv_py.relative_to(box.repo)} -m pip install -q --upgrade pip",
        f"{venv_py.relative_to(box.repo)} -m pip install -q --no-deps -r requirements.lock",
        f"{venv_py.relative_to(box.repo)} -m pip check",
        f"{venv_py.relative_to(box.repo)} -m pip install -q --no-deps --no-build-isolation -e .",
    ]
    assert (box.repo / ".venv" / ".lock.sha256").read_text().strip() == sha(
        box.repo / "requirements.lock")
    assert (box.repo / ".venv" / ".project.stamp").exists()


def test_no_python311_stops_before_downloading(box):
    fake_python(box.bin / "python3", "3.12")
    out = box.run()  # not a dry run: it must stop by itself
    assert out.returncode == 1
    assert "python3.11: not found" in out.stderr and "python3: CPython 3.12" in out.stderr
    assert "uv: not installed" in out.stderr
    for hint in ("ppa:deadsnakes/ppa", "python3.11-venv", "uv python install 3.11",
                 "pyenv install 3.11", "colcon build", "make setup-model"):
        assert hint in out.stderr, hint
    assert box.calls() == [] and not (box.repo / ".venv").exists()


def test_python311_without_venv_module_names_the_debian_package(box):
    fake_python(box.bin / "python3.11", "3.11", venv_ok=False)
    out = box.run()
    assert out.returncode == 1
    assert "sudo apt install python3.11-venv" in out.stderr
    assert box.calls() == []


def test_reuse_when_lock_unchanged_needs_no_interpreter(box):
    fake_python(box.venv_python, "3.11")
    (box.repo / ".venv" / ".lock.sha256").write_text(sha(box.repo / "requirements.lock") + "\n")
    (box.repo / ".venv" / ".project.stamp").touch()
    out = box.run()  # no python on PATH at all
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "setup: .venv is up to date with requirements.lock"
    assert box.calls() == []


def test_lock_change_rebuilds(box):
    fake_python(box.bin / "python3.11", "3.11")
    fake_python(box.venv_python, "3.11")
    (box.repo / ".venv" / ".lock.sha256").write_text("old\n")
    (box.repo / ".venv" / "leftover").touch()
    out = box.run()
    assert out.returncode == 0, out.stderr
    assert "requirements.lock changed since .venv was built" in out.stdout
    assert not (box.repo / ".venv" / "leftover").exists()  # a fresh venv, not an update
    assert (box.repo / ".venv" / ".lock.sha256").read_text().strip() == sha(
        box.repo / "requirements.lock")


def test_venv_with_wrong_python_is_rebuilt(box):
    """A .venv built by the old script with python3 = 3.12 has a matching stamp but no rclpy."""
    py311 = fake_python(box.bin / "python3.11", "3.11")
    fake_python(box.venv_python, "3.12")
    (box.repo / ".venv" / ".lock.sha256").write_text(sha(box.repo / "requirements.lock") + "\n")
    out = box.run(dry=True)
    assert ".venv has CPython 3.12; the ROS 2 wheels need 3.11" in out.stdout
    assert f"would build .venv with {py311} (CPython 3.11)" in out.stdout


def test_which_python(box):
    py = fake_python(box.bin / "python3.11", "3.11")
    out = box.run("--which-python")
    assert (out.returncode, out.stdout.strip()) == (0, str(py))
    empty = Sandbox(box.root / "other")
    assert empty.run("--which-python").returncode == 1


# --- make setup-model ---

def test_model_set_with_python312(box):
    py3 = fake_python(box.bin / "python3", "3.12")
    out = box.run("--model")
    assert out.returncode == 0, out.stderr
    assert f"building .venv with {py3} (CPython 3.12) from requirements-model.lock" in out.stdout
    venv_py = box.venv_python.relative_to(box.repo)
    assert f"{venv_py} -m pip install -q --no-deps -r requirements-model.lock" in box.calls()
    assert (box.repo / ".venv" / ".model-lock.sha256").read_text().strip() == sha(
        box.repo / "requirements-model.lock")
    assert not (box.repo / ".venv" / ".lock.sha256").exists()
    # again: reused
    again = box.run("--model")
    assert "up to date with the ROS-free set (CPython 3.12)" in again.stdout
    # `make setup` afterwards without any 3.11: the message, and the model venv stays
    full = box.run()
    assert full.returncode == 1 and "ppa:deadsnakes/ppa" in full.stderr
    assert (box.repo / ".venv" / ".model-lock.sha256").exists()


def test_model_set_for_python_without_pins_resolves_the_in_file(box):
    fake_python(box.bin / "python3", "3.14")
    out = box.run("--model")
    assert out.returncode == 0, out.stderr
    assert "requirements-model.lock has pins for Python 3.10 3.11 3.12 3.13 only" in out.stdout
    venv_py = box.venv_python.relative_to(box.repo)
    assert f"{venv_py} -m pip install -q -r requirements-model.in" in box.calls()  # with deps
    stamp = (box.repo / ".venv" / ".model-lock.sha256").read_text().strip()
    assert stamp == "unpinned " + sha(box.repo / "requirements-model.in")


def test_model_set_python39_falls_back_to_311(box):
    fake_python(box.bin / "python3", "3.9")
    out = box.run("--model", dry=True)
    assert "python3: CPython 3.9" not in out.stdout  # not an error: the search goes on
    assert out.returncode == 1 and "python3: CPython 3.9" in out.stderr
    py311 = fake_python(box.bin / "python3.11", "3.11")
    out = box.run("--model", dry=True)
    assert f"would build .venv with {py311} (CPython 3.11) from requirements-model.lock" \
        in out.stdout


def test_model_target_reuses_a_full_venv(box):
    fake_python(box.venv_python, "3.11")
    (box.repo / ".venv" / ".lock.sha256").write_text(sha(box.repo / "requirements.lock") + "\n")
    (box.repo / ".venv" / ".project.stamp").touch()
    out = box.run("--model")
    assert out.returncode == 0, out.stderr
    assert "full set (ROS included), a superset of the ROS-free one" in out.stdout
    assert box.calls() == []



def test_too_little_disk_stops_before_downloading(box):
    fake_python(box.bin / "python3.11", "3.11")
    out = box.run(XNET_SETUP_MIN_FREE_GB="1000000")  # a million GB: never free
    assert out.returncode == 1
    assert "GB free here; .venv needs about 6 GB" in out.stderr
    assert box.calls() == [] and not (box.repo / ".venv").exists()
