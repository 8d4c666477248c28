"""torch.compile (Inductor) backend: the InferenceGraph compiled per input shape.

Compilation is lazy (the first batch of each shape pays it, tens of seconds on a CPU); when the
network size is fixed (`input_size=` or the model's data.input_size) the backend warms up at
construction, so a missing C++ compiler or an unsupported op fails there, where a fallback
chain can still move on. Shapes are static (`dynamic=False`): after
`torch._dynamo.config.cache_size_limit` (named recompile_limit from torch 2.6) distinct shapes
dynamo stops compiling and runs eager.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch

from .backends import (
    AUTOCAST_DTYPES,
    Backend,
    BackendError,
    fixed_input_size,
    resolve_device,
)
from .export import InferenceGraph

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)


class InductorBackend(Backend):
    """`InductorBackend(model, device=None, precision='fp32', mode=None, freezing=True)`.

    Without `mode`, Inductor runs with `freezing` (weights folded as constants, oneDNN weight
    prepacking on CPU: the fast inference setting). `mode` ('max-autotune', 'reduce-overhead'
    for CUDA graphs) replaces those options (torch.compile takes one or the other).
    """

    name = "inductor"

    def __init__(self, model: XNet, device=None, precision: str = "fp32", mode: str | None = None,
                 freezing: bool = True, warmup: bool = True, input_size=None):
        device = resolve_device(device)
        if precision not in AUTOCAST_DTYPES:
            raise BackendError(f"precision {precision!r} not in {sorted(AUTOCAST_DTYPES)}")
        super().__init__(model.to(device).eval(), device)
        self.precision, self.autocast_dtype = precision, AUTOCAST_DTYPES[precision]
        self.mode, self.freezing = mode, freezing and mode is None
        self.graph = InferenceGraph(self.model)
        compile_args = {"mode": mode} if mode else {"options": {"freezing": self.freezing}}
        self.compiled = torch.compile(self.graph, dynamic=False, **compile_args)
        self.compile_seconds: dict[tuple, float] = {}
        size = fixed_input_size(model, input_size)
        if warmup and size is not None:
            self.warmup(size)

    def _run(self, x: torch.Tensor):
        with torch.no_grad():  # freezing applies to no-grad graphs only
            if self.autocast_dtype is None:
                return self.compiled(x)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return self.compiled(x)

    def warmup(self, size: tuple[int, int], batch: int = 1) -> float:
        """Compile for (batch, 3, *size) now; returns the seconds it took."""
        shape = (batch, 3, int(size[0]), int(size[1]))
        t0 = time.perf_counter()
        try:
            self._run(torch.zeros(shape, device=self.device))
        except Exception as exc:  # compiler missing, lowering failure: say which
            raise BackendError(f"torch.compile failed for {shape}: "
                               f"{type(exc).__name__}: {str(exc)[:500]}") from exc
        self.compile_seconds[shape] = time.perf_counter() - t0
        log.info("inductor compiled %s in %.1f s", shape, self.compile_seconds[shape])
        return self.compile_seconds[shape]

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape) not in self.compile_seconds:
            self.warmup(tuple(x.shape[-2:]), int(x.shape[0]))
        return self._run(x)

    def describe(self) -> str:
        how = f"mode={self.mode}" if self.mode else ("freezing" if self.freezing else "default")
        return f"inductor ({self.precision}, {how}) on {self.device}"
