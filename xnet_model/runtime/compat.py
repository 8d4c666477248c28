"""Version tolerance: `xnet_model` supports torch 2.4 - 2.14 and timm 1.0.x.

Every use of a torch API that is newer than torch 2.4 goes through a guard in this module, so
an older torch gets a clear message naming the version it needs instead of an AttributeError
or TypeError deep inside a backend. `GUARDED` lists them (test_compat.py checks the list
against the code).
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Iterator

import torch

SUPPORTED_TORCH = ((2, 4), (2, 14))  # inclusive (major, minor) range
SUPPORTED_TIMM = ((1, 0), (1, 0))

# API -> the torch release that introduced it, and where it is guarded
GUARDED = {
    "torch.onnx.export(dynamo=True)": ((2, 5), "onnx_dynamo_problem"),
    # public in torch.export.passes from 2.6, torch._export.passes in 2.5 (pytorch#133660)
    "torch.export.passes.move_to_device_pass": ((2, 5), "move_program_to_device"),
}


def version_tuple(version: str | None) -> tuple[int, ...]:
    """'2.11.0+cu128' -> (2, 11, 0); '1.0.31' -> (1, 0, 31); None or junk -> ()."""
    if not version:
        return ()
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def support_problem(name: str, version: str | None,
                    supported: tuple[tuple[int, int], tuple[int, int]]) -> str | None:
    """Why `version` of `name` is outside the supported (major, minor) range (None: inside)."""
    v = version_tuple(version)[:2]
    if not v:
        return f"{name} is not installed" if version is None else \
            f"{name} version {version!r} is not a version number"
    (lo, hi) = supported
    if lo <= v <= hi:
        return None
    return (f"{name} {version} is outside the supported range "
            f"{lo[0]}.{lo[1]} - {hi[0]}.{hi[1]} (it may work; it is not tested)")


def torch_problem() -> str | None:
    return support_problem("torch", torch.__version__, SUPPORTED_TORCH)


def onnx_dynamo_problem() -> str | None:
    """Why `torch.onnx.export(exported_program, dynamo=True)` is unavailable (None: fine)."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        return (f"ONNX export from a torch.export program needs torch >= 2.5 "
                f"(this is {torch.__version__})")
    return None


def move_program_to_device(program: torch.export.ExportedProgram,
                           device: torch.device) -> torch.export.ExportedProgram:
    """The program with its weights and device constants on `device` (torch >= 2.5)."""
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:
        try:
            from torch._export.passes.move_to_device_pass import move_to_device_pass
        except ImportError as exc:
            raise RuntimeError(
                f"moving a torch.export program to {device} needs torch >= 2.5 (this is "
                f"{torch.__version__}): export it on that device instead (xnet export "
                f"--device {device.type})") from exc
    return move_to_device_pass(program, str(device))


@contextlib.contextmanager
def triton_hidden_without_cuda() -> Iterator[None]:
    """While `torch.export.load` first imports torch's compiler stack (torch._dynamo,
    torch._inductor), hide triton on a machine without a CUDA device: triton only compiles GPU
    kernels, and importing it costs ~80 MB of resident memory (measured on torch 2.14). Modules
    imported meanwhile record "no triton", which is true without CUDA; afterwards triton is
    importable again. A no-op where CUDA exists or triton is already imported."""
    if "triton" in sys.modules or torch.cuda.is_available():
        yield
        return
    sys.modules["triton"] = None  # `import triton` raises ImportError while this is set
    try:
        yield
    finally:
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]
