"""Torch-TensorRT backend (dynamo path) with the persistent engine cache. Import-guarded.

One engine per backend, for a shape *profile*: static (N, 3, H, W) at the model's fixed network
size, or dynamic (`min_size`/`max_size`: H and W in multiples of the network stride, batch up to
`max_batch`; built from `torch_tensorrt.Input(min_shape, opt_shape, max_shape)`). An input
outside the profile is rejected with a BackendError naming the accepted sizes; nothing is ever
compiled inside `infer`. The InferenceGraph of a *copy* of the model is `torch.export`ed,
compiled with `torch_tensorrt.dynamo.compile`, saved with `torch_tensorrt.save` into the engine
cache (engine_cache.py) as `.pt2` and loaded back with `torch_tensorrt.load` (which registers the
Python runtime's engine ops when the C++ runtime is absent). A cache hit never compiles.

Version differences, read from the installed Torch-TensorRT (v2.4 ... 2.14 sources):

* `compile(exported_program, inputs, *, device=...)` in 2.4; `arg_inputs=` from 2.5.
* `device`: an explicit `torch_tensorrt.Device(gpu_id=i)`; a `torch.device('cuda')` without an
  index becomes gpu_id=None in `_Device._from` (2.4: the build fails; 2.5+: the C++ runtime
  parses the string "None").
* fp16: up to 2.9 weak typing, `enabled_precisions={fp32, fp16}` (TensorRT picks fp16 kernels);
  2.10 - 2.12 default to `use_explicit_typing=True`, which *asserts* on `enabled_precisions`;
  2.13+ removed both parameters (unknown keywords are swallowed by **kwargs). From 2.10 fp16 is
  `enable_autocast=True, autocast_low_precision_type=float16`. Without reference data or
  exclusions that pass casts every node to fp16 (integer index tensors included), so the backend
  passes calibration batches (`autocast_calibration_dataloader`: nodes whose values exceed
  fp16's safe range stay fp32) and `autocast_excluded_ops=FP32_OPS` (normalisations, softmax,
  the sigmoid depth head and every op taking integer tensors).
* int8: NVIDIA ModelOpt Q/DQ (`mtq.quantize(..., forward_loop=<calibration images>)`) on the
  copy, exported inside `export_torch_mode()`; `enabled_precisions={fp32, int8}` up to 2.9,
  strong typing from 2.10. The calibration set's digest is stored in the cache key, so a cached
  int8 engine loads without the image folder (`calib=None`).
* `save(module, path, *, output_format, inputs|arg_inputs, retrace)`: `retrace=False` keeps the
  compiled graph's (symbolic) shapes in every release.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..metadata import ArtifactInfo, ModelMetadata
from .backends import (
    Backend,
    BackendError,
    DeviceError,
    fixed_input_size,
    model_identity,
    resolve_device,
    run_in_chunks,
)
from .calibration import (
    INT8_CALIBRATION_LIMIT,
    calibration_batches,
    calibration_files,
    remembered_calibration_digest,
    synthetic_batches,
)
from .engine_cache import (
    CacheKey,
    EngineCache,
    gpu_fields,
    multiprocessor_count,
    package_version,
)
from .export import InferenceGraph, _dynamic_shapes, network_stride

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = ".pt2"  # torch >= 2.14 warns on (and plans to reject) other pt2 suffixes
FP16_CALIBRATION_BATCHES = 2  # synthetic frames traced for autocast's value-range rule
# kept in fp32 by Torch-TensorRT autocast (>= 2.10): ops that lose accuracy in fp16, and ops
# whose tensor arguments include integers (the pass casts every tensor argument)
FP32_OPS = frozenset({
    "torch.ops.aten.layer_norm.default", "torch.ops.aten.native_layer_norm.default",
    "torch.ops.aten.group_norm.default", "torch.ops.aten.native_group_norm.default",
    "torch.ops.aten.batch_norm.default",
    "torch.ops.aten._native_batch_norm_legit_no_training.default",
    "torch.ops.aten.linalg_vector_norm.default", "torch.ops.aten.mean.dim",
    "torch.ops.aten.var.correction", "torch.ops.aten.rsqrt.default",
    "torch.ops.aten.softmax.int", "torch.ops.aten._softmax.default",
    "torch.ops.aten._safe_softmax.default", "torch.ops.aten.sigmoid.default",
    "torch.ops.aten.argmax.default", "torch.ops.aten.index.Tensor",
    "torch.ops.aten.gather.default", "torch.ops.aten.embedding.default",
    "torch.ops.aten._to_copy.default", "torch.ops.aten.to.dtype",
})


def unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here (None: torch_tensorrt and CUDA are present)."""
    if importlib.util.find_spec("torch_tensorrt") is None:
        return ("torch_tensorrt is not installed (pip install torch-tensorrt matching torch "
                f"{torch.__version__.split('+')[0]}; on Jetson use NVIDIA's JetPack wheels)")
    if not torch.cuda.is_available():
        return "CUDA is not available (TensorRT needs an NVIDIA GPU)"
    return None


