"""`xnet doctor`: what this machine can run, and the reason for every "no".

    xnet doctor [--model DIR|VARIANT] [--backend auto] [--device D] [--cache-dir DIR] [--json]

Rows (`Check`: name, ok, detail, reason; ok None = information) for Python / torch / CUDA /
cuDNN and the GPUs, timm, torch_tensorrt / TensorRT / ModelOpt / onnxruntime(-gpu) / inductor,
the engine cache (writable? what it holds, which entries this machine cannot use), the model
(a saved directory, a deploy artifact or a variant name; nothing is built or loaded), which
backend `auto` would pick and why, whether the requested backend can run, and the checks other
packages contribute through the setuptools entry-point group `xnet.doctor` (callables returning
a list of {"name", "ok", "detail"[, "reason"]} dicts; the ROS package's say whether rclpy and its
messages import). Exit code 1 only when the requested backend cannot run here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from .compat import SUPPORTED_TIMM, support_problem, torch_problem
from .engine_cache import EngineCache, package_version

ENTRY_POINT_GROUP = "xnet.doctor"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: information, not a capability
    detail: str = ""
    reason: str = ""  # why not, when ok is False
    group: str = ""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


# ---- environment -----------------------------------------------------------------------------

def environment_checks() -> list[Check]:
    rows = [Check("python", None, f"{platform.python_version()} ({sys.executable})", group="env"),
            Check("torch", torch_problem() is None, f"{torch.__version__}",
                  torch_problem() or "", group="env")]
    cuda_build = torch.version.cuda
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(f"cuda:{i} {p.name} (sm {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} "
                        f"GiB, {p.multi_processor_count} SMs)")
        rows.append(Check("cuda", True, f"CUDA {cuda_build}; " + "; ".join(gpus), group="env"))
    else:
        if cuda_build is None:
            why = "this torch is a CPU-only build"
        else:
            try:
                torch.cuda.init()
                why = "no CUDA device visible"
            except Exception as exc:  # the driver's own message
                why = _short(exc)
        rows.append(Check("cuda", False, f"torch built for CUDA {cuda_build}", why, "env"))
    if not torch.backends.cudnn.is_available():
        rows.append(Check("cudnn", False, "", "cuDNN is not available to this torch", "env"))
    else:
        usable = torch.cuda.is_available()
        rows.append(Check("cudnn", usable, str(torch.backends.cudnn.version()),
                          "" if usable else "installed, but there is no CUDA device", "env"))
    timm_version = package_version("timm")
    rows.append(Check("timm", timm_version is not None and
                      support_problem("timm", timm_version, SUPPORTED_TIMM) is None,
                      timm_version or "", support_problem("timm", timm_version, SUPPORTED_TIMM)
                      or "", "env"))
    return rows


def _import_check(name: str, module: str, dists: tuple[str, ...], why_needed: str) -> Check:
    if importlib.util.find_spec(module) is None:
        return Check(name, False, "", f"not installed ({why_needed})", "backends")
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install (missing libnvinfer, ABI mismatch)
        return Check(name, False, "", f"import failed: {_short(exc)}", "backends")
    version = package_version(*dists) or str(getattr(mod, "__version__", "?"))
    return Check(name, True, version, group="backends")


def backend_checks() -> list[Check]:
    rows = [
        _import_check("torch_tensorrt", "torch_tensorrt", ("torch-tensorrt", "torch_tensorrt"),
                      "the tensorrt backend needs it"),
        _import_check("tensorrt", "tensorrt",
                      ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"),
                      "the tensorrt backend needs it"),
        _import_check("modelopt", "modelopt", ("nvidia-modelopt",), "only int8 engines need it"),
    ]
    ort = _import_check("onnxruntime", "onnxruntime", ("onnxruntime-gpu", "onnxruntime"),
                        "the onnxruntime backend needs it")
    rows.append(ort)
    if ort.ok:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        gpu = "CUDAExecutionProvider" in providers
        rows.append(Check("onnxruntime-gpu", gpu, ", ".join(providers),
                          "" if gpu else "no CUDAExecutionProvider (pip install onnxruntime-gpu)",
                          "backends"))
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    triton = importlib.util.find_spec("triton") is not None
    rows.append(Check("inductor", bool(compiler) or triton,
                      f"C++ compiler: {compiler or 'none'}; triton: {'yes' if triton else 'no'}",
                      "" if compiler or triton else "no C++ compiler for CPU kernels and no "
                      "triton for GPU kernels", "backends"))
    return rows


# ---- engine cache ----------------------------------------------------------------------------

def _writable(directory: Path) -> tuple[bool, str]:
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return True, ""
    return False, f"{probe} is not writable by uid {os.getuid()}: hits still load, misses " \
                  "cannot be built (pre-build as the owner with xnet export)"


def cache_checks(cache_dir: str | Path | None = None) -> list[Check]:
    cache = EngineCache(cache_dir)
    writable, why = _writable(cache.directory)
    rows = [Check("engine cache", writable, str(cache.directory), why, "cache")]
    entries = [e for e in cache.entries() if "key" in e]
    if not entries:
        rows.append(Check("cache entries", None, "none", group="cache"))
        return rows
    size = sum(e.get("size", 0) for e in entries)
    here = {"torch_version": torch.__version__,
            "tensorrt_version": package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13",
                                                "tensorrt_libs"),
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    stale = 0
    for e in entries:
        key = e["key"]
        differs = [k for k, v in here.items() if key.get(k) not in (None, v)]
        stale += bool(differs)
        shape = key.get("input_shape")
        rows.append(Check(f"  {key.get('kind')} {key.get('precision')}", None,
                          f"{Path(e['path']).name} shape {shape}, gpu {key.get('gpu_name')}, "
                          f"torch {key.get('torch_version')}, TensorRT "
                          f"{key.get('tensorrt_version')}, built {e.get('created', '?')}"
                          + (f" [not for this machine: {', '.join(differs)}]" if differs
                             else ""), group="cache"))
    rows.insert(1, Check("cache entries", None, f"{len(entries)} entries, {size / 2**20:.0f} MiB;"
                         f" {stale} built for another torch/TensorRT/GPU (safe to delete)",
                         group="cache"))
    return rows


# ---- the model and backend choice ------------------------------------------------------------

def describe_model(spec: str) -> tuple[Check, Any, Path | None]:
    """(row, ModelMetadata or None, saved dir / artifact dir or None); builds nothing."""
    from ..metadata import ModelMetadata
    from .artifact import ArtifactError, is_artifact, read_artifact

    path = Path(spec)
    try:
        if path.is_dir() and is_artifact(path):
            meta = read_artifact(path)
            info = meta.artifact
            return (Check("model", True, f"{meta.name}: {info.format} deploy artifact "
                          f"({info.precision}, {info.device}), accepts {info.accepted_sizes()}",
                          group="model"), meta, path)
        from ..persistence import read_model_config

        cfg = read_model_config(path) if path.is_dir() else None
        if cfg is None:
            from ..config import resolve

            cfg = resolve(spec)
        meta = ModelMetadata.from_config(cfg, size_multiple=32)
        size = "x".join(map(str, meta.input_size)) if meta.input_size else "free (stride)"
        kind = "saved model" if path.is_dir() else "variant (random weights)"
        return (Check("model", True, f"{meta.name}: {kind}, tasks {', '.join(meta.tasks)}, "
                      f"network size {size}", group="model"), meta, path if path.is_dir()
                else None)
    except (ArtifactError, ValueError, OSError) as exc:
        return Check("model", False, spec, _short(exc), "model"), None, None


def backend_problem(name: str, device: torch.device, meta=None) -> str | None:
    """Why backend `name` cannot run on `device` for `meta` (None: it can)."""
    from .artifact import FORMAT_BACKENDS
    from .tensorrt_backend import unavailable_reason

    info = getattr(meta, "artifact", None)
    if info is not None:
        if name not in FORMAT_BACKENDS[info.format]:
            return (f"a {info.format} deploy artifact runs with "
                    f"{', '.join(FORMAT_BACKENDS[info.format])}, not {name}")
        if info.format == "tensorrt":
            return unavailable_reason()
        return None
    if name in ("torch", "auto"):
        return None
    if name == "inductor":
        if device.type == "cuda":
            return None if importlib.util.find_spec("triton") else "triton is not installed"
        return None if shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") \
            else "no C++ compiler for Inductor's CPU kernels"
    if name == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        if device.type == "cuda":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return "onnxruntime has no CUDA provider (install onnxruntime-gpu)"
        return None
    if name == "tensorrt":
        if device.type != "cuda":
            return f"TensorRT runs on CUDA devices, not {device}"
        reason = unavailable_reason()
        if reason is None and meta is not None and meta.input_size is None:
            reason = "the model has no fixed network size (data.input_size)"
        return reason
    return f"unknown backend {name!r}"


def selection_checks(meta, model_dir: Path | None, backend: str, device: str | None,
                     cache_dir=None) -> tuple[list[Check], bool]:
    """Which backend `auto` picks and why; whether `backend` can run. (rows, can_run)."""
    from .backends import BackendError, resolve_device
    from .select import auto_candidates

    try:
        dev = resolve_device(device)
    except BackendError as exc:
        return [Check("device", False, str(device), str(exc), "backend")], False
    rows = [Check("device", True, str(dev), group="backend")]
    info = getattr(meta, "artifact", None)
    if info is not None:
        why = backend_problem(info.format if info.format == "tensorrt" else "pt2", dev, meta)
        rows.append(Check("auto would pick", why is None, f"the artifact's {info.format} program",
                          why or "", "backend"))
    else:
        candidates, skipped = auto_candidates(dev, meta)
        name, options = candidates[0]
        pick = " ".join([name, *options.values()])
        because = "first usable in the preference order " + " -> ".join(
            " ".join([n, *o.values()]) for n, o in candidates)
        if skipped:
            because += "; skipped: " + "; ".join(skipped)
        if name == "tensorrt" and model_dir is not None and meta is not None:
            because += "; " + _engine_state(meta, model_dir, dev, cache_dir)
        rows.append(Check("auto would pick", True, f"{pick} ({because})", group="backend"))
    names = [n.strip() for n in backend.split(",") if n.strip()]
    problems = {n: backend_problem(n, dev, meta) for n in names}
    can_run = any(p is None for p in problems.values())
    rows.append(Check(f"requested backend {backend}", can_run,
                      f"on {dev}" + ("" if len(names) == 1 else
                                     f": {next((n for n in names if problems[n] is None), '-')}"),
                      "; ".join(f"{n}: {p}" for n, p in problems.items() if p), "backend"))
    return rows, can_run


def _engine_state(meta, model_dir: Path, device: torch.device, cache_dir) -> str:
    """Whether the fp16 engine `auto` would use is already in the engine cache."""
    try:
        from ..persistence import model_digest
        from .engine_cache import CacheKey
        from .tensorrt_backend import FP32_OPS, _params, engine_profile, import_torch_tensorrt

        trt = import_torch_tensorrt()
        info = engine_profile(meta, 1, "fp16")
        extra: dict[str, Any] = {"min_block_size": 5}
        if "enable_autocast" in _params(trt.dynamo.compile):
            import hashlib

            extra["fp32_ops"] = hashlib.sha256("\n".join(sorted(FP32_OPS)).encode()) \
                .hexdigest()[:16]
        key = CacheKey.for_tensorrt(model_digest(model_dir), tuple(info.opt_shape), "fp16",
                                    device, extra)
        hit = EngineCache(cache_dir).check(key) is None
    except Exception as exc:  # informational only
        return f"engine cache state unknown ({_short(exc)})"
    return ("its engine is cached: starts in seconds" if hit else
            "no cached engine: the first start builds it (minutes; pre-build with xnet export "
            "--format tensorrt)")


# ---- contributed checks (ROS) ----------------------------------------------------------------

def contributed_checks() -> list[Check]:
    """Rows from the `xnet.doctor` entry points (each: a callable returning a list of dicts)."""
    try:
        points = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # broken distribution metadata
        return [Check(ENTRY_POINT_GROUP, False, "", _short(exc), "plugins")]
    if not points:
        return [Check("ros", None, f"no '{ENTRY_POINT_GROUP}' checks registered (the ROS "
                      "package is not installed as a Python distribution here)", group="plugins")]
    rows = []
    for point in points:
        try:
            for item in point.load()() or []:
                rows.append(Check(str(item.get("name", point.name)), item.get("ok"),
                                  str(item.get("detail", "")), str(item.get("reason", "")),
                                  point.name))
        except Exception as exc:  # a plugin must never break the doctor
            rows.append(Check(point.name, False, point.value, f"check failed: {_short(exc)}",
                              point.name))
    return rows


# ---- command line ----------------------------------------------------------------------------

def run_checks(model: str | None = None, backend: str = "auto", device: str | None = None,
               cache_dir=None, plugins: bool = True) -> tuple[list[Check], bool]:
    """Every row, and whether `backend` can run here (the exit status)."""
    rows = environment_checks() + backend_checks() + cache_checks(cache_dir)
    meta = model_dir = None
    if model:
        row, meta, model_dir = describe_model(model)
        rows.append(row)
    selection, can_run = selection_checks(meta, model_dir, backend, device, cache_dir)
    rows += selection
    if plugins:
        rows += contributed_checks()
    return rows, can_run


def format_rows(rows: list[Check]) -> str:
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        mark = {True: " ok ", False: " NO ", None: "    "}[r.ok]
        lines.append(f"[{mark}] {r.name:<{width}}  {r.detail}")
        if r.ok is False and r.reason:
            lines.append(f"       {'':<{width}}  why: {r.reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="xnet doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="saved model directory, deploy artifact or variant name")
    p.add_argument("--backend", default="auto", help="the backend you mean to use (exit 1 if "
                   "it cannot run here); a chain 'a,b' needs one of them")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--cache-dir", type=Path, help="engine cache (default $XNET_ENGINE_CACHE "
                   "or ~/.cache/xnet/engines)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    rows, can_run = run_checks(args.model, args.backend, args.device, args.cache_dir)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "backend_can_run": can_run},
                         indent=1))
    else:
        print(format_rows(rows))
    return 0 if can_run else 1
