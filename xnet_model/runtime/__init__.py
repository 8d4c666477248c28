"""Inference backends behind `Predictor(backend=...)`."""

from .backends import Backend, BackendError, TorchBackend, create_backend

__all__ = ["Backend", "BackendError", "TorchBackend", "create_backend"]