def import_torch_tensorrt():
    reason = unavailable_reason()
    if reason:
        raise BackendError(reason)
    try:
        import torch_tensorrt
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer
        raise BackendError(f"torch_tensorrt failed to import: {type(exc).__name__}: {exc}") \
            from exc
    return torch_tensorrt


def cuda_device(device) -> torch.device:
    """The CUDA device an engine runs on, always with an explicit index (see resolve_device)."""
    device = resolve_device(device if device is not None else "cuda")
    if device.type != "cuda":
        raise DeviceError(f"TensorRT runs on CUDA devices, not {device}")
    return device


# ---- version-dependent arguments -------------------------------------------------------------

def _params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def precision_settings(compile_fn, precision: str, calibration=None) -> dict:
    """`dynamo.compile` keyword arguments for `precision` on this Torch-TensorRT version.
    `calibration`: a DataLoader of input batches for fp16 autocast's value-range rule."""
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r} not in {PRECISIONS}")
    params = _params(compile_fn)
    if precision == "fp32":
        return {}
    if "enable_autocast" in params:  # >= 2.10: strong typing, enabled_precisions rejected
        if precision == "int8":
            return {}  # the ModelOpt Q/DQ nodes carry the types
        settings = {"enable_autocast": True, "autocast_low_precision_type": torch.float16,
                    "autocast_excluded_ops": set(FP32_OPS)}
        if calibration is not None:
            settings["autocast_calibration_dataloader"] = calibration
        return settings
    low = torch.float16 if precision == "fp16" else torch.int8
    settings: dict[str, Any] = {"enabled_precisions": {torch.float32, low}}
    if "use_explicit_typing" in params:  # 2.6 - 2.9: weak typing must stay off explicit
        settings["use_explicit_typing"] = False
    return settings


def inputs_argument(fn, inputs: list) -> dict:
    """`arg_inputs=` on releases that have it, else the older `inputs=`."""
    return {"arg_inputs" if "arg_inputs" in _params(fn) else "inputs": list(inputs)}


def save_program(trt, compiled, path: Path, example: torch.Tensor) -> None:
    """`torch_tensorrt.save` as an ExportedProgram, keeping the compiled shapes (retrace off)."""
    kwargs: dict[str, Any] = {"output_format": "exported_program",
                              **inputs_argument(trt.save, [example])}
    if "retrace" in _params(trt.save):
        kwargs["retrace"] = False
    trt.save(compiled, str(path), **kwargs)


def load_program(trt, path: Path) -> torch.nn.Module:
    """`torch_tensorrt.load` (registers the engine ops it needs) -> a callable module."""
    loaded = trt.load(str(path))
    return loaded.module() if isinstance(loaded, torch.export.ExportedProgram) else loaded


def partition_summary(module: torch.nn.Module) -> dict[str, int]:
    """How much of the graph runs in TensorRT: engines, PyTorch subgraphs, and ATen ops left
    in the top-level graph (a compiled GraphModule, or a program loaded back from disk)."""
    children = [name for name, _ in module.named_children()]
    engines = sum(name.startswith("_run_on_acc") for name in children)
    torch_subgraphs = sum(name.startswith("_run_on_gpu") for name in children)
    aten_ops = 0
    graph = getattr(module, "graph", None)
    for node in graph.nodes if graph is not None else ():
        if node.op != "call_function":
            continue
        target = str(node.target)
        if "execute_engine" in target:
            engines += 1
        elif "aten" in target:
            aten_ops += 1
    return {"engines": engines, "pytorch_subgraphs": torch_subgraphs, "aten_ops": aten_ops}


