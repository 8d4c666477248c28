"""`xnet doctor`: rows with reasons, the engine cache listing, the model and backend choice,
checks contributed through the `xnet.doctor` entry points, and the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xnet_model.metadata import ArtifactInfo, ModelMetadata
from xnet_model.runtime import doctor
from xnet_model.runtime.engine_cache import CacheKey, EngineCache

DEMO_MODEL = Path(__file__).resolve().parents[2] / "xnet_model" / "assets" / "demo_model"


class FakeEntryPoint:
    def __init__(self, name, func):
        self.name, self.value, self._func = name, f"tests:{name}", func

    def load(self):
        return self._func


@pytest.fixture
def plugins(monkeypatch):
    """Replaces the installed `xnet.doctor` entry points with the given callables."""
    def install(**funcs):
        points = [FakeEntryPoint(name, f) for name, f in funcs.items()]

        def entry_points(group=None):
            assert group == "xnet.doctor"
            return points

        monkeypatch.setattr(doctor, "entry_points", entry_points)
    return install


def by_name(rows):
    return {r.name: r for r in rows}


def test_rows_cover_the_machine_and_every_no_has_a_reason(tmp_path, plugins):
    plugins()
    rows, can_run = doctor.run_checks(str(DEMO_MODEL), "torch", "cpu", tmp_path)
    names = by_name(rows)
    for name in ("python", "torch", "cuda", "cudnn", "timm", "torch_tensorrt", "tensorrt",
                 "modelopt", "onnxruntime", "inductor", "engine cache", "cache entries",
                 "model", "device", "auto would pick", "requested backend torch", "ros"):
        assert name in names, name
    assert all(r.reason for r in rows if r.ok is False)
    assert names["torch"].detail == torch.__version__
    assert names["model"].ok and "demo_synthetic: saved model" in names["model"].detail
    assert "network size 120x160" in names["model"].detail
    assert can_run and names["requested backend torch"].ok
    assert names["engine cache"].ok and names["engine cache"].detail == str(tmp_path)
    if not torch.cuda.is_available():
        assert names["cuda"].ok is False and names["cuda"].reason
        assert names["auto would pick"].detail.startswith(("onnxruntime", "torch"))
    assert "no 'xnet.doctor' checks registered" in names["ros"].detail


def test_exit_code_is_about_the_requested_backend_only(tmp_path, plugins, capsys):
    plugins(ros=lambda: [{"name": "rclpy", "ok": False, "detail": "",
                          "reason": "built for Python 3.12"}])
    # a failing ROS row and missing CUDA do not matter to a torch-on-cpu user
    assert doctor.main(["--backend", "torch", "--device", "cpu", "--cache-dir",
                        str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[ NO ] rclpy" in out and "why: built for Python 3.12" in out
    assert doctor.main(["--backend", "tensorrt", "--device", "cpu", "--cache-dir",
                        str(tmp_path)]) == 1
    assert "TensorRT runs on CUDA devices, not cpu" in capsys.readouterr().out
    # a chain can run when one member can
    assert doctor.main(["--backend", "tensorrt,torch", "--device", "cpu", "--cache-dir",
                        str(tmp_path)]) == 0


def test_contributed_checks_accept_the_ros_shape_and_survive_errors(plugins):
    def ros_checks():
        return [{"name": "rclpy", "ok": True, "detail": "kilted"},
                {"name": "xnet_ros.msg", "ok": False, "detail": "install/",
                 "reason": "not built: run make msgs"}]

    def broken():
        raise RuntimeError("plugin bug")

    plugins(ros=ros_checks, other=broken)
    rows = by_name(doctor.contributed_checks())
    assert rows["rclpy"].ok is True and rows["rclpy"].detail == "kilted"
    assert rows["xnet_ros.msg"].ok is False and rows["xnet_ros.msg"].reason == \
        "not built: run make msgs"
    assert rows["other"].ok is False and "check failed: RuntimeError: plugin bug" in \
        rows["other"].reason


def test_cache_listing_flags_entries_built_for_another_machine(tmp_path):
    cache = EngineCache(tmp_path, suffix=".pt2")
    old = CacheKey("tensorrt", "a" * 64, (1, 3, 240, 320), "fp16", "NVIDIA Orin", "8.7",
                   "10.3.0", "2.5.0", "2.4.0")
    cache.store(old, lambda p: p.write_bytes(b"engine"))
    rows = doctor.cache_checks(tmp_path)
    names = by_name(rows)
    assert "1 entries" in names["cache entries"].detail
    assert "1 built for another torch/TensorRT/GPU" in names["cache entries"].detail
    (entry,) = [r for r in rows if r.name.strip() == "tensorrt fp16"]
    assert "not for this machine: torch_version" in entry.detail
    assert "shape [1, 3, 240, 320]" in entry.detail and "gpu NVIDIA Orin" in entry.detail


def fake_artifact(path: Path, fmt: str) -> Path:
    path.mkdir()
    info = ArtifactInfo(fmt, "program.pt2", "fp16" if fmt == "tensorrt" else "fp32",
                        "cuda" if fmt == "tensorrt" else "cpu", (1, 1), (480, 480), (640, 640))
    ModelMetadata("m", ("depth",), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), (480, 640),
                  max_depth=10.0, artifact=info).save(path / "metadata.json")
    (path / "program.pt2").write_bytes(b"not read by the doctor")
    return path


def test_deploy_artifacts_and_their_backends(tmp_path, plugins, capsys):
    plugins()
    pt2 = fake_artifact(tmp_path / "pt2", "pt2")
    rows, can_run = doctor.run_checks(str(pt2), "auto", "cpu", tmp_path / "c")
    names = by_name(rows)
    assert "pt2 deploy artifact (fp32, cpu), accepts exactly 1x3x480x640" in \
        names["model"].detail
    assert names["auto would pick"].detail == "the artifact's pt2 program" and can_run
    rows, can_run = doctor.run_checks(str(pt2), "onnxruntime", "cpu", tmp_path / "c")
    assert not can_run
    assert "runs with auto, pt2, torch, not onnxruntime" in \
        by_name(rows)["requested backend onnxruntime"].reason
    trt = fake_artifact(tmp_path / "trt", "tensorrt")
    rc = doctor.main(["--model", str(trt), "--backend", "tensorrt", "--device", "cpu",
                      "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["backend_can_run"] is False
    row = next(r for r in doc["rows"] if r["name"] == "requested backend tensorrt")
    assert row["ok"] is False and row["reason"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text('{"artifact": {"format": "onnx"}}')
    row, meta, _ = doctor.describe_model(str(broken))
    assert row.ok is False and meta is None and row.reason
