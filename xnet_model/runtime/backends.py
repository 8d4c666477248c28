"""Backend seam: each backend maps a normalised NCHW float32 batch to numpy depth/labels.

`create_backend(name, model, device, **options)` is the one factory. BACKENDS maps a name to a
factory `(model, device, **options) -> Backend`; the compiled backends live in their own modules
and are imported only when asked for. A comma-separated name ('tensorrt,torch') is a fallback
chain (select.py); 'auto' is the chain this machine supports best. Deploy artifacts (no
nn.Module) get their backend from `artifact.create_artifact_backend`.

A backend's work is split so that later stages can stay on the device: `upload` (numpy ->
float32 tensor on the device, through a pinned staging buffer on CUDA), `run` (tensor ->
(depth (N,1,H,W), labels (N,H,W)) tensors on the device) and `download` (-> numpy, labels
narrowed to uint8 on the device when the class count allows). `infer` is the three in a row.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..metadata import ModelMetadata

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend cannot be used on this machine or for this model."""


class DeviceError(BackendError):
    """The device asked for is not a device, or not one this machine or backend has."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """cpu, or cuda *with an explicit index* (`torch.device('cuda')` has index None, which
    Torch-TensorRT turns into gpu_id=None; torch.cuda.current_device() is what 'cuda' means)."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device {device!r} is not a device (cpu, cuda, cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= torch.cuda.device_count():
            raise BackendError(f"device {str(device)!r}: this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def label_dtype(num_classes: int) -> torch.dtype:
    """The narrowest dtype the labels are copied back in (uint8 for up to 256 classes)."""
    return torch.uint8 if num_classes <= 256 else torch.int32


class HostTransfer:
    """numpy <-> device copies. On CUDA through reused pinned buffers, so `non_blocking`
    copies really are asynchronous (from pageable memory they are not, and a non-blocking copy
    *into* pageable memory may be read before it lands). Not thread-safe: one per backend."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._buffers: dict[tuple, torch.Tensor] = {}

    def _pinned(self, tag: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        key = (tag, tuple(shape), dtype)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=dtype, pin_memory=True)
        return self._buffers[key]

    def upload(self, batch: np.ndarray) -> torch.Tensor:
        """(N,3,H,W) numpy -> contiguous float32 tensor on the device."""
        src = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if not self.cuda:
            return src
        staging = self._pinned("in", tuple(src.shape), torch.float32)
        staging.copy_(src)
        return staging.to(self.device, non_blocking=True)

    def download(self, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Device tensors -> numpy arrays the caller owns (one stream sync on CUDA)."""
        if not self.cuda:
            return {k: t.numpy() for k, t in tensors.items()}
        staged = {}
        for key, t in tensors.items():
            buf = self._pinned(key, tuple(t.shape), t.dtype)
            buf.copy_(t, non_blocking=True)
            staged[key] = buf
        torch.cuda.current_stream(self.device).synchronize()
        return {k: b.numpy().copy() for k, b in staged.items()}  # buffers are reused


class Backend:
    """Runs the network. `infer` returns {'depth': (N,h,w) float32, 'labels': (N,h,w) uint8 or
    int32}, only the model's heads. `model` is None for deploy artifacts (then `meta` is
    required)."""

    name = "base"

    def __init__(self, model: XNet | None, device: torch.device,
                 meta: ModelMetadata | None = None):
        self.model, self.device = model, device
        self.meta = meta if meta is not None else model.meta
        self.tasks = tuple(self.meta.tasks)
        self.io = HostTransfer(device)

    def upload(self, batch: np.ndarray) -> torch.Tensor:
        return self.io.upload(batch)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,3,H,W) float32 on `device` -> (depth (N,1,H,W), labels (N,H,W)) on `device`; an
        absent head gives an empty tensor (the InferenceGraph convention)."""
        raise NotImplementedError

    def download(self, depth: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
        out = {}
        if "depth" in self.tasks:
            out["depth"] = depth[:, 0].float()
        if "semantic" in self.tasks:
            out["labels"] = labels.to(label_dtype(self.meta.num_classes))
        return self.io.download(out)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return self.download(*self.run(self.upload(batch)))

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def split_cpu_threads(self, streams: int) -> str:
        """Get ready for `streams` concurrent `infer` calls, each on its own share of the CPU
        threads (the Predictor's `cpu_streams`): '' when done, else why this backend cannot."""
        return f"needs the torch or onnxruntime backend on the CPU, not {self.describe()}"


def model_identity(model: XNet, model_path: str | Path | None = None) -> str:
    """Cache-key digest: the saved files' sha256 when loaded from disk, else config + tensors."""
    from ..persistence import model_digest
    from .engine_cache import state_digest

    if model_path is not None:
        return model_digest(model_path)
    return state_digest(model, model.cfg.to_json())


def fixed_input_size(model: XNet | ModelMetadata, input_size=None) -> tuple[int, int] | None:
    """The network (H, W) when fixed by the caller or the model's metadata, else None."""
    meta = model if isinstance(model, ModelMetadata) else model.meta
    size = input_size if input_size is not None else meta.input_size
    return None if size is None else (int(size[0]), int(size[1]))


def graph_outputs_to_numpy(depth, labels, tasks) -> dict[str, np.ndarray]:
    """InferenceGraph outputs (torch or numpy; empty = absent head) -> the `infer` dict."""
    res = {}
    if "depth" in tasks:
        depth = depth.float().cpu().numpy() if isinstance(depth, torch.Tensor) else depth
        res["depth"] = np.asarray(depth, np.float32)[:, 0]
    if "semantic" in tasks:
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        res["labels"] = np.asarray(labels, np.int32)
    return res


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in AUTOCAST_DTYPES:
        raise BackendError(f"precision {precision!r} not in {sorted(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[precision]


class TorchBackend(Backend):
    """Eager PyTorch on cpu or cuda, optional bf16/fp16 autocast."""

    name = "torch"

    def __init__(self, model: XNet, device=None, precision: str = "fp32"):
        from .export import InferenceGraph

        device = resolve_device(device)
        self.precision, self.autocast_dtype = precision, autocast_dtype(precision)
        super().__init__(model.to(device).eval(), device)
        self.graph = InferenceGraph(self.model)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            if self.autocast_dtype is None:
                return self.graph(x)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return self.graph(x)

    def describe(self) -> str:
        return f"torch ({self.precision}) on {self.device}"

    def split_cpu_threads(self, streams: int) -> str:
        return split_torch_threads(self, streams)


def run_in_chunks(run: Callable[[torch.Tensor], tuple], x: torch.Tensor, most: int) -> tuple:
    """`run(x)` of a program built for batches of at most `most`, for a larger batch (several
    cameras' frames): chunk by chunk, outputs concatenated."""
    if x.shape[0] <= most:
        return run(x)
    parts = [run(chunk) for chunk in torch.split(x, most)]
    return tuple(torch.cat(outputs) for outputs in zip(*parts))


def split_torch_threads(backend: Backend, streams: int) -> str:
    """`split_cpu_threads` of a backend that runs torch: on the CPU, torch's intra-op threads
    (process-wide) divided among the streams."""
    if backend.device.type != "cpu":
        return Backend.split_cpu_threads(backend, streams)
    torch.set_num_threads(max(1, torch.get_num_threads() // streams))
    return ""


BackendFactory = Callable[..., Backend]
# name -> factory, or "module:attribute" of one (imported on first use: keeps torch-only
# machines free of onnxruntime / torch_tensorrt imports)
BACKENDS: dict[str, BackendFactory | str] = {
    "torch": TorchBackend,
    "inductor": "xnet_model.runtime.inductor:InductorBackend",
    "onnxruntime": "xnet_model.runtime.onnx_backend:OnnxRuntimeBackend",
    "tensorrt": "xnet_model.runtime.tensorrt_backend:TensorRTBackend",
    "auto": "xnet_model.runtime.select:auto_backend",
}
# Facts about the model and the run that Predictor passes to every backend; factories that do
# not take them never see them.
CONTEXT_OPTIONS = ("model_path", "input_size", "cpu_streams")


def backend_factory(name: str) -> BackendFactory:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; available: {sorted(BACKENDS)}")
    factory = BACKENDS[name]
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


def accepted_options(factory: BackendFactory, options: dict, only_known: bool = False) -> dict:
    """`options` minus the CONTEXT_OPTIONS `factory` does not take (`only_known`: minus every
    option it does not take, for chains whose members take different options)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    dropped = CONTEXT_OPTIONS if not only_known else options
    return {k: v for k, v in options.items() if k not in dropped or k in params}


def create_backend(name: str, model: XNet, device=None, **options) -> Backend:
    """`name` from BACKENDS, or 'a,b,c': the first of a, b, c that initialises and validates."""
    if "," in name:
        from .select import fallback_chain

        return fallback_chain([n.strip() for n in name.split(",") if n.strip()], model, device,
                              **options)
    factory = backend_factory(name)
    return factory(model, device, **accepted_options(factory, options))
