"""Backends: onnxruntime / inductor parity with eager torch, auto selection, fallback chains,
the TensorRT backend's guards and version-dependent settings, and `xnet bench`."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from xnet_model import Predictor, build_model
from xnet_model.runtime import backends as backends_mod
from xnet_model.runtime import create_backend
from xnet_model.runtime.backends import BackendError, TorchBackend
from xnet_model.runtime.select import FallbackBackend, output_problem
from xnet_model.runtime.tensorrt_backend import (
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
    again = create_backend("onnxruntime", model, "cpu", spin_wait=True)
    assert again.cache_hit is True and again.onnx_path == ort_backend.onnx_path
    from xnet_model.runtime.onnx_backend import SPIN_WAIT_KEY

    spin = [b.session.get_session_options().get_session_config_entry(SPIN_WAIT_KEY)
            for b in (ort_backend, again)]
    assert spin == ["0", "1"]  # busy-waiting threads only when asked for
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


def test_onnxruntime_cpu_streams_run_one_session_concurrently(shared_cache):
    """cpu_streams divides onnxruntime's intra-op threads (torch's stay) in the one session,
    created once; the sub-batches run in it at the same time, and they give the outputs of one
    stream."""
    import threading
    from unittest.mock import patch

    from xnet_model.runtime.onnx_backend import SPIN_WAIT_KEY, OnnxRuntimeBackend

    model = tiny_model()
    threads = torch.get_num_threads()
    images = [np.random.default_rng(i).integers(0, 255, (*SIZE, 3), dtype=np.uint8)
              for i in range(4)]
    one = Predictor(model, backend="onnxruntime").predict_batch(images)
    sessions = []
    real_session = OnnxRuntimeBackend._session
    with patch.object(OnnxRuntimeBackend, "_session", autospec=True,
                      side_effect=lambda self, path: sessions.append(self.threads)
                      or real_session(self, path)):
        two = Predictor(model, backend="onnxruntime", cpu_streams=2)
    assert torch.get_num_threads() == threads
    share = max(1, threads // 2)
    assert two.backend.threads == share
    assert sessions == [share]  # created once, already divided (not once whole, then again)
    options = two.backend.session.get_session_options()
    assert options.intra_op_num_threads == share
    assert options.get_session_config_entry(SPIN_WAIT_KEY) == "0"  # no idle threads burning
    both_inside = threading.Barrier(2, timeout=30)  # breaks unless both run at once
    infer = two.backend.infer

    def infer_together(batch):
        both_inside.wait()
        return infer(batch)

    two.backend.infer = infer_together
    for a, b in zip(one, two.predict_batch(images)):
        assert float(np.abs(a.depth - b.depth).max()) <= DEPTH_TOL
        assert float((a.labels == b.labels).mean()) >= LABEL_AGREEMENT


def test_backends_that_cannot_split_their_threads_say_so(fake_backends):
    from xnet_model.predictor import CpuStreamsError

    with pytest.raises(CpuStreamsError, match=r"^cpu_streams: 2 needs the torch or "
                       r"onnxruntime backend on the CPU, not nan on cpu$"):
        Predictor(tiny_model(), backend="nan", cpu_streams=2)
    threads = torch.get_num_threads()
    try:  # a chain splits the backend it chose
        chained = Predictor(tiny_model(), backend="broken,torch", cpu_streams=2)
        assert chained.backend.cpu_streams == 2
        assert torch.get_num_threads() == max(1, threads // 2)
    finally:
        torch.set_num_threads(threads)


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
    # The dtype the convolutions really compute in: the encoder's first conv and the depth head.
    convs = {"encoder": next(m for m in model.encoder.modules()
                             if isinstance(m, torch.nn.Conv2d)),
             "depth head": model.heads.depth}
    seen: dict[str, list[torch.dtype]] = {name: [] for name in convs}
    for name, conv in convs.items():
        conv.register_forward_hook(lambda m, args, out, name=name: seen[name].append(out.dtype))
    out = TorchBackend(model, "cpu", precision="bf16").infer(batch())
    assert seen == {name: [torch.bfloat16] for name in convs}
    for dtypes in seen.values():
        dtypes.clear()
    ref = TorchBackend(model, "cpu").infer(batch())
    assert seen == {name: [torch.float32] for name in convs}
    assert output_problem(out, model, (1, 3, *SIZE)) is None
    assert out["depth"].dtype == np.float32  # outputs are float32 whatever ran inside
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
    assert first.cache_hit is False and first.device.index is not None
    assert_close(ref, first.infer(batch()), depth_tol=1e-3)
    second = create_backend("tensorrt", model, "cuda", precision="fp32", cache_dir=tmp_path)
    assert second.cache_hit is True
    fp16 = create_backend("tensorrt", model, "cuda", precision="fp16", cache_dir=tmp_path)
    assert_close(ref, fp16.infer(batch()), depth_tol=5e-2, agreement=0.99)
    with pytest.raises(BackendError, match="accepts exactly 1x3x64x96"):
        fp16.infer(batch(96, 128))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_cuda_matches_cpu_through_pinned_copies():
    model = tiny_model()
    ref = TorchBackend(tiny_model(), "cpu").infer(batch())
    cuda = TorchBackend(model, "cuda")
    assert cuda.device.index is not None  # 'cuda' always gets an explicit index
    for _ in range(2):  # the second call reuses the pinned staging buffers
        out = cuda.infer(batch())
        assert_close(ref, out, depth_tol=1e-3)
    assert all(b.is_pinned() for b in cuda.io._buffers.values())
    assert out["labels"].dtype == np.uint8
    half = TorchBackend(tiny_model(), "cuda", precision="fp16").infer(batch())
    assert_close(ref, half, depth_tol=5e-2, agreement=0.98)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pt2_artifact_exported_on_cpu_runs_on_cuda(tmp_path):
    from xnet_model.runtime.artifact import export_pt2_artifact

    model = tiny_model()
    path, _, _ = export_pt2_artifact(model, tmp_path / "a", *SIZE)
    image = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    ref = Predictor(tiny_model(), device="cpu").predict(image)
    got = Predictor(path, device="cuda").predict(image)
    assert float(np.abs(got.depth - ref.depth).max()) <= 1e-3
    assert float((got.labels == ref.labels).mean()) >= 0.99


# The fakes mirror the real Torch-TensorRT signatures per release: fake_torch_tensorrt.py.
EXPECTED_SETTINGS = {
    # release: (fp16 settings, int8 settings) the backend must pass
    "2.4": ({"enabled_precisions": {torch.float32, torch.float16}},
            {"enabled_precisions": {torch.float32, torch.int8}}),
    "2.9": ({"enabled_precisions": {torch.float32, torch.float16}, "use_explicit_typing": False},
            {"enabled_precisions": {torch.float32, torch.int8}, "use_explicit_typing": False}),
    "2.12": ({"enable_autocast": True, "autocast_low_precision_type": torch.float16}, {}),
    "2.13": ({"enable_autocast": True, "autocast_low_precision_type": torch.float16}, {}),
}


@pytest.mark.parametrize("release", sorted(EXPECTED_SETTINGS))
def test_tensorrt_precision_settings_follow_each_release(release):
    import fake_torch_tensorrt

    from xnet_model.runtime.tensorrt_backend import FP32_OPS, inputs_argument

    compile_fn = fake_torch_tensorrt.RELEASES[release]().dynamo.compile
    fp16, int8 = EXPECTED_SETTINGS[release]
    assert precision_settings(compile_fn, "fp32") == {}
    got = precision_settings(compile_fn, "fp16", calibration="loader")
    if "enable_autocast" in fp16:  # >= 2.10: autocast with exclusions and reference data
        assert got == {**fp16, "autocast_excluded_ops": set(FP32_OPS),
                       "autocast_calibration_dataloader": "loader"}
        assert "torch.ops.aten.layer_norm.default" in FP32_OPS
        assert "torch.ops.aten.index.Tensor" in FP32_OPS  # integer index tensors stay intact
    else:
        assert got == fp16
    assert precision_settings(compile_fn, "int8") == int8
    with pytest.raises(BackendError, match="precision 'fp8'"):
        precision_settings(compile_fn, "fp8")
    assert list(inputs_argument(compile_fn, [])) == (["inputs"] if release == "2.4"
                                                     else ["arg_inputs"])


@pytest.fixture
def fake_trt(monkeypatch):
    import fake_torch_tensorrt

    from xnet_model.runtime import tensorrt_backend

    def install(release: str, fallback_ops: bool = True):
        trt = fake_torch_tensorrt.RELEASES[release](fallback_ops)
        monkeypatch.setattr(tensorrt_backend, "import_torch_tensorrt", lambda: trt)
        # tensors on the CPU; the backend passes the device index on, as on a GPU
        monkeypatch.setattr(tensorrt_backend, "cuda_device", lambda d: torch.device("cpu", 0))
        return trt

    return install


@pytest.mark.parametrize("release", ["2.4", "2.9", "2.12", "2.13"])
def test_tensorrt_backend_runs_each_release_end_to_end(release, fake_trt, tmp_path, caplog):
    """Real __init__ / build / load / infer against a fake of each release: every argument
    the backend passes exists there, nothing is passed in vain, the device has an index, the
    caller's model is untouched, the engine file is .pt2 and the outputs are right."""
    from xnet_model.runtime.tensorrt_backend import FP16_CALIBRATION_BATCHES

    trt = fake_trt(release)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = TorchBackend(tiny_model(), "cpu").infer(batch())
    with caplog.at_level(logging.INFO):
        backend = create_backend("tensorrt", model, "cuda", cache_dir=tmp_path)  # fp16
    (call,) = trt.calls_of("compile")
    assert call["ignored"] == {} and isinstance(call["device"].gpu_id, int)
    fp16, _ = EXPECTED_SETTINGS[release]
    assert {k: call["settings"][k] for k in fp16} == fp16
    if "enable_autocast" in fp16:
        loader = call["settings"]["autocast_calibration_dataloader"]
        shapes = [tuple(b[0].shape) for b in loader]
        assert shapes == [(1, 3, *SIZE)] * FP16_CALIBRATION_BATCHES
    assert backend.engine_path.suffix == ".pt2" and trt.calls_of("save")[0]["retrace"] is False
    assert "1 subgraph(s) and" in caplog.text and "left in PyTorch" in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).device == torch.device("cpu")
    out = backend.infer(batch().astype(np.float64))  # any float input is cast to float32
    assert out["labels"].dtype == np.uint8  # narrowed on the device before the copy
    assert_close(ref, out)
    with pytest.raises(BackendError, match=r"accepts exactly 1x3x64x96.*got 1x3x96x128"):
        backend.infer(batch(96, 128))
    assert len(trt.calls_of("compile")) == 1  # a new shape is rejected, never compiled


