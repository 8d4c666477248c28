"""Evaluation loop (optional flip TTA, sharded over ranks) and the metric table."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..camera import metric_scale
from ..metrics import (
    DEPTH_METRIC_KEYS,
    DepthMetricAccumulator,
    SegmentationMetric,
    json_safe,
)
from .data import EvalSpec
from .distributed import DistContext, all_gather_objects

SEMANTIC_KEYS = ("mIoU", "mAcc", "aAcc")


def network_size(size: tuple[int, int], input_size: list[int] | None,
                 stride: int) -> tuple[int, int]:
    if input_size is not None:
        return int(input_size[0]), int(input_size[1])
    return -(-size[0] // stride) * stride, -(-size[1] // stride) * stride


def predict(model: nn.Module, image: torch.Tensor, out_size: tuple[int, int],
            input_size: list[int] | None, stride: int, flip_tta: bool = False,
            autocast: contextlib.AbstractContextManager | None = None, *,
            canonical_focal: float | None = None, focal: torch.Tensor | None = None,
            ) -> dict[str, torch.Tensor]:
    """Depth (N,1,H,W) and semantic logits (N,K,H,W) at `out_size`, in float32.

    The image is resized to the network size first; with `flip_tta` the horizontally flipped
    pass is flipped back and averaged with the plain one (depth and logits alike). A
    camera-aware model's depth (`canonical_focal`) goes to metres through each image's `focal`
    (N,), fx in pixels of `image` (xnet_model/camera.py).
    """
    image_size = tuple(image.shape[-2:])
    size = network_size(image_size, input_size, stride)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    with autocast or contextlib.nullcontext():
        out = {k: v.float() for k, v in model(image).items()}
        if flip_tta:
            flipped = model(torch.flip(image, dims=[-1]))
            out = {k: 0.5 * (v + torch.flip(flipped[k].float(), dims=[-1]))
                   for k, v in out.items()}
    if canonical_focal is not None and "depth" in out:
        if focal is None:
            raise ValueError("a camera-aware model (canonical_focal) is scored in metres "
                             "through each image's focal length: the batch has none")
        try:
            scale = [metric_scale(canonical_focal, float(f), image_size, size) for f in focal]
        except ValueError as exc:
            raise ValueError(f"a camera-aware model needs each image's focal length: {exc} "
                             "(a BTS split file without its focal column?)") from None
        out["depth"] = out["depth"] * torch.tensor(scale, device=out["depth"].device,
                                                   dtype=out["depth"].dtype).view(-1, 1, 1, 1)
    return {k: v if tuple(v.shape[-2:]) == tuple(out_size)
            else F.interpolate(v, size=tuple(out_size), mode="bilinear", align_corners=False)
            for k, v in out.items()}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, spec: EvalSpec, ctx: DistContext, *,
             input_size: list[int] | None, stride: int, flip_tta: bool = False,
             autocast: contextlib.AbstractContextManager | None = None,
             max_batches: int | None = None, progress: bool = False,
             canonical_focal: float | None = None) -> dict[str, Any]:
    """Metrics of `model` on this rank's shard of `loader`, combined over all ranks.
    `canonical_focal`: the model's (camera-aware models; batches carry 'focal').

    Returns scalar metrics (depth: DEPTH_METRIC_KEYS, semantic: mIoU mAcc aAcc) plus
    'depth_count' and, with a semantic head, per-class 'IoU'.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    depth_acc = seg = None
    if "depth" in spec.tasks:
        depth_acc = DepthMetricAccumulator(min_depth=spec.min_depth, max_depth=spec.max_depth,
                                           crop=spec.crop)
    if "semantic" in spec.tasks:
        seg = SegmentationMetric(spec.num_classes, spec.ignore_index)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(loader, total=total, desc="eval", leave=False, disable=not progress)
    for i, batch in enumerate(bar):
        if max_batches is not None and i >= max_batches:
            break
        image = batch["image"].to(ctx.device, non_blocking=True)
        target = batch["depth"] if "depth" in batch else batch["labels"]
        out = predict(model, image, tuple(target.shape[-2:]), input_size, stride, flip_tta,
                      autocast, canonical_focal=canonical_focal, focal=batch.get("focal"))
        if depth_acc is not None and "depth" in batch:
            depth_acc.update(out["depth"].cpu(), batch["depth"])
        if seg is not None and "labels" in batch:
            seg.update(out["semantic"].argmax(1).cpu(), batch["labels"])
    bar.close()
    model.train(was_training)
    local = {"depth": depth_acc.compute() if depth_acc else None,
             "confusion": seg.confusion if seg else None}
    return _combine(all_gather_objects(local, ctx), seg)


def _combine(parts: list[dict[str, Any]], seg: SegmentationMetric | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    depth_parts = [p["depth"] for p in parts if p["depth"] is not None]
    if depth_parts:
        count = sum(p["count"] for p in depth_parts)
        for key in DEPTH_METRIC_KEYS:
            result[key] = (sum(p[key] * p["count"] for p in depth_parts if p["count"]) / count
                           if count else math.nan)
        result["depth_count"] = count
    if seg is not None:
        seg.confusion = sum(p["confusion"] for p in parts)
        sem = seg.compute()
        result.update({k: sem[k] for k in SEMANTIC_KEYS})
        result["IoU"] = sem["IoU"]
    return result


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def format_table(metrics: dict[str, Any], class_names: list[str] | None = None) -> str:
    """A Markdown table of the depth and/or semantic metrics (and per-class IoU)."""
    lines = []
    for keys in (DEPTH_METRIC_KEYS, SEMANTIC_KEYS):
        present = [k for k in keys if k in metrics]
        if present:
            lines += ["| " + " | ".join(present) + " |",
                      "|" + "|".join("---:" for _ in present) + "|",
                      "| " + " | ".join(f"{metrics[k]:.4f}" for k in present) + " |", ""]
    if "IoU" in metrics:
        names = class_names or [str(i) for i in range(len(metrics["IoU"]))]
        lines += ["| class | IoU |", "|---|---:|"]
        lines += [f"| {n} | {v:.4f} |" for n, v in zip(names, metrics["IoU"])]
        lines.append("")
    return "\n".join(lines)


def write_report(metrics: dict[str, Any], folder: str | Path, header: dict[str, Any],
                 class_names: list[str] | None = None, stem: str = "eval") -> tuple[Path, Path]:
    """<folder>/<stem>.json (header + metrics) and <stem>.md (header lines + table)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    doc = json_safe({**header, "metrics": metrics})
    json_path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    md_path = folder / f"{stem}.md"
    head = "\n".join(f"- {k}: `{v}`" for k, v in header.items())
    md_path.write_text(f"# Evaluation\n\n{head}\n\n{format_table(metrics, class_names)}")
    return json_path, md_path


