"""Torch-TensorRT backend (dynamo path) with the persistent engine cache. Import-guarded.

One engine per input shape (N, 3, H, W): the InferenceGraph is `torch.export`ed at that shape,
compiled with `torch_tensorrt.dynamo.compile`, saved with
`torch_tensorrt.save(..., output_format='exported_program')` into the engine cache
(engine_cache.py: keyed by model digest, shape, precision, GPU, compute capability, TensorRT /
Torch-TensorRT / torch versions) and loaded back with `torch.export.load(...).module()`. A cache
hit never compiles. `xnet export --format tensorrt` pre-builds the entry (e.g. on the Jetson
before deployment); the node then starts in seconds.

Precision, by Torch-TensorRT version (detected from `dynamo.compile`'s signature):

* fp32: the defaults.
* fp16: releases with `enable_autocast` (the TensorRT >= 10.12 strong-typing releases, where
  `enabled_precisions` is deprecated and silently ignored) get `use_explicit_typing=True,
  enable_autocast=True, autocast_low_precision_type=torch.float16` (rule-based autocast keeps
  numerically sensitive layers in fp32). Older releases get `enabled_precisions={fp32, fp16}`
  (weak typing: TensorRT picks fp16 kernels where faster).
* int8: post-training quantisation through NVIDIA ModelOpt (`nvidia-modelopt`; Torch-TensorRT's
  own int8 calibrators were TorchScript-only and are gone from the dynamo path):
  `mtq.quantize(graph, mtq.INT8_DEFAULT_CFG, forward_loop=<calibration images>)` inserts Q/DQ
  nodes, the graph is exported inside `modelopt...export_torch_mode()` and compiled with
  `enabled_precisions={fp32, int8}` (old) or `use_explicit_typing=True` (new). Needs `calib=`
  (a directory of images); its digest is part of the cache key.

None of this runs on the machines the tests run on (no CUDA, no TensorRT): the tests cover the
cache logic with fakes and skip this module's GPU path with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import logging
from pathlib import Path

import numpy as np
import torch

from ..xnet import XNet
from .backends import (
    Backend,
    BackendError,
    fixed_input_size,
    graph_outputs_to_numpy,
    model_identity,
    resolve_device,
)
from .engine_cache import CacheKey, EngineCache
from .export import InferenceGraph

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ENGINE_SUFFIX = ".ep"  # an ExportedProgram holding the serialized TensorRT engine(s)


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


def precision_settings(compile_fn, precision: str) -> dict:
    """`dynamo.compile` keyword arguments for `precision` on this Torch-TensorRT version."""
    params = inspect.signature(compile_fn).parameters
    strong_typing = "enable_autocast" in params
    if precision == "fp32":
        return {}
    if precision == "fp16":
        if strong_typing:
            return {"use_explicit_typing": True, "enable_autocast": True,
                    "autocast_low_precision_type": torch.float16}
        return {"enabled_precisions": {torch.float32, torch.float16}}
    if precision == "int8":
        if strong_typing:
            return {"use_explicit_typing": True}
        return {"enabled_precisions": {torch.float32, torch.int8}}
    raise BackendError(f"precision {precision!r} not in {PRECISIONS}")


def inputs_argument(fn, example: torch.Tensor) -> dict:
    """`arg_inputs=` on releases that have it, else the older `inputs=`."""
    name = "arg_inputs" if "arg_inputs" in inspect.signature(fn).parameters else "inputs"
    return {name: [example]}


def calibration_files(directory: str | Path) -> list[Path]:
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BackendError(f"no calibration images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return files


def calibration_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def calibration_batches(files: list[Path], cfg, size: tuple[int, int],
                        limit: int = 256) -> list[np.ndarray]:
    """Images as normalised (1, 3, H, W) float32 batches, preprocessed like `Predictor`."""
    import cv2

    mean = np.asarray(cfg.data.mean, np.float32) * 255.0
    std = np.asarray(cfg.data.std, np.float32) * 255.0
    batches = []
    for path in files[:limit]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BackendError(f"unreadable calibration image {path}")
        image = cv2.resize(image[..., ::-1], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        x = (image.astype(np.float32) - mean) / std
        batches.append(np.ascontiguousarray(x.transpose(2, 0, 1))[None])
    return batches


class TensorRTBackend(Backend):
    """`TensorRTBackend(model, device='cuda', precision='fp16', input_size=None, batch=1,
    cache_dir=None, calib=None)`; engines come from / go to the engine cache.

    With a fixed network size (`input_size=` or the model's data.input_size) the engine is
    loaded or built at construction; other shapes are built on first use (minutes).
    """

    name = "tensorrt"

    def __init__(self, model: XNet, device=None, precision: str = "fp16",
                 input_size=None, batch: int = 1, cache_dir: str | Path | None = None,
                 calib: str | Path | None = None, min_block_size: int = 5,
                 workspace_size: int | None = None, model_path: str | Path | None = None):
        if precision not in PRECISIONS:
            raise BackendError(f"precision {precision!r} not in {PRECISIONS}")
        if precision == "int8" and calib is None:
            raise BackendError("int8 needs a calibration set: calib=<directory of images>")
        self.trt = import_torch_tensorrt()
        device = resolve_device(device if device is not None else "cuda")
        if device.type != "cuda":
            raise BackendError(f"TensorRT runs on CUDA devices, not {device}")
        super().__init__(model.eval(), device)
        self.precision, self.calib = precision, calib
        self.compile_options = {"min_block_size": min_block_size}
        if workspace_size:
            self.compile_options["workspace_size"] = int(workspace_size)
        self.calib_files = calibration_files(calib) if calib is not None else []
        self.digest = model_identity(model, model_path)
        self.cache = EngineCache(cache_dir, suffix=ENGINE_SUFFIX)
        self.engines: dict[tuple, torch.nn.Module] = {}
        self.cache_hits: dict[tuple, bool] = {}
        size = fixed_input_size(model, input_size)
        if size is not None:
            self.engine_for((int(batch), 3, *size))

    def cache_key(self, shape: tuple) -> CacheKey:
        extra = dict(self.compile_options)
        if self.calib_files:
            extra["calibration"] = calibration_digest(self.calib_files)
        return CacheKey.for_tensorrt(self.digest, shape, self.precision, self.device, extra)

    def engine_for(self, shape: tuple) -> torch.nn.Module:
        shape = tuple(int(s) for s in shape)
        if shape not in self.engines:
            result = self.cache.get_or_build(self.cache_key(shape),
                                             lambda tmp: self.build(shape, tmp), self.load)
            self.engines[shape], self.cache_hits[shape] = result.value, result.hit
            log.info("TensorRT engine %s: %s (%.1f s)", shape,
                     "cache hit" if result.hit else "built", result.seconds)
        return self.engines[shape]

    def load(self, path: Path) -> torch.nn.Module:
        # importing torch_tensorrt (done in __init__) registers the engine ops the file uses
        return torch.export.load(str(path)).module()

    def _quantized_graph(self, graph: torch.nn.Module, shape: tuple) -> torch.nn.Module:
        try:
            import modelopt.torch.quantization as mtq
        except ImportError as exc:
            raise BackendError("int8 needs NVIDIA ModelOpt: pip install nvidia-modelopt") from exc
        batches = calibration_batches(self.calib_files, self.model.cfg, shape[-2:])

        def forward_loop(module):
            for b in batches:
                module(torch.from_numpy(b).to(self.device))

        with torch.no_grad():
            mtq.quantize(graph, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
        return graph

    def build(self, shape: tuple, out: Path) -> None:
        """Export at `shape`, compile with TensorRT, save as an ExportedProgram to `out`."""
        trt, device = self.trt, self.device
        graph = InferenceGraph(self.model.to(device)).eval()
        example = torch.randn(shape, device=device)
        export_ctx = contextlib.nullcontext()
        if self.precision == "int8":
            graph = self._quantized_graph(graph, shape)
            from modelopt.torch.quantization.utils import export_torch_mode

            export_ctx = export_torch_mode()
        compile_fn = trt.dynamo.compile
        settings = {**self.compile_options, **precision_settings(compile_fn, self.precision)}
        log.warning("building a TensorRT %s engine for %s (takes minutes; cached afterwards)",
                    self.precision, shape)
        with torch.no_grad(), export_ctx:
            program = torch.export.export(graph, (example,), strict=False)
            compiled = compile_fn(program, **inputs_argument(compile_fn, example),
                                  device=device, **settings)
            trt.save(compiled, str(out), output_format="exported_program",
                     **inputs_argument(trt.save, example))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        engine = self.engine_for(batch.shape)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        with torch.no_grad():
            depth, labels = engine(x)
        return graph_outputs_to_numpy(depth, labels, self.tasks)

    def describe(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.engines) or "none yet"
        return (f"tensorrt {getattr(self.trt, '__version__', '?')} ({self.precision}) on "
                f"{torch.cuda.get_device_name(self.device)}, engines: {shapes}")
