"""Resolve requirements-model.in (the ROS-free set) for CPython 3.10-3.13 into one lock.

    python tools/lock_model.py [--python 3.10=/path/to/python3.10 ...] > requirements-model.lock

Each Python version is resolved by pip running on that interpreter (`pip install --dry-run
--ignore-installed --report`: wheel metadata only, nothing is installed), so environment markers
such as `exceptiongroup; python_version < "3.11"` come out right; `pip --python-version` would
evaluate them for the running interpreter instead. The pins of requirements.lock are tried first
as constraints: the 3.11 set must be exactly a subset of requirements.lock (what `make setup`
installs), and other versions keep the same pins wherever those support them; a version they do
not resolve for (numpy 2.4 needs 3.11) gets the newest versions that do.

Interpreters: `--python X.Y=PATH`, else `pythonX.Y` on PATH, else `uv python find X.Y`. A version
without one is left out of the lock (its header lists the versions it covers); 3.11 is required.
The output pins a distribution without a marker when every covered version gets the same
version, otherwise once per distinct version with `; python_version == "X.Y" or ...`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("3.10", "3.11", "3.12", "3.13")
REQUIRED = "3.11"  # the version of the ROS 2 Kilted wheels: its set must match requirements.lock


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def interpreter_version(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_interpreter(version: str, overrides: dict[str, str]) -> str | None:
    candidates = [overrides.get(version), shutil.which(f"python{version}")]
    if shutil.which("uv"):
        out = subprocess.run(["uv", "python", "find", version], capture_output=True, text=True)
        candidates.append(out.stdout.strip() if out.returncode == 0 else None)
    for python in candidates:
        if python and interpreter_version(python) == version:
            return python
    return None


def resolve(python: str, constraints: Path | None, workdir: Path) -> dict[str, tuple[str, str]]:
    """{normalized name: (name, version)} that pip on `python` installs for the model set."""
    report = workdir / "report.json"
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--report", str(report),
           "-r", str(ROOT / "requirements-model.in")]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-3000:])
    rows = json.loads(report.read_text())["install"]
    sdists = [r["metadata"]["name"] for r in rows
              if not r.get("download_info", {}).get("url", "").endswith(".whl")]
    if sdists:  # they build at install time: compilers, headers, minutes
        print(f"lock_model: {python}: no wheel for {', '.join(sdists)}", file=sys.stderr)
    return {normalize(r["metadata"]["name"]): (r["metadata"]["name"], r["metadata"]["version"])
            for r in rows}


def merge(sets: dict[str, dict[str, tuple[str, str]]]) -> list[str]:
    versions = list(sets)
    names = sorted({n for s in sets.values() for n in s})
    lines = []
    for name in names:
        by_pin: dict[tuple[str, str], list[str]] = {}
        for v in versions:
            if name in sets[v]:
                by_pin.setdefault(sets[v][name], []).append(v)
        for (dist, version), pythons in by_pin.items():
            if pythons == versions:
                lines.append(f"{dist}=={version}")
            else:
                marker = " or ".join(f'python_version == "{v}"' for v in pythons)
                lines.append(f"{dist}=={version} ; {marker}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[], metavar="X.Y=PATH",
                        help="interpreter for one Python version (repeatable)")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.python)
    full_lock = ROOT / "requirements.lock"
    sets: dict[str, dict[str, tuple[str, str]]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in VERSIONS:
            python = find_interpreter(version, overrides)
            if python is None:
                if version == REQUIRED:
                    print(f"lock_model: no CPython {version} found (--python {version}=PATH)",
                          file=sys.stderr)
                    return 1
                print(f"lock_model: no CPython {version} found; left out", file=sys.stderr)
                continue
            print(f"lock_model: resolving for {version} with {python}", file=sys.stderr)
            try:
                sets[version] = resolve(python, full_lock, Path(tmp))
            except RuntimeError as exc:
                if version == REQUIRED:
                    print(f"lock_model: requirements-model.in does not resolve within "
                          f"requirements.lock on {version} (stale lock? run 'make lock'):\n{exc}",
                          file=sys.stderr)
                    return 1
                print(f"lock_model: {version}: requirements.lock pins do not resolve; "
                      "using the newest versions for it", file=sys.stderr)
                notes.append(f"# {version}: newest versions (the requirements.lock pins need "
                             "another Python)")
                sets[version] = resolve(python, None, Path(tmp))
    print("# Generated by 'make lock' (tools/lock_model.py) from requirements-model.in. "
          "Installed with --no-deps.")
    print(f"# python: {' '.join(sets)}")
    print("\n".join(notes + merge(sets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
