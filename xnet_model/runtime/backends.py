"""Backend seam: each backend maps a normalised NCHW float32 batch to numpy depth/labels.

`create_backend(name, model, ...)` is the one factory; later backends (inductor, onnxruntime,
tensorrt, auto) register in BACKENDS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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

    def __init__(self, model: XNet, device: torch.device, precision: str = "fp32"):
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
BACKENDS: dict[str, BackendFactory] = {
    "torch": lambda model, device, **kw: TorchBackend(model, resolve_device(device), **kw),
}


def create_backend(name: str, model: XNet, device=None, **options) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[name](model, device, **options)
