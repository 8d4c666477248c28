"""Engine cache: keys, hits without building, misses, corrupt entries, atomicity, locking,
read-only hits.

Runs without TensorRT: builders and loaders are fakes injected into the real cache logic, and
the TensorRT backend runs its real `__init__` / `build` / `load` / `infer` against a fake
`torch_tensorrt` whose signatures mirror a real release (fake_torch_tensorrt.py).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import threading
import time

import numpy as np
import pytest
import torch

from xnet_model.runtime import engine_cache
from xnet_model.runtime.engine_cache import (
    CacheKey,
    CacheLockTimeout,
    EngineCache,
    file_sha256,
    state_digest,
)

ENGINE_BYTES = b"serialized-engine:" + bytes(range(256)) * 64


def base_key(**changes) -> CacheKey:
    key = CacheKey("tensorrt", "a" * 64, (1, 3, 240, 320), "fp16", "NVIDIA Orin", "8.7",
                   "10.3.0", "2.5.0", "2.5.0", extra=(("min_block_size", 5),),
                   timm_version="1.0.15", code_digest="c" * 64, multiprocessors=16)
    return dataclasses.replace(key, **changes)


def test_key_digest_is_pinned():
    """The hash of base_key(). Pinned value computed once, independently of CacheKey, with
    python -c 'import hashlib, json; print(hashlib.sha256(json.dumps(FIELDS,
    sort_keys=True).encode()).hexdigest())' over the FIELDS literal below: if this changes,
    every cached engine in the field is silently orphaned, so it must be a deliberate change
    (bump FORMAT_VERSION)."""
    fields = {"kind": "tensorrt", "model_digest": "a" * 64, "input_shape": [1, 3, 240, 320],
              "precision": "fp16", "gpu_name": "NVIDIA Orin", "compute_capability": "8.7",
              "tensorrt_version": "10.3.0", "torch_tensorrt_version": "2.5.0",
              "torch_version": "2.5.0", "extra": [["min_block_size", 5]], "format_version": 2,
              "timm_version": "1.0.15", "code_digest": "c" * 64, "multiprocessors": 16}
    assert base_key().fields() == fields
    assert base_key().hexdigest() == \
        "46994c7be179a968e6f725a2afbce30e5769b261f23e83300f7d0a4d1648270d"
    assert base_key().name == \
        "tensorrt-fp16-1x3x240x320-46994c7be179a968e6f725a2"


class FakeCompiler:
    """Counts builds; `load` checks the artefact is what `build` wrote."""

    def __init__(self, payload: bytes = ENGINE_BYTES, delay: float = 0.0):
        self.payload, self.delay, self.builds, self.loads = payload, delay, 0, 0

    def build(self, tmp):
        time.sleep(self.delay)
        self.builds += 1
        tmp.write_bytes(self.payload)

    def load(self, path):
        data = path.read_bytes()
        if data != self.payload:
            raise ValueError("not an engine")
        self.loads += 1
        return {"engine": data}


@pytest.mark.parametrize("field,value", [
    ("model_digest", "b" * 64), ("input_shape", (1, 3, 480, 640)),
    ("input_shape", (2, 3, 240, 320)),
    ("precision", "fp32"), ("precision", "int8"), ("gpu_name", "NVIDIA H100"),
    ("compute_capability", "9.0"), ("tensorrt_version", "10.4.0"),
    ("torch_tensorrt_version", "2.6.0"), ("torch_version", "2.6.0"), ("kind", "onnx"),
    ("extra", (("min_block_size", 5), ("calibration", "c" * 64))),
    ("timm_version", "1.0.16"), ("code_digest", "d" * 64), ("multiprocessors", 8),
    ("input_shape", ((1, 3, 64, 64), (1, 3, 240, 320), (1, 3, 512, 512))),
])
def test_every_key_field_changes_the_entry(field, value, tmp_path):
    key, changed = base_key(), base_key(**{field: value})
    assert changed.hexdigest() != key.hexdigest()
    cache = EngineCache(tmp_path)
    assert cache.paths(changed) != cache.paths(key)
    fake = FakeCompiler()
    cache.get_or_build(key, fake.build, fake.load)
    result = cache.get_or_build(changed, fake.build, fake.load)
    assert not result.hit and fake.builds == 2


def test_key_is_stable_and_readable():
    assert base_key().hexdigest() == base_key().hexdigest()
    assert base_key().name.startswith("tensorrt-fp16-1x3x240x320-")
    fields = base_key().fields()
    assert fields["input_shape"] == [1, 3, 240, 320] and fields["gpu_name"] == "NVIDIA Orin"
    assert fields["torch_version"] == "2.5.0" and fields["format_version"] == 2
    dynamic = base_key(input_shape=((1, 3, 64, 64), (1, 3, 240, 320), (2, 3, 512, 512)))
    assert dynamic.name.startswith("tensorrt-fp16-1x3x64x64-1x3x240x320-2x3x512x512-")


def test_code_digest_covers_the_model_code(monkeypatch, tmp_path):
    """A change to any graph-defining source file changes the digest (so the key)."""
    import shutil
    from pathlib import Path

    import xnet_model

    root = Path(xnet_model.__file__).parent
    copy = tmp_path / "pkg"
    for name in engine_cache.MODEL_CODE:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, copy / name)
    assert "xnet.py" in engine_cache.MODEL_CODE and "runtime/export.py" in engine_cache.MODEL_CODE
    monkeypatch.setattr(engine_cache, "__file__", str(copy / "runtime" / "engine_cache.py"))
    engine_cache.code_digest.cache_clear()
    try:
        before = engine_cache.code_digest()
        assert before == engine_cache.code_digest.__wrapped__()
        with open(copy / "modules.py", "a") as f:
            f.write("\n# a comment is a code change too\n")
        engine_cache.code_digest.cache_clear()
        assert engine_cache.code_digest() != before
    finally:
        engine_cache.code_digest.cache_clear()


def test_for_tensorrt_reads_gpu_and_versions(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Orin")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 7))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: type("P", (), {"multi_processor_count": 16}))
    versions = {"tensorrt": "10.3.0", "torch-tensorrt": "2.5.0"}
    monkeypatch.setattr(engine_cache, "package_version",
                        lambda *names: next((versions[n] for n in names if n in versions), None))
    key = CacheKey.for_tensorrt("d" * 64, (1, 3, 240, 320), "fp16", "cuda:0", {"x": 1})
    assert (key.gpu_name, key.compute_capability) == ("NVIDIA Orin", "8.7")
    assert (key.tensorrt_version, key.torch_tensorrt_version) == ("10.3.0", "2.5.0")
    assert key.torch_version == torch.__version__ and key.extra == (("x", 1),)
    assert key.multiprocessors == 16 and key.code_digest == engine_cache.code_digest()
    assert key.timm_version == engine_cache.package_version("timm")
    monkeypatch.setattr(torch.cuda, "get_device_properties",  # Orin NX: same sm 8.7, 8 SMs
                        lambda device=None: type("P", (), {"multi_processor_count": 8}))
    orin_nx = CacheKey.for_tensorrt("d" * 64, (1, 3, 240, 320), "fp16", "cuda:0", {"x": 1})
    assert orin_nx.hexdigest() != key.hexdigest()

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    other_gpu = CacheKey.for_tensorrt("d" * 64, (1, 3, 240, 320), "fp16", "cuda:0", {"x": 1})
    assert other_gpu.hexdigest() != key.hexdigest()


def test_cpu_device_has_no_gpu_fields():
    assert engine_cache.gpu_fields("cpu") == (None, None)
    assert engine_cache.package_version("no-such-package-xnet") is None
    assert engine_cache.package_version("torch").startswith(torch.__version__.split("+")[0])


def test_hit_loads_without_building(tmp_path, caplog):
    cache, key = EngineCache(tmp_path, suffix=".ep"), base_key()
    fake = FakeCompiler()
    first = cache.get_or_build(key, fake.build, fake.load)
    assert not first.hit and fake.builds == 1 and first.value == {"engine": ENGINE_BYTES}

    def must_not_build(tmp):
        raise AssertionError("a cache hit must not compile")

    with caplog.at_level(logging.INFO):
        second = EngineCache(tmp_path, suffix=".ep").get_or_build(key, must_not_build, fake.load)
    assert second.hit and second.value == {"engine": ENGINE_BYTES} and fake.loads == 2
    assert "engine cache hit" in caplog.text
    artefact, sidecar = cache.paths(key)
    assert artefact.suffix == ".ep" and artefact == second.path
    meta = json.loads(sidecar.read_text())
    assert meta["key"] == key.fields() and meta["key_hash"] == key.hexdigest()
    assert meta["sha256"] == file_sha256(artefact) and meta["size"] == len(ENGINE_BYTES)


def _corrupt_truncate(artefact, sidecar):
    artefact.write_bytes(artefact.read_bytes()[:100])


def _corrupt_flip_byte(artefact, sidecar):
    data = bytearray(artefact.read_bytes())
    data[500] ^= 0xFF
    artefact.write_bytes(bytes(data))


def _corrupt_sidecar_json(artefact, sidecar):
    sidecar.write_text("{not json")


def _remove_sidecar(artefact, sidecar):
    sidecar.unlink()


def _remove_artefact(artefact, sidecar):
    artefact.unlink()


def _edit_sidecar_key(artefact, sidecar):
    meta = json.loads(sidecar.read_text())
    meta["key"]["precision"] = "fp32"
    sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize("corrupt,reason", [
    (_corrupt_truncate, "truncated"), (_corrupt_flip_byte, "sha256"),
    (_corrupt_sidecar_json, "unreadable sidecar"), (_remove_sidecar, "unreadable sidecar"),
    (_remove_artefact, "artefact unreadable"), (_edit_sidecar_key, "key fields differ"),
])
def test_corrupt_entry_is_discarded_and_rebuilt(corrupt, reason, tmp_path, caplog):
    cache, key = EngineCache(tmp_path), base_key()
    fake = FakeCompiler()
    cache.get_or_build(key, fake.build, fake.load)
    corrupt(*cache.paths(key))
    assert reason in cache.check(key)
    with caplog.at_level(logging.WARNING):
        result = cache.get_or_build(key, fake.build, fake.load)
    assert not result.hit and fake.builds == 2 and result.value == {"engine": ENGINE_BYTES}
    assert "is corrupt" in caplog.text and reason in caplog.text and "rebuilding" in caplog.text
    assert cache.check(key) is None


def test_entry_the_loader_rejects_is_rebuilt(tmp_path, caplog):
    """Checksums match but the runtime cannot deserialize it (e.g. built by a buggy run)."""
    cache, key = EngineCache(tmp_path), base_key()
    bad = FakeCompiler(payload=b"garbage written by an older build")
    cache.store(key, bad.build)
    good = FakeCompiler()
    with caplog.at_level(logging.WARNING):
        result = cache.get_or_build(key, good.build, good.load)
    assert not result.hit and good.builds == 1
    assert "loading failed: ValueError: not an engine" in caplog.text


def test_failed_build_leaves_no_entry_and_no_temp_files(tmp_path):
    cache, key = EngineCache(tmp_path), base_key()

    def half_written(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.get_or_build(key, half_written, FakeCompiler().load)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key.name}.lock"]
    assert cache.check(key) == "absent"
    fake = FakeCompiler()
    assert not cache.get_or_build(key, fake.build, fake.load).hit


def test_lock_times_out_while_another_process_builds(tmp_path):
    cache, key = EngineCache(tmp_path, lock_timeout=0.3), base_key()
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / f"{key.name}.lock", "a+") as held:  # another open file description
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        t0 = time.monotonic()
        with pytest.raises(CacheLockTimeout, match="still locked"):
            cache.get_or_build(key, FakeCompiler().build, FakeCompiler().load)
        assert time.monotonic() - t0 >= 0.3


def test_concurrent_requests_build_once(tmp_path):
    key = base_key()
    fake = FakeCompiler(delay=0.5)
    results = []

    def request():
        results.append(EngineCache(tmp_path).get_or_build(key, fake.build, fake.load))

    threads = [threading.Thread(target=request) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.builds == 1
    assert sorted(r.hit for r in results) == [False, True, True]


def test_entries_lists_sidecars(tmp_path):
    cache = EngineCache(tmp_path)
    fake = FakeCompiler()
    for precision in ("fp16", "fp32"):
        cache.get_or_build(base_key(precision=precision), fake.build, fake.load)
    assert sorted(e["key"]["precision"] for e in cache.entries()) == ["fp16", "fp32"]


def test_default_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XNET_ENGINE_CACHE", str(tmp_path / "engines"))
    assert EngineCache().directory == tmp_path / "engines"
    monkeypatch.delenv("XNET_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache.default_cache_dir() == tmp_path / "xdg" / "xnet" / "engines"


def test_state_digest_tracks_weights_and_config():
    from xnet_model import build_model

    spec = {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"}}
    torch.manual_seed(0)
    model = build_model(spec)
    digest = state_digest(model, model.cfg.to_json())
    assert digest == state_digest(model, model.cfg.to_json())
    assert digest != state_digest(model, model.cfg.to_json() + " ")
    with torch.no_grad():
        model.heads.depth.bias += 1e-3
    assert digest != state_digest(model, model.cfg.to_json())



# ---- read-only caches ----------------------------------------------------------------------

def test_hit_needs_no_write_access(tmp_path, monkeypatch):
    """A cache built by root (or mounted read-only): a hit opens no lock file and writes
    nothing; a miss there says what to do instead of a bare PermissionError."""
    cache, key = EngineCache(tmp_path), base_key()
    fake = FakeCompiler()
    cache.get_or_build(key, fake.build, fake.load)
    before = sorted(p.name for p in tmp_path.iterdir())

    def no_lock(self, key):
        raise AssertionError("a hit must not take the build lock")

    monkeypatch.setattr(EngineCache, "lock", no_lock)
    result = EngineCache(tmp_path).get_or_build(key, fake.build, fake.load)
    assert result.hit and fake.builds == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_miss_in_an_unwritable_cache_says_what_to_do(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def read_only_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wa+x") and str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    with pytest.raises(engine_cache.CacheNotWritable, match="not writable.*XNET_ENGINE_CACHE"):
        EngineCache(tmp_path).get_or_build(base_key(), FakeCompiler().build,
                                           FakeCompiler().load)


# ---- the TensorRT backend through its real __init__ / build / load, torch_tensorrt faked -----

@pytest.fixture
def fake_trt(monkeypatch):
    """Installs a fake torch_tensorrt of the requested release; tensors stay on the CPU (an
    explicit device index, as the backend always passes one)."""
    import fake_torch_tensorrt

    from xnet_model.runtime import tensorrt_backend

    def install(release: str = "2.13", fallback_ops: bool = False):
        trt = fake_torch_tensorrt.RELEASES[release](fallback_ops)
        monkeypatch.setattr(tensorrt_backend, "import_torch_tensorrt", lambda: trt)
        monkeypatch.setattr(tensorrt_backend, "cuda_device",
                            lambda device: torch.device("cpu", 0))
        return trt

    return install


def tiny(input_size=(64, 96)):
    from xnet_model import build_model

    torch.manual_seed(0)
    return build_model({"encoder": {"name": "test_convnext"},
                        "decoder": {"name": "test_convnext"}, "depth": {"max_depth": 10.0},
                        "semantic": {"num_classes": 10},
                        "data": {"input_size": list(input_size)}}).eval()


def test_tensorrt_engine_is_built_once_then_loaded_from_the_cache(tmp_path, fake_trt):
    from xnet_model.runtime.tensorrt_backend import TensorRTBackend

    trt = fake_trt("2.13")
    model = tiny()
    first = TensorRTBackend(model, precision="fp32", cache_dir=tmp_path)
    assert first.cache_hit is False and first.engine_path.suffix == ".pt2"
    (compile_call,) = trt.calls_of("compile")
    # what build received: the static profile as one float32 example at the network size
    (example,) = compile_call["inputs"]
    assert tuple(example.shape) == (1, 3, 64, 96) and example.dtype == torch.float32
    assert compile_call["device"].gpu_id == 0 and compile_call["ignored"] == {}
    (save_call,) = trt.calls_of("save")
    assert save_call["path"].endswith(".pt2") and save_call["retrace"] is False
    assert save_call["output_format"] == "exported_program"
    assert [tuple(t.shape) for t in save_call["inputs"]] == [(1, 3, 64, 96)]
    assert len(trt.calls_of("load")) == 1  # torch_tensorrt.load, not torch.export.load
    out = first.infer(np.zeros((1, 3, 64, 96), np.float32))  # the loaded program serves
    assert out["depth"].shape == (1, 64, 96) and out["labels"].dtype == np.uint8

    second = TensorRTBackend(model, precision="fp32", cache_dir=tmp_path)
    assert second.cache_hit is True and len(trt.calls_of("compile")) == 1
    fp16 = TensorRTBackend(model, precision="fp16", cache_dir=tmp_path)
    bigger = TensorRTBackend(model, precision="fp32", input_size=(96, 128), cache_dir=tmp_path)
    assert not fp16.cache_hit and not bigger.cache_hit and len(trt.calls_of("compile")) == 3
    assert len(list(tmp_path.glob("*.pt2"))) == 3
    key = second.cache_key()
    assert key.kind == "tensorrt" and key.input_shape == (1, 3, 64, 96)
    assert key.precision == "fp32" and key.extra == (("min_block_size", 5),)
