"""`make setup-model`: the ROS-free set (requirements-model.lock) installs and runs without rclpy.

Two kinds of proof, neither downloads anything:
- the lock itself: it covers Python 3.10-3.13, holds no ROS distribution, pins on 3.11 exactly
  what requirements.lock pins, satisfies requirements-model.in on every covered version, and is
  closed under the dependencies of what is installed here;
- a model-only install built from this .venv: a fresh venv whose site-packages holds links to
  the files of the lock's distributions (and the project's editable install) and nothing else,
  so rclpy and the ROS wheels are really absent. There every xnet_model module imports,
  `xnet`, `xnet bag` and the train/eval/export/bench commands start, the demo model predicts
  exactly what it predicts in the full install, and `xnet bag infer` converts an MCAP bag.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
MODEL_LOCK = REPO / "requirements-model.lock"
OURS = f"{sys.version_info[0]}.{sys.version_info[1]}"
DEMO_MODEL = REPO / "xnet_model" / "assets" / "demo_model"
# what requirements.lock has beyond the model set: the ROS 2 wheels (ros-*) and these, which
# only the ROS build tools need (catkin_pkg -> docutils; rosidl -> empy, lark)
ROS_ONLY = {"catkin-pkg", "docutils", "empy", "lark-parser"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> list[Requirement]:
    return [Requirement(line) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def covered_versions() -> list[str]:
    (line,) = [x for x in MODEL_LOCK.read_text().splitlines() if x.startswith("# python: ")]
    return line.split(": ", 1)[1].split()


def pins_for(version: str, path: Path = MODEL_LOCK) -> dict[str, str]:
    """{normalized name: version} that `pip install --no-deps -r` installs on Python `version`."""
    pins = {}
    for req in read_lock(path):
        if req.marker is None or req.marker.evaluate({"python_version": version}):
            name = norm(req.name)
            assert name not in pins, f"{req.name} pinned twice for {version}"
            (spec,) = req.specifier
            pins[name] = spec.version
    return pins


def test_lock_covers_the_supported_pythons():
    versions = covered_versions()
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    # setup.py's python_requires is the lowest of them
    assert re.search(r'python_requires=">=3\.10"', (REPO / "setup.py").read_text())


def test_lock_has_no_ros_and_matches_requirements_lock_on_311():
    full = pins_for("3.11", REPO / "requirements.lock")
    for version in covered_versions():
        pins = pins_for(version)
        assert not [n for n in pins if n.startswith("ros-") or n in ROS_ONLY], version
    model = pins_for("3.11")
    assert {n: full.get(n) for n in model} == model  # the same versions as `make setup`
    left_out = set(full) - set(model)
    assert {n for n in left_out if not n.startswith("ros-")} == ROS_ONLY


def test_lock_satisfies_the_top_level_requirements_everywhere():
    wanted = [Requirement(line) for line in (REPO / "requirements-model.in").read_text()
              .splitlines() if line.strip() and not line.startswith(("#", "-"))]
    assert {"torch", "timm", "rosbags", "onnxruntime"} <= {norm(r.name) for r in wanted}
    for version in covered_versions():
        pins = pins_for(version)
        for req in wanted:
            assert norm(req.name) in pins, (version, req.name)
            assert req.specifier.contains(pins[norm(req.name)], prereleases=True), (version, req)


def installed_site() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def installed_dists(site: Path) -> dict[str, importlib.metadata.Distribution]:
    return {norm(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site)])
            if d.metadata["Name"] and str(getattr(d, "_path", "")).endswith(".dist-info")}


def model_dists() -> dict[str, importlib.metadata.Distribution]:
    """The lock's distributions for this Python, as installed here (skip when they are not)."""
    if OURS not in covered_versions():
        pytest.skip(f"requirements-model.lock has no pins for Python {OURS}")
    dists = installed_dists(installed_site())
    pins = pins_for(OURS)
    missing = sorted(n for n, v in pins.items() if n not in dists or dists[n].version != v)
    if missing:
        pytest.skip(f"this environment is not built from the locks ({len(missing)} differ, "
                    f"e.g. {missing[0]}): run `make setup`")
    return {n: dists[n] for n in pins}


def test_model_set_is_closed_under_its_dependencies():
    """With --no-deps, every dependency of an installed model-set package must be in the set."""
    dists = model_dists()
    env = {"python_version": OURS, "extra": ""}
    unmet = []
    for name, dist in dists.items():
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = dists.get(norm(req.name))
            if dep is None or not req.specifier.contains(dep.version, prereleases=True):
                unmet.append(f"{name} needs {req}")
    assert unmet == []


def top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    return {f.parts[0] for f in dist.files or []
            if f.parts[0] not in ("..", "__pycache__")}


@pytest.fixture(scope="module")
def model_python(tmp_path_factory) -> Path:
    """A venv holding only the model set (+ this project, editable): its python."""
    dists = model_dists()
    project = installed_dists(installed_site()).get("xnet-ros")
    if project is None:
        pytest.skip("the project is not pip-installed here (make setup)")
    dists["xnet-ros"] = project
    root = tmp_path_factory.mktemp("model_only")
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{OURS}" / "site-packages"
    src = installed_site()
    for dist in dists.values():
        for entry in top_level_entries(dist):
            if not (site / entry).exists() and (src / entry).exists():
                (site / entry).symlink_to(src / entry)
    assert not (site / "rclpy").exists() and (site / "torch").is_symlink()
    return venv / "bin" / "python"