def log_partition(summary: dict[str, int], what: str) -> None:
    text = (f"{what}: {summary['engines']} TensorRT engine(s), "
            f"{summary['pytorch_subgraphs']} subgraph(s) and {summary['aten_ops']} op(s) left "
            "in PyTorch")
    (log.warning if summary["pytorch_subgraphs"] or summary["aten_ops"] else log.info)(
        text + ("" if not (summary["pytorch_subgraphs"] or summary["aten_ops"]) else
                " (unsupported ops: they run unaccelerated between engines)"))


# ---- the engine's shape profile --------------------------------------------------------------

def engine_profile(meta: ModelMetadata, stride: int, precision: str, input_size=None,
                   batch: int = 1, min_size=None, max_size=None,
                   max_batch: int | None = None) -> ArtifactInfo:
    """What the engine accepts, as an ArtifactInfo (static, or a dynamic H/W/batch range)."""
    size = fixed_input_size(meta, input_size)
    if size is None:
        raise BackendError("TensorRT needs a network size: the model fixes none "
                           "(data.input_size); pass input_size=(H, W), or min_size/max_size "
                           "for a dynamic engine")
    lo = tuple(int(v) for v in (min_size or size))
    hi = tuple(int(v) for v in (max_size or size))
    batches = (int(batch), int(max_batch or batch))
    dynamic = lo != hi
    if dynamic:
        bad = [f"{h}x{w}" for h, w in (lo, size, hi) if h % stride or w % stride]
        if bad:
            raise BackendError(f"a dynamic TensorRT engine needs sizes in multiples of the "
                               f"network stride {stride}: {', '.join(bad)}")
    if not (lo[0] <= size[0] <= hi[0] and lo[1] <= size[1] <= hi[1]):
        raise BackendError(f"input_size {size} is outside min_size {lo} .. max_size {hi}")
    if batches[0] > batches[1]:
        raise BackendError(f"batch {batches[0]} > max_batch {batches[1]}")
    return ArtifactInfo(
        format="tensorrt", program="", precision=precision, device="cuda",
        batch=(1 if batches[1] > batches[0] else batches[0], batches[1]),
        height=(lo[0], hi[0]), width=(lo[1], hi[1]), multiple=stride if dynamic else 1,
        opt_shape=(batches[0], 3, *size))


def profile_key(info: ArtifactInfo) -> tuple:
    """Cache-key shape: (N, 3, H, W) static; ((min), (opt), (max)) for a dynamic profile."""
    lo = (info.batch[0], 3, info.height[0], info.width[0])
    hi = (info.batch[1], 3, info.height[1], info.width[1])
    return tuple(info.opt_shape) if info.static else (lo, tuple(info.opt_shape), hi)


def target_fields(device: torch.device) -> dict[str, Any]:
    """The machine identity a TensorRT engine is only valid for."""
    gpu, cc = gpu_fields(device)
    return {"gpu_name": gpu, "compute_capability": cc,
            "multiprocessors": multiprocessor_count(device),
            "tensorrt": package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13",
                                        "tensorrt_libs"),
            "torch_tensorrt": package_version("torch-tensorrt", "torch_tensorrt"),
            "torch": torch.__version__}


# ---- backends --------------------------------------------------------------------------------

