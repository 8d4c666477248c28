"""The ImageNet stand-in: a timm classifier trained on `SyntheticCropDataset`.

Its output, `classifier.pth`, is a plain timm state dict (classifier head included), so a model
config loads it into the encoder and the decoder with `pretrained: <path>` like any ImageNet
checkpoint. Training is resumable: `state.pt` (model, optimizer, scheduler, step) is written
atomically every `checkpoint_interval` steps, and the data order depends on (seed, epoch) only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import CLASS_NAMES
from ..data.synthetic_crops import SyntheticCropDataset
from ..train.checkpoint import atomic_save, remove_stale_temps
from ..train.optim import param_groups
from ..train.trainer import WarmupPoly, seed_everything
from .plan import CLASSIFIER_FILE, ClassifierSpec

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


def _batches(dataset: SyntheticCropDataset, batch_size: int, seed: int, start: int):
    """(step, images, labels) from step `start` on; epoch e's order is a permutation seeded by
    (seed, e), and every epoch cuts new crops (`set_epoch`)."""
    per_epoch = len(dataset) // batch_size
    step = start
    while True:
        epoch, offset = divmod(step, per_epoch)
        dataset.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(dataset))
        for b in range(offset, per_epoch):
            items = [dataset[int(i)] for i in order[b * batch_size:(b + 1) * batch_size]]
            yield step, torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
            step += 1


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, dataset: SyntheticCropDataset,
                        batch_size: int = 128) -> dict[str, Any]:
    """Top-1 accuracy, balanced accuracy (mean per-class recall) and per-class recall."""
    was_training = model.training
    model.eval()
    k = dataset.num_classes
    confusion = np.zeros((k, k), np.int64)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        pred = model(torch.stack([x for x, _ in items])).argmax(1).numpy()
        np.add.at(confusion, ([y for _, y in items], pred), 1)
    model.train(was_training)
    support = confusion.sum(1)
    recall = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return {
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "balanced_accuracy": float(np.nanmean(recall)),
        "per_class_recall": {n: (None if np.isnan(r) else float(r))
                             for n, r in zip(CLASS_NAMES, recall)},
        "support": {n: int(s) for n, s in zip(CLASS_NAMES, support)},
        "count": int(confusion.sum()),
    }


def train_classifier(spec: ClassifierSpec, seed: int, folder: str | Path,
                     num_threads: int | None = None) -> dict[str, Any]:
    """Train (or resume) the classifier in `folder`; write `classifier.pth`; return the result
    record: held-out accuracy, curves, timing."""
    import timm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    if num_threads:
        torch.set_num_threads(num_threads)
    seed_everything(seed)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    render = tuple(spec.render_size)
    train_set = SyntheticCropDataset(spec.train_scenes, spec.crop_size, render,
                                     spec.train_seed_offset, train=True)
    val_set = SyntheticCropDataset(spec.val_scenes, spec.crop_size, render,
                                   spec.val_seed_offset, train=False)
    model = timm.create_model(spec.model, pretrained=False, num_classes=train_set.num_classes)
    optimizer = torch.optim.AdamW(param_groups(model, spec.lr, spec.weight_decay, 1.0),
                                  lr=spec.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupPoly(spec.warmup_steps, spec.steps, 0.9))
    step, curves = 0, {"train": [], "eval": []}
    state_path = folder / STATE_FILE
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, curves = int(state["step"]), state["curves"]
        log.info("classifier: resumed at step %d", step)

    def save_state() -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step, "curves": curves},
                    state_path)

    model.train()
    window, count, final = 0.0, 0, None
    batches = _batches(train_set, spec.batch_size, seed, step)
    while step < spec.steps:
        _, images, labels = next(batches)
        loss = F.cross_entropy(model(images), labels, label_smoothing=spec.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        window, count = window + loss.item(), count + 1
        if step % 20 == 0 or step == spec.steps:
            curves["train"].append({"step": step, "loss": window / count})
            log.info("classifier step %d/%d loss %.4f", step, spec.steps, window / count)
            window, count = 0.0, 0
        if step == spec.steps or (spec.eval_interval and step % spec.eval_interval == 0):
            final = evaluate_classifier(model, val_set)
            curves["eval"].append({"step": step, "accuracy": final["accuracy"],
                                   "balanced_accuracy": final["balanced_accuracy"]})
            log.info("classifier step %d held-out accuracy %.4f (balanced %.4f)", step,
                     final["accuracy"], final["balanced_accuracy"])
        if step < spec.steps and spec.checkpoint_interval and step % spec.checkpoint_interval == 0:
            save_state()
    if final is None:  # resumed after the last step
        final = evaluate_classifier(model, val_set)
    atomic_save(model.state_dict(), folder / CLASSIFIER_FILE)
    state_path.unlink(missing_ok=True)
    return {
        "metrics": final,
        "curves": curves,
        "steps": step,
        "checkpoint": str(folder / CLASSIFIER_FILE),
        "wall_s": time.perf_counter() - t_wall,  # this process only, after a resume
        "cpu_s": time.process_time() - t_cpu,
    }