def run_isolated(python: Path, code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """-I: no PYTHONPATH, no user site, not the current directory; no ROS environment either."""
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(python), "-I", "-c", code, *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


PROBE = r"""
import contextlib, importlib, importlib.util, io, json, pkgutil, sys
import numpy as np
model, pred_out, bag, bag_out = sys.argv[1:5]
out = {}
try:
    import rclpy
    out["rclpy"] = rclpy.__file__
except ModuleNotFoundError as exc:
    out["rclpy"] = exc.name
out["xnet_ros.msg"] = importlib.util.find_spec("xnet_ros.msg") is not None
import xnet_model
mods = [m.name for m in pkgutil.walk_packages(xnet_model.__path__, "xnet_model.")
        if not m.name.endswith(".__main__")]  # importing those runs them
for m in mods:
    importlib.import_module(m)
out["modules"] = len(mods)
from xnet_model.cli import main
out["help"] = {}
for argv in (["--help"], ["bag", "--help"], ["bag", "infer", "--help"], ["train", "--help"],
             ["eval", "--help"], ["export", "--help"], ["bench", "--help"]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    out["help"][" ".join(argv)] = [code, buf.getvalue()]
from xnet_model import Predictor
pred = Predictor(model, backend="torch", device="cpu").predict(np.load(pred_out)["rgb"])
np.savez(pred_out, depth=pred.depth, labels=pred.labels)
out["bag infer"] = main(["bag", "infer", bag, "--model", model, "--image-topic", "/cam/image",
                         "--fx", "50", "--out", bag_out, "-q"])
out["ros_loaded"] = sorted({k.split(".")[0] for k in sys.modules} & {
    "rclpy", "rpyutils", "sensor_msgs", "std_msgs", "rosidl_runtime_py", "builtin_interfaces"})
print(json.dumps(out))
"""


def pattern_image(i: int = 0) -> np.ndarray:
    """A smooth 48x64 RGB test pattern (hand-made, deterministic)."""
    yy, xx = np.mgrid[0:48, 0:64]
    return np.stack([xx * 4, yy * 5, (xx + yy + 20 * i) % 256], axis=-1).astype(np.uint8)


def write_image_bag(path: Path, n: int) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    t = ts.types
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=ts)
        for i in range(n):
            stamp = t["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=0)
            msg = t["sensor_msgs/msg/Image"](
                header=t["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"), height=48,
                width=64, encoding="rgb8", is_bigendian=0, step=64 * 3,
                data=pattern_image(i).reshape(-1))
            writer.write(conn, (100 + i) * 10**9, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


def read_topics(path: Path, names: tuple[str, ...]) -> dict[str, list]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    topics: dict[str, list] = {name: [] for name in names}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic in names]
        for conn, _, raw in reader.messages(connections=conns):
            topics[conn.topic].append(ts.deserialize_cdr(raw, conn.msgtype))
    return topics


def test_model_only_install_runs_without_rclpy(model_python, tmp_path):
    """One process (torch and timm are imported once): imports, CLI, predict, `xnet bag infer`."""
    pytest.importorskip("rosbags", reason="rosbags is not installed")
    from xnet_model import Predictor

    np.savez(tmp_path / "pred.npz", rgb=pattern_image())
    bag = write_image_bag(tmp_path / "in", 3)
    out = run_isolated(model_python, PROBE, str(DEMO_MODEL), str(tmp_path / "pred.npz"),
                       str(bag), str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.splitlines()[-1])
    assert res["rclpy"] == "rclpy"  # ModuleNotFoundError for rclpy itself
    assert res["xnet_ros.msg"] is False and res["ros_loaded"] == []
    assert res["modules"] >= 20  # really walked xnet_model (train, runtime, data, ...)
    helps = res["help"]
    assert helps["--help"][0] == 0
    assert re.search(r"^  bag\s+\S", helps["--help"][1], re.M)  # found via the entry point
    for cmd in ("bag", "bag infer", "train", "eval", "export", "bench"):
        code, text = helps[f"{cmd} --help"]
        assert code == 0 and text.startswith("usage: "), cmd
    assert "infer" in helps["bag --help"][1] and "--image-topic" in helps["bag infer --help"][1]

    # the same prediction as the full install (this process) gives
    predictor = Predictor(DEMO_MODEL, backend="torch", device="cpu")
    want = predictor.predict(pattern_image())
    got = np.load(tmp_path / "pred.npz")
    assert got["depth"].shape == (48, 64) and got["labels"].shape == (48, 64)
    np.testing.assert_allclose(got["depth"], want.depth, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got["labels"], want.labels)
    assert got["labels"].max() < 10  # the demo model's 10 classes

    # `xnet bag infer` wrote one depth image, label image and point cloud per input frame
    assert res["bag infer"] == 0
    topics = read_topics(tmp_path / "out", ("/xnet/depth", "/xnet/semantic/labels",
                                            "/xnet/points"))
    assert {t: len(msgs) for t, msgs in topics.items()} == {
        "/xnet/depth": 3, "/xnet/semantic/labels": 3, "/xnet/points": 3}
    first = topics["/xnet/depth"][0]
    assert (first.header.stamp.sec, first.encoding) == (100, "32FC1")
    depth = np.frombuffer(bytes(first.data), np.float32).reshape(48, 64)
    valid = np.isfinite(depth)
    assert valid.mean() > 0.9
    # the demo model is camera-aware: `--fx 50` (pixels of the 48x64 frame) is its focal
    metric = predictor.predict(pattern_image(), fx=50.0).depth
    np.testing.assert_allclose(depth[valid], metric[valid], rtol=1e-6, atol=1e-5)
    assert not np.allclose(metric, want.depth)  # the focal really changed the scale