class _EngineRunner(Backend):
    """Runs a loaded Torch-TensorRT program whose accepted shapes are `self.info`."""

    name = "tensorrt"
    info: ArtifactInfo
    program: torch.nn.Module

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch above the engine's largest (several cameras' frames) runs in chunks."""
        return run_in_chunks(self._run, x, self.info.batch[1])

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        problem = self.info.problem(tuple(x.shape))
        if problem:
            raise BackendError(f"{problem}: TensorRT engines are built for fixed shapes; "
                               "build one for this size (xnet export --format tensorrt "
                               "--height H --width W, or --min-size/--max-size)")
        return self.program(x)

    def describe(self) -> str:
        where = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                 else str(self.device))
        return (f"tensorrt {getattr(self.trt, '__version__', '?')} ({self.info.precision}) on "
                f"{where}, accepts {self.info.accepted_sizes()}")


class TensorRTBackend(_EngineRunner):
    """`TensorRTBackend(model, device='cuda', precision='fp16', input_size=None, batch=1,
    min_size=None, max_size=None, max_batch=None, cache_dir=None, calib=None, ...)`.

    Loads the engine for this profile from the engine cache or builds it (minutes) at
    construction; the caller's model is neither moved nor modified.
    """

    def __init__(self, model: XNet, device=None, precision: str = "fp16",
                 input_size=None, batch: int = 1, min_size=None, max_size=None,
                 max_batch: int | None = None, cache_dir: str | Path | None = None,
                 calib: str | Path | None = None, calib_batches: int | None = None,
                 min_block_size: int = 5, workspace_size: int | None = None,
                 model_path: str | Path | None = None):
        if precision not in PRECISIONS:
            raise BackendError(f"precision {precision!r} not in {PRECISIONS}")
        self.trt = import_torch_tensorrt()
        device = cuda_device(device)
        super().__init__(model, device)
        self.precision = precision
        self.info = engine_profile(self.meta, network_stride(model), precision, input_size,
                                   batch, min_size, max_size, max_batch)
        self.compile_options: dict[str, Any] = {"min_block_size": int(min_block_size)}
        if workspace_size:
            self.compile_options["workspace_size"] = int(workspace_size)
        self.calib_files = calibration_files(calib) if calib is not None else []
        self.calib_batches = calib_batches
        self.digest = model_identity(model, model_path)
        self.cache = EngineCache(cache_dir, suffix=ENGINE_SUFFIX)
        self.calibration = self._calibration_digest()
        self.partition: dict[str, int] | None = None
        result = self.cache.get_or_build(self.cache_key(), self.build, self.load)
        self.program, self.cache_hit, self.engine_path = result.value, result.hit, result.path
        self.seconds = result.seconds
        log.info("TensorRT engine %s: %s in %.1f s", result.path.name,
                 "cache hit" if result.hit else "built", result.seconds)
        if self.partition is None:
            self.partition = partition_summary(self.program)
        log_partition(self.partition, f"TensorRT {precision} engine")
        self.info = dataclasses.replace(
            self.info, program=result.path.name, model_digest=self.digest,
            calibration_digest=self.calibration, target=target_fields(device),
            versions={"torch": torch.__version__, "timm": package_version("timm")},
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    # -- cache key -------------------------------------------------------------------------
    def _extra(self, calibration: str | None) -> dict:
        extra: dict[str, Any] = dict(self.compile_options)
        if self.precision == "int8":
            extra["calibration"] = calibration
            extra["modelopt"] = package_version("nvidia-modelopt", "modelopt")
        if self.precision == "fp16" and "enable_autocast" in _params(self.trt.dynamo.compile):
            extra["fp32_ops"] = hashlib.sha256("\n".join(sorted(FP32_OPS)).encode()) \
                .hexdigest()[:16]
        return extra

    def cache_key(self) -> CacheKey:
        return CacheKey.for_tensorrt(self.digest, profile_key(self.info), self.precision,
                                     self.device, self._extra(self.calibration))

    def _calibration_digest(self) -> str | None:
        """int8: the calibration set's digest (remembered per file list), or - without
        `calib` - the one stored in this model's cached int8 engine."""
        if self.precision != "int8":
            return None
        if self.calib_files:
            return remembered_calibration_digest(self.calib_files, self.cache.directory)
        template = CacheKey.for_tensorrt(self.digest, profile_key(self.info), self.precision,
                                         self.device, self._extra(None)).fields()
        for entry in sorted(self.cache.entries(), key=lambda e: e.get("created", ""),
                            reverse=True):
            fields = entry.get("key", {})
            stored = dict(fields.get("extra") or [])
            if not stored.get("calibration"):
                continue
            extra = [[k, None] if k == "calibration" else [k, v]
                     for k, v in fields.get("extra") or []]
            if {**fields, "extra": extra} == template:
                log.info("int8: using the cached engine calibrated on %s...",
                         stored["calibration"][:12])
                return stored["calibration"]
        raise BackendError("int8 needs calib=<directory of images> to build its engine (no "
                           "cached int8 engine for this model, size and GPU)")

    # -- build / load ----------------------------------------------------------------------
    def load(self, path: Path) -> torch.nn.Module:
        return load_program(self.trt, path)

    def _example(self) -> torch.Tensor:
        n, c, h, w = self.info.opt_shape
        if self.info.batch[0] != self.info.batch[1]:
            n = min(max(n, 2), self.info.batch[1])  # a batch of 1 would pin the batch dim
        return torch.randn((n, c, h, w), device=self.device)

    def _inputs(self, example: torch.Tensor) -> list:
        if self.info.static:
            return [example]
        lo, opt, hi = profile_key(self.info)
        return [self.trt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=torch.float32)]

    def _calibration_loader(self, batches: list[np.ndarray]):
        data = torch.cat([torch.from_numpy(b) for b in batches]).to(self.device)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=1)

    def _quantize(self, graph: torch.nn.Module) -> torch.nn.Module:
        try:
            import modelopt.torch.quantization as mtq
        except ImportError as exc:
            raise BackendError("int8 needs NVIDIA ModelOpt: pip install nvidia-modelopt") from exc
        if not self.calib_files:
            raise BackendError("building an int8 engine needs calib=<directory of images>")
        batches = calibration_batches(self.calib_files, self.meta, self.info.opt_shape[-2:],
                                      self.calib_batches or INT8_CALIBRATION_LIMIT)

        def forward_loop(module):
            for b in batches:
                module(torch.from_numpy(b).to(self.device))

        with torch.no_grad():
            mtq.quantize(graph, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
        return graph

    def build(self, out: Path) -> None:
        """Export a copy of the model over the profile, compile it, save it to `out`."""
        trt, compile_fn = self.trt, self.trt.dynamo.compile
        work = graph = program = compiled = None
        try:
            # a copy: the caller's model stays where it is and is never quantised in place
            work = copy.deepcopy(self.model).eval().to(self.device)
            graph = InferenceGraph(work).eval()
            export_ctx = contextlib.nullcontext()
            if self.precision == "int8":
                graph = self._quantize(graph)
                from modelopt.torch.quantization.utils import export_torch_mode

                export_ctx = export_torch_mode()
            calibration = None
            if self.precision == "fp16" and "autocast_calibration_dataloader" in \
                    _params(compile_fn):
                batches = (calibration_batches(self.calib_files, self.meta,
                                               self.info.opt_shape[-2:], self.calib_batches
                                               or FP16_CALIBRATION_BATCHES)
                           if self.calib_files else
                           synthetic_batches(self.meta, self.info.opt_shape[-2:],
                                             self.calib_batches or FP16_CALIBRATION_BATCHES))
                calibration = self._calibration_loader(batches)
            example = self._example()
            limits = {"batch": self.info.batch, "height": self.info.height,
                      "width": self.info.width}
            dynamic_shapes = None if self.info.static else _dynamic_shapes(self.info.multiple,
                                                                           limits)
            log.warning("building a TensorRT %s engine for %s (takes minutes; cached "
                        "afterwards)", self.precision, self.info.accepted_sizes())
            with torch.no_grad(), export_ctx:
                program = torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes,
                                              strict=False)
                compiled = compile_fn(
                    program, **inputs_argument(compile_fn, self._inputs(example)),
                    device=trt.Device(gpu_id=self.device.index), **self.compile_options,
                    **precision_settings(compile_fn, self.precision, calibration))
            self.partition = partition_summary(compiled)
            save_program(trt, compiled, out, example)
        finally:
            del work, graph, program, compiled
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


class TensorRTProgramBackend(_EngineRunner):
    """A `tensorrt` deploy artifact's program (no nn.Module, no build, no engine cache)."""

    def __init__(self, directory: str | Path, meta: ModelMetadata, device=None):
        self.trt = import_torch_tensorrt()
        device = cuda_device(device)
        super().__init__(None, device, meta)
        self.info = meta.artifact
        here = target_fields(device)
        built = self.info.target
        differ = [f"{k} {built.get(k)!r} (here {here.get(k)!r})"
                  for k in ("gpu_name", "compute_capability", "multiprocessors", "tensorrt")
                  if built.get(k) != here.get(k)]
        if differ:
            raise BackendError(f"TensorRT artifact {directory} was built for another machine: "
                               + "; ".join(differ) + ". Engines are specific to the GPU and the "
                               "TensorRT version: export it again on this machine")
        self.program = load_program(self.trt, Path(directory) / self.info.program)
        self.partition = partition_summary(self.program)
        log_partition(self.partition, f"TensorRT artifact {directory}")
