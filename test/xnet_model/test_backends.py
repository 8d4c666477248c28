"""Backends: onnxruntime / inductor parity with eager torch, auto selection, fallback chains,
the TensorRT backend's guards and version-dependent settings, and `xnet bench`."""

from __future__ import annotations

import inspect
import logging

import cv2
import numpy as np
import pytest
import torch

from xnet_model import Predictor, build_model
from xnet_model.runtime import backends as backends_mod
from xnet_model.runtime import create_backend
from xnet_model.runtime.backends import BackendError, TorchBackend
from xnet_model.runtime.select import FallbackBackend, output_problem
from xnet_model.runtime.tensorrt_backend import (
    TensorRTBackend,
    calibration_batches,
    calibration_files,
    precision_settings,
    unavailable_reason,
)

DEPTH_TOL = 1e-4
LABEL_AGREEMENT = 0.999
SIZE = (64, 96)


def tiny_model(input_size=SIZE, **overrides):
    torch.manual_seed(0)
    spec = {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"},
            "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 10},
            "data": {"input_size": list(input_size) if input_size else None}}
    spec.update(overrides)
    return build_model(spec).eval()


def batch(h=SIZE[0], w=SIZE[1], n=1, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def assert_close(ref: dict, got: dict, depth_tol=DEPTH_TOL, agreement=LABEL_AGREEMENT):
    assert set(got) == set(ref)
    assert got["depth"].dtype == np.float32 and got["depth"].shape == ref["depth"].shape
    assert float(np.abs(got["depth"] - ref["depth"]).max()) <= depth_tol
    assert got["labels"].shape == ref["labels"].shape
    assert float((got["labels"] == ref["labels"]).mean()) >= agreement


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh engine cache: the test sees its own misses."""
    monkeypatch.setenv("XNET_ENGINE_CACHE", str(tmp_path / "engines"))
    return tmp_path / "engines"


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture
def shared_cache(module_cache, monkeypatch):
    """One engine cache for the module: the tiny model is exported to ONNX once."""
    monkeypatch.setenv("XNET_ENGINE_CACHE", str(module_cache))
    return module_cache


# ---- onnxruntime -----------------------------------------------------------------------------

def test_onnxruntime_matches_torch_and_reuses_its_cached_graph(cache_dir, monkeypatch):
    model = tiny_model()
    ref_backend = TorchBackend(model, "cpu")
    ort_backend = create_backend("onnxruntime", model, "cpu")
    assert ort_backend.cache_hit is False and ort_backend.onnx_path.parent == cache_dir
    assert ort_backend.dynamic and "CPU" in ort_backend.describe()
    for x in (batch(), batch(96, 128, n=2, seed=1)):  # the dynamic graph takes other shapes
        assert_close(ref_backend.infer(x), ort_backend.infer(x))

    from xnet_model.runtime import onnx_backend

    def no_export(*args, **kwargs):
        raise AssertionError("a cached graph must not be exported again")

    monkeypatch.setattr(onnx_backend, "export_onnx", no_export)
    again = create_backend("onnxruntime", model, "cpu")
    assert again.cache_hit is True and again.onnx_path == ort_backend.onnx_path
    assert_close(ref_backend.infer(batch()), again.infer(batch()))


def test_onnxruntime_runs_a_given_file_and_rejects_other_precisions(tmp_path):
    from xnet_model.runtime.export import export_onnx

    model = tiny_model(semantic=None)
    path = export_onnx(model, tmp_path / "m.onnx", 80, 96).path  # static: 80 is off-stride
    backend = create_backend("onnxruntime", model, "cpu", onnx_path=path)
    assert not backend.dynamic and "80x96 graph" in backend.describe()
    out = backend.infer(batch(80, 96, n=2))
    ref = TorchBackend(model, "cpu").infer(batch(80, 96, n=2))
    assert set(out) == {"depth"} and out["depth"].shape == (2, 80, 96)
    assert float(np.abs(out["depth"] - ref["depth"]).max()) <= DEPTH_TOL
    with pytest.raises(BackendError, match="static at"):
        backend.infer(batch(64, 96))
    with pytest.raises(BackendError, match="fp32 only"):
        create_backend("onnxruntime", model, "cpu", precision="fp16", onnx_path=path)


def test_predictor_keys_the_cache_by_the_saved_files(tmp_path, shared_cache):
    from xnet_model import model_digest

    tiny_model().save(tmp_path / "model")
    image = np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)
    ref = Predictor(tmp_path / "model").predict(image)
    pred = Predictor(tmp_path / "model", backend="onnxruntime")
    out = pred.predict(image)
    assert out.depth.shape == (70, 100) and out.labels.shape == (70, 100)
    assert float(np.abs(out.depth - ref.depth).max()) <= DEPTH_TOL
    assert float((out.labels == ref.labels).mean()) >= LABEL_AGREEMENT
    sidecar = pred.backend.onnx_path.with_suffix(".json")
    assert model_digest(tmp_path / "model") in sidecar.read_text()


# ---- inductor --------------------------------------------------------------------------------

@pytest.mark.slow
def test_inductor_matches_torch():
    model = tiny_model()
    backend = create_backend("inductor", model, "cpu")  # fixed size: compiled at init
    assert (1, 3, *SIZE) in backend.compile_seconds
    assert_close(TorchBackend(model, "cpu").infer(batch()), backend.infer(batch()))
    assert backend.describe() == "inductor (fp32, freezing) on cpu"


def test_inductor_rejects_unknown_precision():
    with pytest.raises(BackendError, match="precision"):
        create_backend("inductor", tiny_model(), "cpu", precision="int4", warmup=False)


def test_torch_bf16_autocast_runs_on_cpu():
    model = tiny_model()
    out = TorchBackend(model, "cpu", precision="bf16").infer(batch())
    ref = TorchBackend(model, "cpu").infer(batch())
    assert output_problem(out, model, (1, 3, *SIZE)) is None
    assert float(np.abs(out["depth"] - ref["depth"]).mean()) < 0.1  # bf16: ~3 significant digits


# ---- auto and fallback chains ----------------------------------------------------------------

def test_auto_picks_a_cpu_backend_here_and_logs_why(shared_cache, caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto prefers GPU backends")
    model = tiny_model()
    with caplog.at_level(logging.INFO):
        backend = create_backend("auto", model)
    assert isinstance(backend, FallbackBackend) and backend.device.type == "cpu"
    assert backend.inner.name in ("onnxruntime", "torch")
    assert "auto backend on cpu: trying onnxruntime -> torch fp32" in caplog.text
    assert f"auto: using {backend.inner.describe()}" in caplog.text
    assert backend.describe().endswith("[auto]")
    assert_close(TorchBackend(model, "cpu").infer(batch()), backend.infer(batch()))


class BrokenInit(backends_mod.Backend):
    name = "broken"

    def __init__(self, model, device=None):
        raise BackendError("libnvinfer.so.10: cannot open shared object file")


class NaNOutput(backends_mod.Backend):
    name = "nan"

    def __init__(self, model, device=None):
        super().__init__(model, torch.device("cpu"))

    def infer(self, batch):
        n, _, h, w = batch.shape
        return {"depth": np.full((n, h, w), np.nan, np.float32),
                "labels": np.zeros((n, h, w), np.int32)}


class BreaksOnRealInput(TorchBackend):
    """Passes the init probe (fixed size), returns a wrong shape for anything else."""

    name = "flaky"

    def infer(self, batch):
        out = super().infer(batch)
        if batch.shape[-2:] != SIZE:
            out["depth"] = out["depth"][:, ::2]
        return out


@pytest.fixture
def fake_backends(monkeypatch):
    for name, cls in (("broken", BrokenInit), ("nan", NaNOutput), ("flaky", BreaksOnRealInput)):
        monkeypatch.setitem(backends_mod.BACKENDS, name, cls)


def test_backend_that_fails_to_initialise_falls_back_with_a_warning(fake_backends, caplog):
    model = tiny_model()
    with caplog.at_level(logging.WARNING):
        backend = create_backend("broken,torch", model)
    assert backend.inner.name == "torch" and backend.chosen == ("torch", {})
    assert "fallback backend broken: BackendError: libnvinfer.so.10" in caplog.text
    assert "falling back to torch" in caplog.text
    assert_close(TorchBackend(model, "cpu").infer(batch()), backend.infer(batch()))


def test_garbage_output_is_never_served(fake_backends, caplog):
    model = tiny_model()
    with caplog.at_level(logging.WARNING):
        backend = create_backend("nan,torch", model)
    assert backend.inner.name == "torch"
    assert "probe inference invalid" in caplog.text and "non-finite depth" in caplog.text


def test_first_real_batch_is_validated_too(fake_backends, caplog):
    model = tiny_model()
    backend = create_backend("flaky,torch", model)
    assert backend.inner.name == "flaky"
    x = batch(96, 128)
    with caplog.at_level(logging.WARNING):
        out = backend.infer(x)
    assert backend.inner.name == "torch"
    assert "failed on the first batch" in caplog.text and "depth has shape" in caplog.text
    assert_close(TorchBackend(model, "cpu").infer(x), out)


def test_no_usable_backend_lists_every_failure(fake_backends):
    with pytest.raises(BackendError) as info:
        create_backend("broken,nan", tiny_model())
    assert "broken: BackendError: libnvinfer" in str(info.value)
    assert "nan: BackendError: probe inference invalid" in str(info.value)


def test_output_problem_checks_keys_shapes_and_ranges():
    model = tiny_model()
    good = {"depth": np.full((1, 64, 96), 5.0, np.float32), "labels": np.zeros((1, 64, 96),
                                                                               np.int32)}
    assert output_problem(good, model, (1, 3, 64, 96)) is None
    assert "no 'labels'" in output_problem({"depth": good["depth"]}, model, (1, 3, 64, 96))
    assert "shape" in output_problem(good, model, (2, 3, 64, 96))
    assert "outside [0, 10.0]" in output_problem({**good, "depth": good["depth"] + 20}, model,
                                                 (1, 3, 64, 96))
    assert "labels outside" in output_problem({**good, "labels": good["labels"] + 10}, model,
                                              (1, 3, 64, 96))


def test_unknown_backend_and_context_options():
    model = tiny_model()
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        create_backend("tpu", model)
    # context options reach only the backends that take them
    backend = create_backend("torch", model, "cpu", model_path="/nowhere", input_size=(64, 96))
    assert backend.describe() == "torch (fp32) on cpu"
    with pytest.raises(TypeError):
        create_backend("torch", model, "cpu", threads=2)  # a real typo is not swallowed


# ---- TensorRT (import-guarded) ---------------------------------------------------------------

def test_tensorrt_backend_says_why_it_cannot_run():
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("torch_tensorrt and CUDA are available: see the gpu test")
    assert "torch_tensorrt is not installed" in reason or "CUDA is not available" in reason
    with pytest.raises(BackendError, match="torch_tensorrt|CUDA"):
        create_backend("tensorrt", tiny_model())


@pytest.mark.gpu
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_tensorrt_matches_torch_and_caches_its_engine(tmp_path):
    model = tiny_model()
    ref = TorchBackend(model, "cuda").infer(batch())
    first = create_backend("tensorrt", model, "cuda", precision="fp32", cache_dir=tmp_path)
    assert first.cache_hits[(1, 3, *SIZE)] is False
    assert_close(ref, first.infer(batch()), depth_tol=1e-3)
    second = create_backend("tensorrt", model, "cuda", precision="fp32", cache_dir=tmp_path)
    assert second.cache_hits[(1, 3, *SIZE)] is True
    fp16 = create_backend("tensorrt", model, "cuda", precision="fp16", cache_dir=tmp_path)
    assert_close(ref, fp16.infer(batch()), depth_tol=5e-2, agreement=0.99)


def test_tensorrt_precision_settings_follow_the_installed_api():
    def old_compile(exported_program, inputs=None, *, enabled_precisions=None,
                    min_block_size=5):
        pass

    def new_compile(exported_program, inputs=None, *, arg_inputs=None, enabled_precisions=None,
                    use_explicit_typing=True, enable_autocast=False,
                    autocast_low_precision_type=None, min_block_size=5):
        pass

    assert precision_settings(old_compile, "fp32") == {}
    assert precision_settings(old_compile, "fp16") == {
        "enabled_precisions": {torch.float32, torch.float16}}
    assert precision_settings(old_compile, "int8") == {
        "enabled_precisions": {torch.float32, torch.int8}}
    assert precision_settings(new_compile, "fp16") == {
        "use_explicit_typing": True, "enable_autocast": True,
        "autocast_low_precision_type": torch.float16}
    assert precision_settings(new_compile, "int8") == {"use_explicit_typing": True}
    with pytest.raises(BackendError):
        precision_settings(new_compile, "fp8")
    from xnet_model.runtime.tensorrt_backend import inputs_argument

    x = torch.zeros(1)
    assert list(inputs_argument(old_compile, x)) == ["inputs"]
    assert list(inputs_argument(new_compile, x)) == ["arg_inputs"]
    assert "calib" in inspect.signature(TensorRTBackend).parameters


def test_calibration_images_are_preprocessed_like_the_predictor(tmp_path):
    model = tiny_model()
    image = np.zeros((30, 40, 3), np.uint8)
    image[..., 2] = 255  # BGR on disk: pure red
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.jpg"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    files = calibration_files(tmp_path)
    assert [f.name for f in files] == ["a.png", "b.jpg"]
    batches = calibration_batches(files[:1], model.cfg, SIZE)
    assert len(batches) == 1 and batches[0].shape == (1, 3, *SIZE)
    mean, std = model.cfg.data.mean, model.cfg.data.std
    np.testing.assert_allclose(batches[0][0, :, 10, 10],
                               [(1 - mean[0]) / std[0], -mean[1] / std[1], -mean[2] / std[2]],
                               rtol=1e-5)
    with pytest.raises(BackendError, match="no calibration images"):
        calibration_files(tmp_path / "empty_dir_that_does_not_exist")


# ---- bench -----------------------------------------------------------------------------------

def test_bench_cli_prints_and_appends_a_table(tmp_path, shared_cache, capsys):
    from xnet_model.runtime.cli import bench_main

    tiny_model().save(tmp_path / "model")
    report = tmp_path / "docs" / "benchmarks.md"
    report.parent.mkdir()
    report.write_text("# Benchmarks\n\n## Someone else's section\n\nkeep me\n")
    rc = bench_main(["--model", str(tmp_path / "model"), "--backends",
                     "torch,onnxruntime,tensorrt", "--sizes", "64x96", "--warmup", "1",
                     "--iters", "3", "--flops", "--append", str(report), "--title", "tiny"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if line.startswith("| model |")]
    assert lines and "params M" in lines[0] and "GFLOPs" in lines[0]
    rows = {line.split(" | ")[1]: line for line in out.splitlines() if line.startswith("| model ")
            and "64x96" in line}
    assert set(rows) == {"torch", "onnxruntime", "tensorrt"}
    assert "torch (fp32) on cpu" in rows["torch"] and "onnxruntime" in rows["onnxruntime"]
    if unavailable_reason() is not None:
        assert "unavailable: BackendError" in rows["tensorrt"]
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\n## Someone else's section\n\nkeep me\n")
    assert "## tiny" in text and "- CPU: " in text and "Command: `xnet bench --model" in text
    command = text.split("Command: ")[1].splitlines()[0]
    assert "--iters 3" in command and "--title" not in command


def test_markdown_table_formats_rows():
    from xnet_model.runtime.bench import BenchRow, markdown_table

    rows = [BenchRow("m", "torch", (240, 320), 20.0, 25.5, 12.3, 0.5, "torch (fp32) on cpu",
                     8.88, 5.04),
            BenchRow("m", "tensorrt", (240, 320), details="unavailable: no CUDA")]
    lines = markdown_table(rows).splitlines()
    assert lines[2] == ("| m | torch | 240x320 | 20.0 | 25.5 | 50.00 | 12 | 0.5 | 8.88 | 5.0 "
                        "| torch (fp32) on cpu |")
    assert lines[3] == ("| m | tensorrt | 240x320 | - | - | - | - | - | - | - "
                        "| unavailable: no CUDA |")
