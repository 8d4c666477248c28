"""Inference backends behind `Predictor(backend=...)`."""

from .backends import Backend, BackendError, DeviceError, TorchBackend, create_backend

__all__ = ["Backend", "BackendError", "DeviceError", "TorchBackend", "create_backend"]