def test_cuda_device_always_has_an_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert backends_mod.resolve_device("cuda") == torch.device("cuda", 1)
    assert backends_mod.resolve_device(None) == torch.device("cuda", 1)
    assert backends_mod.resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(BackendError, match="has 2 CUDA device"):
        backends_mod.resolve_device("cuda:3")
    import fake_torch_tensorrt

    # what Torch-TensorRT makes of a device without an index (the bug this avoids)
    assert fake_torch_tensorrt.Device._from(torch.device("cuda")).gpu_id is None


def test_dynamic_tensorrt_engine_takes_every_size_in_its_range(fake_trt, tmp_path):
    trt = fake_trt("2.13", fallback_ops=False)
    model = tiny_model(input_size=(64, 96))
    backend = create_backend("tensorrt", model, "cuda", precision="fp32", cache_dir=tmp_path,
                             min_size=(64, 64), max_size=(128, 160), max_batch=2)
    (call,) = trt.calls_of("compile")
    (spec,) = call["inputs"]
    assert spec.shape == {"min_shape": (1, 3, 64, 64), "opt_shape": (1, 3, 64, 96),
                          "max_shape": (2, 3, 128, 160)} and spec.dtype == torch.float32
    assert backend.info.accepted_sizes() == ("batch 1..2, height 64..128 and width 64..160 in "
                                             "multiples of 32")
    for h, w, n in ((64, 96, 1), (128, 160, 2), (96, 64, 1)):
        x = batch(h, w, n)
        assert_close(TorchBackend(model, "cpu").infer(x), backend.infer(x))
    with pytest.raises(BackendError, match="height 64..128"):
        backend.infer(batch(160, 160))
    with pytest.raises(BackendError, match="multiples of the network stride 32"):
        create_backend("tensorrt", model, "cuda", min_size=(60, 64), max_size=(128, 160),
                       cache_dir=tmp_path)


