"""onnxruntime backend: the exported ONNX graph on the CPU provider (CUDA provider if installed).

The ONNX file is exported once and kept in the engine cache (engine_cache.py), keyed by the
model digest, the exported shape (dynamic, or H x W when the model only exports statically)
and the torch / onnxscript versions, so later starts skip the export. `onnx_path=` runs a
file exported by `xnet export --format onnx` instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .backends import (
    Backend,
    BackendError,
    fixed_input_size,
    graph_outputs_to_numpy,
    model_identity,
    resolve_device,
)
from .engine_cache import CacheKey, EngineCache, package_version
from .export import INPUT_NAME, ExportError, export_onnx, network_stride, read_onnx_metadata

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)

SPIN_WAIT_KEY = "session.intra_op.allow_spinning"
DEFAULT_EXPORT_SIZE = 8  # strides: the trace size of a dynamic export when none is fixed


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("onnxruntime is not installed (pip install onnxruntime, or "
                           "onnxruntime-gpu for the CUDA provider)") from exc
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """`OnnxRuntimeBackend(model, device=None, threads=None, cache_dir=None, onnx_path=None)`.

    device None picks the CUDA provider when onnxruntime has it and CUDA is up, else CPU.
    `threads`: intra-op threads (default: torch's, i.e. one per core or OMP_NUM_THREADS, so
    one setting sizes both runtimes of the process). `cpu_streams` (passed by the Predictor):
    the session is created with 1/cpu_streams of them (`split_cpu_threads`), once.
    `spin_wait`: let them busy-wait for work after each run (onnxruntime's own default). Off
    here: a node runs beside the rest of a robot, and at a camera's 10 Hz spinning took ~70 ms
    of CPU per frame against ~25 ms without, for 14 ms instead of 20 ms per forward pass (2
    threads, the demo model).
    """

    name = "onnxruntime"

    def __init__(self, model: XNet, device=None, precision: str = "fp32",
                 threads: int | None = None, cache_dir: str | Path | None = None,
                 onnx_path: str | Path | None = None, dynamic: bool = True,
                 model_path: str | Path | None = None, input_size=None,
                 spin_wait: bool = False, cpu_streams: int = 1):
        ort = _ort()
        if precision != "fp32":
            raise BackendError(f"onnxruntime backend runs fp32 only, not {precision!r}")
        available = ort.get_available_providers()
        if device is None or str(device) == "auto":
            use_cuda = "CUDAExecutionProvider" in available and resolve_device(None).type == "cuda"
            device = "cuda" if use_cuda else "cpu"
        device = resolve_device(device)
        if device.type == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendError(f"onnxruntime has no CUDA provider here (providers: {available};"
                               " install onnxruntime-gpu)")
        super().__init__(model.eval(), device)
        self.providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                          if device.type == "cuda" else ["CPUExecutionProvider"])
        self.threads, self.spin_wait, self.cache_hit = threads, bool(spin_wait), None
        self.streams = 1  # concurrent runs the intra-op threads are divided among
        if device.type == "cpu" and cpu_streams > 1:  # split now: one session, not two
            self._divide_threads(cpu_streams)
        if onnx_path is not None:
            self.onnx_path = Path(onnx_path)
            self.session = self._session(self.onnx_path)
        else:
            self.onnx_path, self.session = self._cached_session(
                model, model_path, fixed_input_size(model, input_size), cache_dir, dynamic)
        meta = read_onnx_metadata(self.onnx_path)
        self.dynamic = bool(meta.get("dynamic", True))
        self.exported_size = tuple(meta.get("input_size") or ())

    def _session(self, path: Path):
        ort = _ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(self.threads or torch.get_num_threads())
        opts.add_session_config_entry(SPIN_WAIT_KEY, "1" if self.spin_wait else "0")
        return ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)

    def _cached_session(self, model, model_path, size, cache_dir, dynamic):
        stride = network_stride(model)
        h, w = size if size is not None else (DEFAULT_EXPORT_SIZE * stride,) * 2

        def build(tmp: Path) -> None:
            try:
                export_onnx(model, tmp, h, w, dynamic=dynamic, single_file=True)
            except ExportError as exc:
                raise BackendError(str(exc)) from exc

        # The trace size is part of the key: a model that only exports statically gets a
        # graph for that size, so another fixed size must not hit it.
        extra = {"dynamic": dynamic, "onnxscript": package_version("onnxscript")}
        key = CacheKey("onnx", model_identity(model, model_path), (1, 3, h, w), "fp32",
                       extra=tuple(sorted(extra.items())))
        result = EngineCache(cache_dir, suffix=".onnx").get_or_build(key, build, self._session)
        self.cache_hit = result.hit
        log.info("onnxruntime graph %s (%s, %.1f s)", result.path,
                 "cache hit" if result.hit else "exported", result.seconds)
        return result.path, result.value

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.dynamic and tuple(batch.shape[-2:]) != self.exported_size:
            raise BackendError(f"this ONNX graph is static at {self.exported_size}, got "
                               f"{tuple(batch.shape[-2:])}")
        if not self.dynamic and batch.shape[0] != 1:  # static graphs are exported at batch 1
            outs = [self.session.run(None, {INPUT_NAME: batch[i:i + 1]})
                    for i in range(batch.shape[0])]
            depth, labels = (np.concatenate([o[j] for o in outs]) for j in range(2))
        else:
            depth, labels = self.session.run(None, {INPUT_NAME: batch})
        return graph_outputs_to_numpy(depth, labels, self.tasks)

    def split_cpu_threads(self, streams: int) -> str:
        """A session whose `run` uses 1/streams of the intra-op threads: onnxruntime runs
        concurrent `run` calls of one session (each releases the GIL throughout), so the
        streams share the weights and keep every core busy, unlike torch's Python-level
        forward passes, which take the GIL between operators."""
        if self.device.type != "cpu":
            return super().split_cpu_threads(streams)
        if streams != self.streams:  # not already divided when the session was created
            self._divide_threads(streams)
            self.session = self._session(self.onnx_path)
        return ""

    def _divide_threads(self, streams: int) -> None:
        self.threads = max(1, (self.threads or torch.get_num_threads()) // streams)
        self.streams = streams

    def describe(self) -> str:
        provider = self.session.get_providers()[0].replace("ExecutionProvider", "")
        shape = "dynamic" if self.dynamic else "x".join(map(str, self.exported_size))
        return f"onnxruntime {_ort().__version__} ({provider}, fp32, {shape} graph)"
