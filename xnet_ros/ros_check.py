"""Why rclpy or the generated messages cannot be imported, in words. Pure stdlib; imports no ROS.

`explain_import_error(exc)` turns the ImportError of `import rclpy`, `from sensor_msgs.msg
import ...` or `from xnet_ros.msg import ...` into one message that names the cause and the fix:

- wrong Python ABI: the package is there, but its C extensions are built for another CPython
  (the ROS 2 Kilted PyPI wheels in .venv: 3.11; Humble debs: 3.10; Jazzy and Kilted debs: 3.12);
- ROS not installed for this interpreter, or a distro in /opt/ros that is not sourced;
- a shared library that is not on LD_LIBRARY_PATH (an unsourced environment);
- xnet_ros.msg missing: `make msgs` not run, built for another Python, or install/ not on
  PYTHONPATH (`source tools/ros_env.sh`).

`doctor_checks()` gives the ROS rows of `xnet doctor` (entry point group `xnet.doctor`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROS_ROOT = Path("/opt/ros")
# The interpreter the ROS 2 Kilted PyPI wheels (requirements.lock) are built for.
WHEELS_PYTHON = "3.11"
_TAG = re.compile(r"\.(cpython-(\d)(\d+))[-.]")
_MISSING_LIB = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")

SETUP_HINT = ("`make setup && make msgs` builds .venv with CPython 3.11 and the ROS 2 Kilted "
              "wheels; `make demo` / `source tools/ros_env.sh` use it (README: Requirements "
              "and setup)")


def python_version(tag: str) -> str:
    """'cpython-311' -> '3.11'."""
    m = re.fullmatch(r"cpython-(\d)(\d+)", tag)
    return f"{m.group(1)}.{m.group(2)}" if m else tag


def this_python() -> str:
    return f"CPython {sys.version_info[0]}.{sys.version_info[1]} ({sys.executable})"


def package_dir(name: str) -> Path | None:
    """Directory of an importable top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def extension_tags(pkg_dir: Path) -> set[str]:
    """ABI tags ('cpython-311') of the compiled modules in a package and its direct subfolders."""
    tags = set()
    for pattern in ("*.so", "*/*.so"):
        for path in pkg_dir.glob(pattern):
            m = _TAG.search(path.name)
            if m:
                tags.add(m.group(1))
    return tags


def abi_mismatch(name: str) -> tuple[Path, set[str]] | None:
    """(package dir, its tags) when `name`'s compiled modules are all for another interpreter."""
    pkg = package_dir(name.split(".")[0])
    if pkg is None:
        return None
    tags = extension_tags(pkg)
    if tags and sys.implementation.cache_tag not in tags:
        return pkg, tags
    return None


def ros_distros(root: Path = ROS_ROOT) -> dict[str, list[str]]:
    """{distro: [python versions it has packages for]} of the ROS 2 installs under /opt/ros."""
    distros = {}
    if root.is_dir():
        for d in sorted(p for p in root.iterdir() if (p / "setup.bash").is_file()):
            vers = {m.group(1) for pattern in ("lib/python3.*", "local/lib/python3.*")
                    for p in d.glob(pattern) if (m := re.fullmatch(r"python(3\.\d+)", p.name))}
            distros[d.name] = sorted(vers)
    return distros


def msg_builds(repo: Path = REPO) -> list[tuple[Path, str]]:
    """(xnet_ros/msg dir, python version) of the interfaces built by `make msgs` or colcon."""
    found = []
    for pattern in ("install/lib/python3.*/site-packages/xnet_ros/msg",
                    "install/xnet_ros/lib/python3.*/site-packages/xnet_ros/msg",
                    "install/local/lib/python3.*/dist-packages/xnet_ros/msg"):
        for d in sorted(repo.glob(pattern)):
            m = re.search(r"python(3\.\d+)", str(d.relative_to(repo)))
            if (d / "__init__.py").is_file() and m:
                found.append((d, m.group(1)))
    return found


def _foreign_sys_path(sys_path: list[str]) -> list[str]:
    """sys.path entries that belong to another Python version (e.g. a sourced distro)."""
    ours = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return [p for p in sys_path
            if (m := re.search(r"/python(3\.\d+)/", p + "/")) and f"python{m.group(1)}" != ours]


