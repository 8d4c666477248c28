"""Device-dependent training choices as plain functions of their inputs (device type, compute
capability, torch version, config), so the CUDA decisions are testable on a CPU with fake device
properties; and the few calls that apply them. Nothing here initialises CUDA on import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

Capability = tuple[int, int]  # CUDA compute capability (major, minor)
AMPERE = (8, 0)  # native bf16 and TF32 tensor cores from here on
RANK_SEED_STRIDE = 1_000_003  # a prime: rank seeds of nearby base seeds do not collide


def torch_version(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of torch, e.g. '2.4.1+cu121' -> (2, 4)."""
    parts = (version or torch.__version__).split("+")[0].split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


# ---- seeds ------------------------------------------------------------------------------------


def process_seed(seed: int, rank: int) -> int:
    """The RNG seed of a training process. Rank 0 keeps `seed` (a single-process run is
    unchanged); other ranks get their own streams, so stochastic depth (drop path) draws
    different patterns on each GPU instead of the same one."""
    return (seed + RANK_SEED_STRIDE * rank) % 2**63


# ---- precision and CUDA backend flags -----------------------------------------------------------


def precision_advice(precision: str, device_type: str, capability: Capability | None,
                     device_name: str = "this GPU") -> str | None:
    """A warning for a precision the device only emulates, else None. bf16 needs compute
    capability 8.0 (Ampere); V100 (7.0), T4 and RTX 20xx (7.5) run it far slower than fp16."""
    if precision == "bf16" and device_type == "cuda" and capability is not None \
            and tuple(capability) < AMPERE:
        major, minor = capability
        return (f"precision bf16 on {device_name} (compute capability {major}.{minor} < 8.0) is "
                "emulated and slow: use precision=fp16 (autocast + GradScaler) on this GPU")
    return None


@dataclass
class CudaSettings:
    cudnn_benchmark: bool = False
    tf32: bool = False
    notes: list[str] = field(default_factory=list)


def cuda_settings(device_type: str, capability: Capability | None, cudnn_benchmark: bool,
                  tf32: bool) -> CudaSettings:
    """What to switch on for this device: cuDNN autotuning on any GPU, TF32 only where tensor
    cores have it (compute capability >= 8.0). Nothing on a CPU."""
    if device_type != "cuda":
        return CudaSettings()
    out = CudaSettings(cudnn_benchmark=cudnn_benchmark)
    if tf32:
        if capability is not None and tuple(capability) >= AMPERE:
            out.tf32 = True
        else:
            out.notes.append("tf32: this GPU has no TF32 tensor cores (compute capability < 8.0)")
    return out


def apply_cuda_settings(settings: CudaSettings) -> None:
    """Set the process-wide flags (plain attributes: safe without a GPU)."""
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    # "high" = TF32 for fp32 matmuls: the API every torch >= 1.12 has
    torch.set_float32_matmul_precision("high" if settings.tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = settings.tf32


def device_properties(device: torch.device) -> tuple[Capability | None, str]:
    """(compute capability, name) of a CUDA device; (None, 'cpu') otherwise."""
    if device.type != "cuda":
        return None, device.type
    return tuple(torch.cuda.get_device_capability(device)), torch.cuda.get_device_name(device)


# ---- optimiser and GradScaler across torch versions ---------------------------------------------


def adamw_options(device_type: str, fused: bool | None,
                  version: tuple[int, int] | None = None) -> dict[str, Any]:
    """Keyword arguments for torch.optim.AdamW. None = fused on CUDA (one kernel for all
    parameters); fused on a CPU needs torch >= 2.4 and is otherwise left out with a warning."""
    version = version or torch_version()
    if fused is None:
        fused = device_type == "cuda"
    if not fused:
        return {}
    if device_type == "cpu" and version < (2, 4):
        log.warning("performance.fused_adamw: fused AdamW on a CPU needs torch >= 2.4 "
                    "(this is %d.%d); using the default implementation", *version)
        return {}
    return {"fused": True}


def make_grad_scaler(device_type: str, enabled: bool, amp: Any = None) -> Any:
    """torch.amp.GradScaler(device) (torch >= 2.3), else torch.cuda.amp.GradScaler. `amp` is
    the module to use (tests pass a stand-in for an older torch)."""
    amp = amp if amp is not None else torch.amp
    if hasattr(amp, "GradScaler"):
        return amp.GradScaler(device_type, enabled=enabled)
    if enabled and device_type != "cuda":
        raise RuntimeError(f"precision fp16 on {device_type} needs torch >= 2.3 "
                           "(torch.amp.GradScaler); use bf16 or fp32")
    return torch.cuda.amp.GradScaler(enabled=enabled)


# ---- data loading -------------------------------------------------------------------------------


def prepare_loader_workers(workers: int) -> None:
    """Call before DataLoader workers start. OpenCV would run one thread per core in every
    worker (workers x cores threads fighting for the cores): with workers, this process (which
    then does no image work) drops to one OpenCV thread, and forked workers inherit that.
    Setting it inside a forked worker instead can deadlock on the thread pool the parent used."""
    if workers > 0:
        import cv2

        cv2.setNumThreads(1)


def loader_worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: one OpenCV thread. A forked worker has it from
    `prepare_loader_workers` already; a spawned one (macOS, Windows) starts fresh."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def loader_options(device_type: str, workers: int, persistent: bool) -> dict[str, Any]:
    """DataLoader keyword arguments shared by training and evaluation loaders."""
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device_type == "cuda"}
    if workers > 0:
        options["worker_init_fn"] = loader_worker_init
        options["persistent_workers"] = persistent
    return options


# ---- DDP and model options ----------------------------------------------------------------------


def needs_buffer_broadcast(model: nn.Module) -> bool:
    """Whether DDP must copy rank 0's buffers before every forward: only for running statistics
    (BatchNorm), which each rank updates on its own. xNet's encoders and decoders have none;
    Swin's constant index/mask buffers (tens of MiB) would be re-sent every step for nothing."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
               for m in model.modules())


def ddp_options(model: nn.Module, device: torch.device) -> dict[str, Any]:
    return {
        "device_ids": [device.index] if device.type == "cuda" else None,
        "broadcast_buffers": needs_buffer_broadcast(model),
        "gradient_as_bucket_view": True,  # gradients live in DDP's buckets: one copy, not two
    }


def enable_grad_checkpointing(model: nn.Module) -> list[str]:
    """Recompute activations in backward instead of keeping them: timm's
    `set_grad_checkpointing` on the encoder (the inner model of a features wrapper that hides
    it, such as DINOv2's FeatureGetterNet) and each ConvNeXt stage of the decoder. Returns the
    names of the modules switched on."""
    enabled = []
    body = model.encoder.body
    inner = getattr(body, "model", None)
    target, name = (inner, "encoder.body.model") if hasattr(inner, "set_grad_checkpointing") \
        else (body, "encoder.body")
    if hasattr(target, "set_grad_checkpointing"):
        target.set_grad_checkpointing(True)
        enabled.append(name)
    for i, stage in enumerate(getattr(model.decoder, "stages", [])):
        if hasattr(stage, "grad_checkpointing"):
            stage.grad_checkpointing = True
            enabled.append(f"decoder.stages.{i}")
    if not enabled:
        log.warning("model.grad_checkpointing: neither the encoder nor the decoder supports it")
    return enabled
