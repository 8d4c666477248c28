"""`auto` backend selection and fallback chains ('tensorrt,torch').

Preference order (documented rather than measured at start-up, which would cost every start
a compile per candidate; the order follows docs/benchmarks.md):

* CUDA device: tensorrt fp16 (when torch_tensorrt imports) -> torch fp16 -> torch fp32.
* CPU: onnxruntime (when installed) -> torch fp32.

Every candidate must initialise *and* pass a probe inference (finite depth inside
[0, max_depth], labels inside [0, K), the right keys and shapes) before it is used. A failing
candidate is logged as a warning naming the failure and the next one is tried; the first real
batch is checked the same way, so a backend that breaks on real input falls back instead of
returning garbage. When every candidate fails, BackendError lists each failure.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..metadata import ModelMetadata
from .backends import (
    Backend,
    BackendError,
    accepted_options,
    backend_factory,
    fixed_input_size,
    resolve_device,
)
from .export import network_stride

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)

Candidate = tuple[str, dict[str, Any]]  # (backend name, its default options)
PROBE_STRIDES = 4  # probe size in network strides when the model fixes none
DEPTH_TOLERANCE = 1e-2  # metres above max_depth tolerated (fp16 rounding of sigmoid * max)


def auto_candidates(device: torch.device, meta: ModelMetadata | None = None,
                    input_size=None) -> tuple[list[Candidate], list[str]]:
    """The preference order for `device` and why candidates were left out (`meta`: the
    model's; TensorRT needs a fixed network size, it is not built per frame size)."""
    skipped: list[str] = []
    if device.type == "cuda":
        from .tensorrt_backend import unavailable_reason

        reason = unavailable_reason()
        if reason is None and meta is not None and fixed_input_size(meta, input_size) is None:
            reason = ("the model has no fixed network size (data.input_size): TensorRT "
                      "builds an engine for one size, not per frame")
        chain: list[Candidate] = [] if reason else [("tensorrt", {"precision": "fp16"})]
        if reason:
            skipped.append(f"tensorrt: {reason}")
        return chain + [("torch", {"precision": "fp16"}), ("torch", {"precision": "fp32"})], \
            skipped
    import importlib.util

    chain = []
    if importlib.util.find_spec("onnxruntime") is not None:
        chain.append(("onnxruntime", {}))
    else:
        skipped.append("onnxruntime: not installed")
    return chain + [("torch", {"precision": "fp32"})], skipped


def output_problem(out: dict[str, np.ndarray], model: XNet | ModelMetadata,
                   shape: tuple) -> str | None:
    """What is wrong with a backend's `infer` output for a batch of `shape` (None: fine)."""
    n, _, h, w = shape
    meta = model if isinstance(model, ModelMetadata) else model.meta
    for key, task in (("depth", "depth"), ("labels", "semantic")):
        if task not in meta.tasks:
            continue
        if key not in out:
            return f"no {key!r} output"
        if tuple(out[key].shape) != (n, h, w):
            return f"{key} has shape {tuple(out[key].shape)}, expected {(n, h, w)}"
    if "depth" in meta.tasks:
        depth = out["depth"]
        if not np.isfinite(depth).all():
            return f"{int((~np.isfinite(depth)).sum())} non-finite depth values"
        if depth.min() < 0 or depth.max() > meta.max_depth + DEPTH_TOLERANCE:
            return (f"depth range [{depth.min():.3g}, {depth.max():.3g}] outside "
                    f"[0, {meta.max_depth}]")
    if "semantic" in meta.tasks:
        labels = out["labels"]
        if labels.min() < 0 or labels.max() >= meta.num_classes:
            return f"labels outside [0, {meta.num_classes})"
    return None


def probe_batch(model: XNet, input_size=None) -> np.ndarray:
    size = fixed_input_size(model, input_size)
    if size is None:
        size = (PROBE_STRIDES * network_stride(model),) * 2
    rng = np.random.default_rng(0)
    return rng.standard_normal((1, 3, *size)).astype(np.float32)


class FallbackBackend(Backend):
    """The first candidate that initialises and passes the probe; `describe()` says which."""

    name = "auto"

    def __init__(self, candidates: list[Candidate], model: XNet, device=None,
                 label: str = "fallback", skipped: list[str] | None = None, **options):
        self.candidates, self.options, self.label = list(candidates), options, label
        self.requested_device = device
        self.skipped, self.failures = list(skipped or []), []
        self.inner: Backend | None = None
        self.chosen: Candidate | None = None
        self.first_batch_checked = False
        self.cpu_streams = 1
        self._model = model
        self._advance()
        super().__init__(model, self.inner.device)

    def _advance(self) -> None:
        """Initialise the next candidate that passes the probe (BackendError if none)."""
        model = self._model
        while self.candidates:
            name, defaults = self.candidates.pop(0)
            what = " ".join([name, *(f"{k}={v}" for k, v in defaults.items())])
            try:
                factory = backend_factory(name)
                backend = factory(model, self.requested_device,
                                  **accepted_options(factory, {**defaults, **self.options}, True))
                probe = probe_batch(model, self.options.get("input_size"))
                problem = output_problem(backend.infer(probe), model, probe.shape)
                if problem:
                    raise BackendError(f"probe inference invalid: {problem}")
            except Exception as exc:  # any failure: next candidate, never silent
                msg = f"{what}: {type(exc).__name__}: {exc}"
                self.failures.append(msg)
                if self.candidates:
                    log.warning("%s backend %s failed, falling back to %s", self.label, msg,
                                self.candidates[0][0])
                continue
            self.inner, self.chosen = backend, (name, defaults)
            if self.failures:
                log.warning("%s: using %s after: %s", self.label, backend.describe(),
                            "; ".join(self.failures))
            else:
                log.info("%s: using %s (first usable in the preference order)", self.label,
                         backend.describe())
            return
        raise BackendError(f"no usable backend ({self.label}): "
                           + "; ".join(self.skipped + self.failures))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.first_batch_checked:
            return self.inner.infer(batch)
        while True:
            try:
                out = self.inner.infer(batch)
                problem = output_problem(out, self._model, batch.shape)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                self.first_batch_checked = True
                return out
            self.failures.append(f"{self.inner.name} on the first batch: {problem}")
            log.warning("%s: %s failed on the first batch (%s), falling back", self.label,
                        self.inner.describe(), problem)
            self._advance()
            self.device = self.inner.device
            if self.cpu_streams > 1:  # the replacement gets the split its predecessor had
                problem = self.inner.split_cpu_threads(self.cpu_streams)
                if problem:
                    log.warning("%s: %s: cpu_streams %d %s; running it as it is", self.label,
                                self.inner.describe(), self.cpu_streams, problem)

    def upload(self, batch: np.ndarray) -> torch.Tensor:
        return self.inner.upload(batch)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.run(x)

    def download(self, depth: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
        return self.inner.download(depth, labels)

    def describe(self) -> str:
        return f"{self.inner.describe()} [{self.label}]"

    def split_cpu_threads(self, streams: int) -> str:
        problem = self.inner.split_cpu_threads(streams)
        self.cpu_streams = 1 if problem else streams
        return problem


def fallback_chain(names: list[str], model: XNet, device=None, **options) -> FallbackBackend:
    """'a,b,c': a, else b, else c, with the options each factory accepts."""
    return FallbackBackend([(n, {}) for n in names], model, device, label="fallback",
                           **options)


def auto_backend(model: XNet, device=None, **options) -> FallbackBackend:
    """The fastest usable backend on this machine (see the module docstring for the order)."""
    dev = resolve_device(device)
    candidates, skipped = auto_candidates(dev, model.meta, options.get("input_size"))
    log.info("auto backend on %s: trying %s%s", dev, " -> ".join(
        f"{n} {o.get('precision', '')}".strip() for n, o in candidates),
        f" (skipped {'; '.join(skipped)})" if skipped else "")
    return FallbackBackend(candidates, model, dev, label="auto", skipped=skipped, **options)
