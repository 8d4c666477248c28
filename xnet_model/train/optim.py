"""The optimiser's parameter groups and the learning-rate schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WarmupPoly:
    """LR factor: linear warm-up from `start` to 1 over `warmup` steps, then
    (1 - progress) ** power down to `floor` at `total` steps. A plain object, so LambdaLR's
    state_dict stores its settings."""

    def __init__(self, warmup: int, total: int, power: float, start: float = 1e-3,
                 floor: float = 0.0):
        self.warmup, self.total, self.power = warmup, total, power
        self.start, self.floor = start, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        span = max(self.total - self.warmup, 1)
        progress = min(max(step - self.warmup, 0) / span, 1.0)
        return max((1.0 - progress) ** self.power, self.floor)


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 encoder_lr_mult: float) -> list[dict[str, Any]]:
    """Encoder (an XNet's `encoder.*`) / rest x decay / no decay. Norm weights, biases and
    other 1-d tensors (layer scales) get no weight decay."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (name.startswith("encoder."), p.ndim > 1)
            groups.setdefault(key, []).append(p)
    out = []
    for (is_encoder, decays), params in sorted(groups.items()):
        out.append({
            "params": params, "name": f"{'encoder' if is_encoder else 'rest'}"
                                     f"{'' if decays else '_no_decay'}",
            "lr": lr * (encoder_lr_mult if is_encoder else 1.0),
            "weight_decay": weight_decay if decays else 0.0,
        })
    return out


def align_step_tensors(optimizer: torch.optim.Optimizer) -> None:
    """Put each parameter's AdamW `step` where its group's kernel wants it: on the parameter's
    device for fused/capturable groups, on the CPU otherwise. A checkpoint written with the
    other setting (a CPU run resumed with fused CUDA AdamW, or back) would fail its first step."""
    for group in optimizer.param_groups:
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if isinstance(state.get("step"), torch.Tensor):
                device = p.device if on_device else torch.device("cpu")
                state["step"] = state["step"].to(device=device, dtype=torch.float32)