def _explain_missing_library(lib: str, env: Mapping[str, str]) -> tuple[str, str]:
    if lib.startswith("libxnet_ros"):
        return (f"the xnet_ros interfaces are importable but their library {lib} is not on "
                "LD_LIBRARY_PATH",
                "`source tools/ros_env.sh` (this checkout) or `source install/setup.bash` "
                "(colcon workspace)")
    ld = env.get("LD_LIBRARY_PATH")
    where = f"LD_LIBRARY_PATH has {len(ld.split(os.pathsep))} entries" if ld else \
        "LD_LIBRARY_PATH is unset"
    return (f"the ROS 2 library {lib} is not found ({where}): the ROS environment is not "
            "sourced",
            "`source tools/ros_env.sh` (this checkout's .venv) or "
            "`source /opt/ros/<distro>/setup.bash` (a ROS 2 install)")


def _explain_msgs(repo: Path) -> tuple[str, str]:
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    builds = msg_builds(repo)
    if not builds:
        return ("the generated messages (xnet_ros.msg) are not built",
                "`make msgs` in this checkout, or `colcon build` in a ROS 2 workspace")
    same = [d for d, v in builds if v == ours]
    if not same:
        d, v = builds[0]
        return (f"xnet_ros.msg is built for Python {v} ({d}), this is {this_python()}",
                "run the node with the interpreter the messages were built with (.venv/bin/"
                "python after `source tools/ros_env.sh`), or rebuild them: `make msgs`")
    return (f"xnet_ros.msg is built ({same[0]}) but its folder is not on PYTHONPATH",
            "`source tools/ros_env.sh` (puts install/ on PYTHONPATH) or "
            "`source install/setup.bash` (colcon)")


def _explain_abi(name: str, pkg: Path, tags: set[str]) -> tuple[str, str]:
    built = ", ".join(f"CPython {python_version(t)} ({t})" for t in sorted(tags))
    cause = f"{name} in {pkg} is built for {built}, but this is {this_python()}"
    distro = re.search(r"/opt/ros/(\w+)/", str(pkg) + "/")
    if distro:
        fix = (f"run it with the Python ROS 2 {distro.group(1)} is built for "
               f"(python{python_version(sorted(tags)[0])}, the system /usr/bin/python3)")
    else:
        fix = f"the ROS 2 Kilted PyPI wheels need CPython {WHEELS_PYTHON}: {SETUP_HINT}"
    return cause, fix


def _explain_not_installed(top: str, env: Mapping[str, str], ros_root: Path,
                           repo: Path) -> tuple[str, str]:
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    cause = f"{top} is not installed for this interpreter, {this_python()}"
    fixes = []
    for distro, versions in ros_distros(ros_root).items():
        line = f"ROS 2 {distro} is installed in {ros_root / distro}"
        if not env.get("AMENT_PREFIX_PATH"):
            line += f" but not sourced: `source {ros_root / distro}/setup.bash`"
        if versions and ours not in versions:
            line += f"; it needs python{versions[0]}, not this {ours}"
        fixes.append(line)
    if (repo / ".venv" / "bin" / "python").exists() and not sys.prefix.startswith(
            str(repo / ".venv")):
        fixes.append(f"this checkout's .venv has it: {repo / '.venv/bin/python'} after "
                     "`source tools/ros_env.sh` (or `make demo`)")
    if not fixes:
        fixes.append(f"{SETUP_HINT}; without ROS, `make setup-model` installs the ROS-free parts "
                     "(xnet train/eval/export/bench, xnet bag)")
    return cause, "; ".join(fixes)


