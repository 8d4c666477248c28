"""Training losses: scale-invariant log depth loss (BTS), segmentation cross-entropy, and a
weighted multi-task sum over the model's output dict."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TASK_TARGET_KEYS = {"depth": "depth", "semantic": "labels"}


def _as_nhw(tensor: Tensor, name: str) -> Tensor:
    """(N,H,W) from (N,H,W) or (N,1,H,W)."""
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.dim() != 3:
        raise ValueError(f"{name}: expected (N,H,W) or (N,1,H,W), got {tuple(tensor.shape)}")
    return tensor


class SILogLoss(nn.Module):
    """BTS scale-invariant log loss: scale * sqrt(mean(d^2) - lambd * mean(d)^2),
    d = log(pred) - log(gt) over pixels with gt > min_depth (and `mask`, when given).

    The prediction is clamped to min_depth before the log. With no valid pixel the loss is
    `pred.sum() * 0`: zero, differentiable, and still attached to the graph.
    """

    def __init__(self, lambd: float = 0.85, scale: float = 10.0, min_depth: float = 1e-3) -> None:
        super().__init__()
        self.lambd = lambd
        self.scale = scale
        self.min_depth = min_depth

    def forward(self, pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
        pred_nhw, gt_nhw = _as_nhw(pred, "pred"), _as_nhw(gt, "gt")
        if pred_nhw.shape != gt_nhw.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ")
        valid = gt_nhw > self.min_depth
        if mask is not None:
            valid = valid & _as_nhw(mask, "mask").bool()
        if not bool(valid.any()):
            return pred.sum() * 0.0
        d = torch.log(pred_nhw[valid].clamp_min(self.min_depth)) - torch.log(gt_nhw[valid])
        variance = (d**2).mean() - self.lambd * d.mean() ** 2
        # sqrt has an infinite slope at 0 (perfect or, for lambd=1, pure-scale predictions):
        # route those through a constant so the gradient is 0 instead of NaN.
        positive = variance > 1e-12
        safe = torch.where(positive, variance, torch.ones_like(variance))
        return self.scale * torch.where(positive, torch.sqrt(safe), torch.zeros_like(variance))


class SegmentationCELoss(nn.Module):
    """Pixel-wise cross-entropy on (N,K,H,W) logits vs (N,H,W) labels, skipping ignore_index.

    Returns `logits.sum() * 0` (not NaN) when every pixel is ignored.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        labels = _as_nhw(labels, "labels").long()
        if not bool((labels != self.ignore_index).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=self.ignore_index)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the per-task losses over the tasks present in both outputs and targets.

    outputs: 'depth' (N,1,H,W) metres and/or 'semantic' (N,K,H,W) logits.
    targets: 'depth' (N,H,W) or (N,1,H,W) metres and/or 'labels' (N,H,W) class ids.
    Outputs at another resolution than their target are bilinearly upsampled first. Tasks
    missing from `weights` get weight 1.0. Returns (total, {task: value, 'total': value}).
    """

    def __init__(self, weights: dict[str, float] | None = None, depth: nn.Module | None = None,
                 semantic: nn.Module | None = None) -> None:
        super().__init__()
        self.weights = dict(weights or {})
        unknown = sorted(set(self.weights) - set(TASK_TARGET_KEYS))
        if unknown:
            known = list(TASK_TARGET_KEYS)
            raise ValueError(f"weights: unknown task(s) {unknown}; known: {known}")
        self.depth = depth if depth is not None else SILogLoss()
        self.semantic = semantic if semantic is not None else SegmentationCELoss()

    def forward(self, outputs: dict[str, Tensor],
                targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        total: Tensor | None = None
        values: dict[str, float] = {}
        for task, target_key in TASK_TARGET_KEYS.items():
            if task not in outputs or target_key not in targets:
                continue
            target = targets[target_key]
            output = _resize_to(outputs[task], target.shape[-2:])
            loss = self.depth(output, target) if task == "depth" else self.semantic(output, target)
            values[task] = float(loss.detach())
            weighted = self.weights.get(task, 1.0) * loss
            total = weighted if total is None else total + weighted
        if total is None:
            raise ValueError(
                f"no task has both an output and a target: outputs {sorted(outputs)}, "
                f"targets {sorted(targets)} (pairs: {TASK_TARGET_KEYS})"
            )
        values["total"] = float(total.detach())
        return total, values


def _resize_to(output: Tensor, size: torch.Size) -> Tensor:
    if output.shape[-2:] == size:
        return output
    return F.interpolate(output, size=tuple(size), mode="bilinear", align_corners=False)
