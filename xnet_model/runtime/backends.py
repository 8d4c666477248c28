"""Backend seam: each backend maps a normalised NCHW float32 batch to numpy depth/labels.

`create_backend(name, model, device, **options)` is the one factory. BACKENDS maps a name to a
factory `(model, device, **options) -> Backend`; the compiled backends live in their own modules
and are imported only when asked for. A comma-separated name ('tensorrt,torch') is a fallback
chain (select.py); 'auto' is the chain this machine supports best.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..xnet import XNet

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend cannot be used on this machine or for this model."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("device 'cuda' requested but CUDA is not available")
    return device


class Backend:
    """Runs the network. `infer` returns {'depth': (N,h,w) float32, 'labels': (N,h,w) int}."""

    name = "base"

    def __init__(self, model: XNet, device: torch.device):
        self.model, self.device = model, device
        self.tasks = model.cfg.tasks

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


def model_identity(model: XNet, model_path: str | Path | None = None) -> str:
    """Cache-key digest: the saved files' sha256 when loaded from disk, else config + tensors."""
    from ..persistence import model_digest
    from .engine_cache import state_digest

    if model_path is not None:
        return model_digest(model_path)
    return state_digest(model, model.cfg.to_json())


def fixed_input_size(model: XNet, input_size=None) -> tuple[int, int] | None:
    """The network (H, W) when fixed by the caller or the model's data config, else None."""
    size = input_size if input_size is not None else model.cfg.data.input_size
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


def outputs_to_numpy(out: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Depth (N,1,h,w) -> (N,h,w) float32; semantic logits -> argmax labels (N,h,w) int32."""
    res = {}
    if "depth" in out:
        res["depth"] = out["depth"][:, 0].float().cpu().numpy()
    if "semantic" in out:
        res["labels"] = out["semantic"].argmax(1).to(torch.int32).cpu().numpy()
    return res


class TorchBackend(Backend):
    """Eager PyTorch on cpu or cuda, optional bf16/fp16 autocast."""

    name = "torch"

    def __init__(self, model: XNet, device=None, precision: str = "fp32"):
        device = resolve_device(device)
        super().__init__(model.to(device).eval(), device)
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise BackendError(f"precision {precision!r} not in {sorted(dtypes)}")
        self.precision, self.autocast_dtype = precision, dtypes[precision]

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if self.autocast_dtype is None:
            return outputs_to_numpy(self.model(x))
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return outputs_to_numpy(self.model(x))

    def describe(self) -> str:
        return f"torch ({self.precision}) on {self.device}"


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
# Facts about the model that Predictor passes to every backend; factories that do not take
# them never see them.
CONTEXT_OPTIONS = ("model_path", "input_size")


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