def test_batch_1_tensorrt_engine_runs_several_cameras_frames_in_chunks(fake_trt, tmp_path):
    """A multi-camera node hands the engine one frame per camera: an engine built for batch 1
    runs them one by one (it used to refuse the batch, failing every frame)."""
    trt = fake_trt("2.13", fallback_ops=False)
    model = tiny_model(input_size=(64, 96))
    backend = create_backend("tensorrt", model, "cuda", precision="fp32", cache_dir=tmp_path)
    assert backend.info.accepted_sizes() == "exactly 1x3x64x96 (N x 3 x H x W)"
    runs = []
    program = backend.program
    backend.program = lambda x: runs.append(x.shape[0]) or program(x)
    x = batch(64, 96, n=3)
    assert_close(TorchBackend(model, "cpu").infer(x), backend.infer(x))
    assert runs == [1, 1, 1] and len(trt.calls_of("compile")) == 1


def test_tensorrt_needs_a_network_size(fake_trt, tmp_path):
    fake_trt("2.13")
    with pytest.raises(BackendError, match="TensorRT needs a network size"):
        create_backend("tensorrt", tiny_model(input_size=None), "cuda", cache_dir=tmp_path)


def test_int8_engine_loads_without_the_calibration_folder(fake_trt, tmp_path, monkeypatch):
    """The calibration digest is stored in the cache key: once built, an int8 engine loads
    with calib=None; ModelOpt quantises a copy, never the caller's model."""
    import contextlib
    import sys
    import types

    quantized = []

    def quantize(module, config, forward_loop):
        forward_loop(module)
        module.quantized_by_modelopt = True
        quantized.append(module)
        return module

    mtq = types.SimpleNamespace(quantize=quantize, INT8_DEFAULT_CFG={"int8": True})
    utils = types.SimpleNamespace(export_torch_mode=contextlib.nullcontext)
    for name, mod in {"modelopt": types.ModuleType("modelopt"),
                      "modelopt.torch": types.ModuleType("modelopt.torch"),
                      "modelopt.torch.quantization": mtq,
                      "modelopt.torch.quantization.utils": utils}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    sys.modules["modelopt.torch"].quantization = mtq
    sys.modules["modelopt"].torch = sys.modules["modelopt.torch"]
    cv2 = pytest.importorskip("cv2")
    images = tmp_path / "calib"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((30, 40, 3), 40 * i, np.uint8))
    trt = fake_trt("2.13")
    model = tiny_model()
    built = create_backend("tensorrt", model, "cuda", precision="int8", calib=images,
                           cache_dir=tmp_path / "engines")
    assert not built.cache_hit and len(quantized) == 1
    assert quantized[0].model is not model  # ModelOpt got the InferenceGraph of a copy
    assert built.info.calibration_digest == built.calibration
    loaded = create_backend("tensorrt", model, "cuda", precision="int8", calib=None,
                            cache_dir=tmp_path / "engines")
    assert loaded.cache_hit and loaded.calibration == built.calibration
    assert len(trt.calls_of("compile")) == 1
    with pytest.raises(BackendError, match="int8 needs calib="):
        create_backend("tensorrt", model, "cuda", precision="int8", cache_dir=tmp_path / "e2")


def test_calibration_images_are_preprocessed_like_the_predictor(tmp_path):
    cv2 = pytest.importorskip("cv2")
    model = tiny_model()
    image = np.zeros((30, 40, 3), np.uint8)
    image[..., 2] = 255  # BGR on disk: pure red
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.jpg"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    files = calibration_files(tmp_path)
    assert [f.name for f in files] == ["a.png", "b.jpg"]
    batches = calibration_batches(files[:1], model.meta, SIZE)
    assert len(batches) == 1 and batches[0].shape == (1, 3, *SIZE)
    mean, std = model.cfg.data.mean, model.cfg.data.std
    np.testing.assert_allclose(batches[0][0, :, 10, 10],
                               [(1 - mean[0]) / std[0], -mean[1] / std[1], -mean[2] / std[2]],
                               rtol=1e-5)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # the bits the Predictor would feed
    np.testing.assert_array_equal(batches[0][0], Predictor(model).preprocess(rgb))
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