def _shorten(text: str, keep: int = 3) -> str:
    """The first and last `keep` non-empty lines of a long error text (numpy's is 25 lines)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 2 * keep:
        lines = [*lines[:keep], "...", *lines[-keep:]]
    return "\n    ".join(lines)


def explain_import_error(exc: ImportError, *, env: Mapping[str, str] | None = None,
                         ros_root: Path = ROS_ROOT, repo: Path = REPO) -> str:
    """One message naming why a ROS import failed and what fixes it, then the original error."""
    env = os.environ if env is None else env
    text = str(exc)
    name = exc.name or ""
    if not name and (m := _NO_MODULE.search(text)):
        name = m.group(1)
    top = name.split(".")[0]
    lib = _MISSING_LIB.search(text)
    mismatch = abi_mismatch(name) if name else None
    if lib:
        cause, fix = _explain_missing_library(lib.group(1), env)
    elif name.startswith("xnet_ros") or "xnet_ros.msg" in text:
        cause, fix = _explain_msgs(repo)
    elif mismatch:
        cause, fix = _explain_abi(top, *mismatch)
    elif isinstance(exc, ModuleNotFoundError) and top and package_dir(top) is None:
        cause, fix = _explain_not_installed(top, env, ros_root, repo)
    else:
        cause, fix = (f"importing {name or 'a ROS module'} failed",
                      "`xnet doctor` lists what this environment is missing")
    lines = [f"ROS 2 import failed: {cause}.", f"  fix: {fix}."]
    foreign = _foreign_sys_path(sys.path)
    if foreign:
        lines.append(f"  note: sys.path has folders of another Python version: {foreign[0]}"
                     + (f" (+{len(foreign) - 1})" if len(foreign) > 1 else "")
                     + " (a ROS distro or venv of another Python on PYTHONPATH?)")
    lines.append(f"  original error: {type(exc).__name__}: {_shorten(text)}")
    return "\n".join(lines)


def _row(name: str, ok: bool, detail: str, reason: str = "") -> dict:
    """A row of `xnet doctor` (xnet_model.runtime.doctor.Check): reason says why not, if not ok."""
    return {"name": name, "ok": ok, "detail": detail, "reason": reason}


def _import_error_of(exc: BaseException) -> ImportError | None:
    while exc is not None and not isinstance(exc, ImportError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _try_import(label: str, action) -> dict:
    try:
        detail = action()
    except Exception as exc:  # any failure is a failed check, with its reason
        imp = _import_error_of(exc)
        return _row(label, False, f"{type(exc).__name__}",
                    explain_import_error(imp) if imp else f"{type(exc).__name__}: {exc}")
    return _row(label, True, detail)


def _rclpy() -> str:
    from rclpy.impl.implementation_singleton import rclpy_implementation  # loads the C extension

    return f"{Path(rclpy_implementation.__file__).name}"


def _message(module: str, cls: str):
    def load() -> str:
        msg = getattr(importlib.import_module(module), cls)
        msg.__class__.__import_type_support__()  # the C typesupport libraries
        return f"{module}.{cls} with its C typesupport"
    return load


def doctor_checks() -> list[dict]:
    """Rows {"name", "ok", "detail", "reason"} for `xnet doctor`: ABI, environment, imports."""
    pkg = package_dir("rclpy")
    if pkg is None:
        cause, fix = _explain_not_installed("rclpy", os.environ, ROS_ROOT, REPO)
        return [_row("ROS 2 (rclpy)", False, f"not installed for {this_python()}",
                     f"only the node needs it (xnet train/eval/export/bench and xnet bag do "
                     f"not); {fix}")]
    rows = []
    tags = extension_tags(pkg)
    ours = sys.implementation.cache_tag
    abi_ok = ours in tags
    rows.append(_row("Python ABI", abi_ok,
                     f"{this_python()} is {ours}; rclpy ({pkg}) is "
                     f"{', '.join(sorted(tags)) or 'untagged'}",
                     "" if abi_ok else _explain_abi("rclpy", pkg, tags)[1]))
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    has_index = any((Path(p) / "share/ament_index/resource_index/packages/rclpy").exists()
                    for p in prefixes)
    distro = os.environ.get("ROS_DISTRO", "(unset)")
    rmw = os.environ.get("RMW_IMPLEMENTATION", "(default)")
    rows.append(_row("ROS environment", has_index,
                     f"AMENT_PREFIX_PATH: {len(prefixes)} prefixes; ROS_DISTRO={distro}; "
                     f"RMW_IMPLEMENTATION={rmw}",
                     "" if has_index else "no prefix on AMENT_PREFIX_PATH has rclpy's ament "
                     "index: `source tools/ros_env.sh` (this checkout) or "
                     "`source /opt/ros/<distro>/setup.bash`"))
    rows.append(_try_import("rclpy", _rclpy))
    rows.append(_try_import("ROS messages", _message("sensor_msgs.msg", "Image")))
    rows.append(_try_import("xnet_ros messages", _message("xnet_ros.msg", "InferenceStats")))
    rows.append(_native_row())
    return rows


def _native_row() -> dict:
    """The post-processing kernels: built and found, off on purpose, or missing (numpy)."""
    from . import native

    missing = native.missing()
    return _row("post-processing kernels", not missing, native.status(),
                "the node runs, with slower numpy post-processing: build the package (colcon "
                "build, or make msgs in this checkout) and source its setup" if missing else "")
