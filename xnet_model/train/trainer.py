"""The training loop: AdamW with per-module param groups, warm-up + poly LR, autocast, gradient
clipping, periodic evaluation, atomic resumable checkpoints, metrics.jsonl / TensorBoard, and
the exported model directory. Runs single-process or under torchrun (DDP)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..config import ModelConfig
from ..losses import MultiTaskLoss, SegmentationCELoss, SILogLoss
from ..metrics import json_safe
from ..xnet import XNet
from . import checkpoint as ckpt
from .config import TrainConfig, best_metric
from .data import eval_spec, train_dataset, val_dataset
from .distributed import (
    DistContext,
    ResumableSampler,
    ShardSampler,
    all_reduce_mean,
    barrier,
    dump_parameter_digest,
    init_distributed,
)
from .evaluate import evaluate, scalar_metrics

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def param_groups(model: XNet, lr: float, weight_decay: float,
                 encoder_lr_mult: float) -> list[dict[str, Any]]:
    """Encoder / rest x decay / no decay. Norm weights, biases and other 1-d tensors (layer
    scales) get no weight decay."""
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


class MetricsLog:
    """metrics.jsonl (one JSON object per line, flushed) and optional TensorBoard scalars."""

    def __init__(self, folder: Path | None, tensorboard: bool):
        self.path = folder / METRICS_FILE if folder is not None else None
        self.writer = None
        if folder is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                log.info("tensorboard not installed: scalars go to %s only", METRICS_FILE)
            else:
                self.writer = SummaryWriter(str(folder / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        if self.writer is not None:
            prefix = record.get("kind", "train")
            for key, value in _flatten(record).items():
                if key not in ("step", "kind") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """`Trainer(cfg).fit()` trains, evaluates, checkpoints and exports as `cfg` says."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext | None = None):
        self.cfg = cfg
        self.ctx = ctx or init_distributed(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        self.out_dir = Path(cfg.out_dir)
        self.model_cfg: ModelConfig = cfg.model_config()
        self.metric_name, self.metric_mode = best_metric(cfg, self.model_cfg)
        self.step = 0
        self.best: float | None = None
        self.last_eval: dict[str, Any] = {}
        resume_path = self._resume_path()
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for stale in ckpt.remove_stale_temps(self.out_dir):
                log.warning("removed an incomplete checkpoint write: %s", stale)
            (self.out_dir / "train_config.yaml").write_text(
                yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.log = MetricsLog(self.out_dir if self.ctx.is_main else None, cfg.tensorboard)

        if resume_path is not None:  # every weight comes from the checkpoint
            self.model_cfg.encoder.pretrained = False
            self.model_cfg.decoder.pretrained = False
        if self.ctx.distributed and not self.ctx.is_main:
            barrier(self.ctx)  # rank 0 fills the pretrained-weight cache first
        self.model = XNet(self.model_cfg).to(self.ctx.device)
        if self.ctx.distributed and self.ctx.is_main:
            barrier(self.ctx)
        self.stride = max(self.model.encoder.strides)
        self.init_report = None
        if cfg.init_from and resume_path is None:
            self.init_report = ckpt.transfer_weights(self.model, cfg.init_from)
            log.info(self.init_report.summary())
            self.log.write({"kind": "init_from", "step": 0, **self.init_report.to_dict()})

        self._build_data()
        o = cfg.optim
        self.total_steps = o.max_steps or o.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, o.lr, o.weight_decay, o.encoder_lr_mult),
            lr=o.lr, betas=tuple(o.betas),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            WarmupPoly(o.warmup_steps, self.total_steps, o.poly_power, o.warmup_start,
                       o.min_lr_ratio),
        )
        dtype = AUTOCAST_DTYPES.get(cfg.precision)
        self.autocast_dtype = dtype
        self.scaler = torch.amp.GradScaler(self.ctx.device.type,
                                           enabled=cfg.precision == "fp16")
        self.loss_fn = MultiTaskLoss(
            cfg.loss.weights,
            depth=SILogLoss(cfg.loss.silog_lambda, cfg.loss.silog_scale,
                            self.model_cfg.depth.min_depth if self.model_cfg.depth else 1e-3),
            semantic=SegmentationCELoss(self.model_cfg.semantic.ignore_index
                                        if self.model_cfg.semantic else 255),
        )
        self.ddp: nn.Module = self.model
        if self.ctx.distributed:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        if resume_path is not None:
            self._load(resume_path)

    # ---- set-up -----------------------------------------------------------------------------
    def _resume_path(self) -> Path | None:
        resume = self.cfg.resume
        if resume is False or resume is None:
            return None
        if resume is True:
            path = self.out_dir / ckpt.LAST
            if not path.is_file():
                log.info("resume: no %s yet, starting from step 0", path)
                return None
            return path
        path = Path(resume)
        if path.is_dir():
            path = path / ckpt.LAST
        if not path.is_file():
            raise FileNotFoundError(f"resume: checkpoint not found: {path}")
        return path

    def _build_data(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        d = cfg.data
        self.train_set = train_dataset(cfg, self.model_cfg)
        self.sampler = ResumableSampler(self.train_set, ctx.world_size, ctx.rank, cfg.seed)
        self.steps_per_epoch = self.sampler.num_samples // d.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training set ({len(self.train_set)} samples over "
                             f"{ctx.world_size} processes) is smaller than one batch")
        pin = ctx.device.type == "cuda"
        self.train_loader = DataLoader(
            self.train_set, batch_size=d.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=d.workers, pin_memory=pin,
            # worker seeds from their own generator: the global RNG stays untouched
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.spec = eval_spec(cfg, self.model_cfg)
        self.val_loader = None
        if d.kind == "synthetic" and d.synthetic.val_length == 0:
            return
        val_set = val_dataset(cfg, self.model_cfg)
        self.val_loader = DataLoader(
            val_set, batch_size=d.val_batch_size,
            sampler=ShardSampler(len(val_set), ctx.world_size, ctx.rank),
            num_workers=d.workers, pin_memory=pin,
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    @property
    def progress(self) -> bool:
        return self.cfg.progress and self.ctx.is_main and sys.stderr.isatty()

    # ---- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "best": {"metric": self.metric_name, "mode": self.metric_mode, "value": self.best},
            "eval": scalar_metrics(self.last_eval),
            "rng": ckpt.capture_rng(),
            "config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "world_size": self.ctx.world_size,
        }

    def save(self, best: bool = False) -> None:
        if not self.ctx.is_main:
            return
        state = self.state()
        ckpt.atomic_save(state, self.out_dir / ckpt.LAST)
        if best:
            ckpt.atomic_save(state, self.out_dir / ckpt.BEST)

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best = state["best"]["value"]
        if state.get("world_size", 1) != self.ctx.world_size:
            log.warning("resuming a %s-process run on %d processes: the data order changes",
                        state.get("world_size"), self.ctx.world_size)
        ckpt.restore_rng(state["rng"])
        log.info("resumed from %s at step %d", path, self.step)
        self.log.write({"kind": "resume", "step": self.step, "checkpoint": str(path)})

    # ---- loop ---------------------------------------------------------------------------------
    def _batches(self, start_step: int):
        """(epoch, batch) from `start_step` on; an epoch's order depends on seed + epoch only."""
        step = start_step
        bs = self.cfg.data.batch_size
        while True:
            epoch, done = divmod(step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, done * bs)
            for batch in self.train_loader:
                yield epoch, batch
                step += 1

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        dev = self.ctx.device
        image = batch["image"].to(dev, non_blocking=True)
        targets = {k: batch[k].to(dev, non_blocking=True) for k in ("depth", "labels")
                   if k in batch}
        with self.autocast():
            outputs = self.ddp(image)
        loss, values = self.loss_fn({k: v.float() for k, v in outputs.items()}, targets)
        if not math.isfinite(values["total"]):
            raise FloatingPointError(f"non-finite loss at step {self.step + 1}: {values}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            values["grad_norm"] = float(norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return values

    def run_eval(self) -> dict[str, Any]:
        return evaluate(self.model, self.val_loader, self.spec, self.ctx,
                        input_size=self.model_cfg.data.input_size, stride=self.stride,
                        flip_tta=self.cfg.eval.flip_tta, autocast=self.autocast(),
                        max_batches=self.cfg.eval.max_batches, progress=self.progress)

    def _log_window(self, window: dict[str, float], count: int, epoch: int,
                    elapsed: float) -> float:
        """One metrics.jsonl line: the window's mean losses over steps and ranks."""
        means = all_reduce_mean({k: v / count for k, v in window.items()}, self.ctx)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        self.log.write({
            "kind": "train", "step": self.step, "epoch": epoch,
            "lr": lrs.get("rest", max(lrs.values())),
            "lr_encoder": lrs.get("encoder", lrs.get("encoder_no_decay")),
            "grad_norm": means.pop("grad_norm", None), "loss": means,
            "samples_per_s": count * self.cfg.data.batch_size * self.ctx.world_size / elapsed,
        })
        return means["total"]

    def _evaluate_and_track(self) -> bool:
        """Evaluate, log, and return whether the tracked metric improved."""
        self.last_eval = self.run_eval()
        value = self.last_eval.get(self.metric_name)
        improved = self._improved(value)
        if improved:
            self.best = value
        self.log.write({"kind": "eval", "step": self.step,
                        "metrics": scalar_metrics(self.last_eval),
                        "best": {self.metric_name: self.best}})
        log.info("step %d eval: %s", self.step, _short(self.last_eval))
        return improved

    def _improved(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.metric_mode == "max" else value < self.best

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to the last step, evaluate, checkpoint and export. `stop_at` ends this run
        early at that step, with last.pt written there and nothing exported (resume later)."""
        from tqdm import tqdm

        cfg, total = self.cfg, self.total_steps
        end = total if stop_at is None else min(stop_at, total)
        log.info("training %s for %d steps (%d per epoch) on %d process(es), %s, %s",
                 self.model_cfg.name, total, self.steps_per_epoch, self.ctx.world_size,
                 self.ctx.device, cfg.precision)
        bar = tqdm(total=total, initial=self.step, desc="train", disable=not self.progress,
                   dynamic_ncols=True)
        window: dict[str, float] = {}
        count, t0 = 0, time.perf_counter()
        batches = self._batches(self.step)
        while self.step < end:
            epoch, batch = next(batches)
            for k, v in self.train_step(batch).items():
                window[k] = window.get(k, 0.0) + v
            self.step += 1
            count += 1
            bar.update(1)
            last = self.step == total
            if self.step % cfg.log_interval == 0 or last:
                loss = self._log_window(window, count, epoch, time.perf_counter() - t0)
                bar.set_postfix(loss=f"{loss:.4f}")
                window, count, t0 = {}, 0, time.perf_counter()
            evaluated = improved = False
            if self.val_loader is not None and (
                    last or (cfg.eval.interval and self.step % cfg.eval.interval == 0)):
                evaluated, improved = True, self._evaluate_and_track()
            if last or evaluated or self.step == end or (
                    cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0):
                self.save(best=improved)
        bar.close()
        if self.ctx.is_main and self.step == total:
            self.export()
        dump_parameter_digest(self.model, self.ctx)
        barrier(self.ctx)
        self.log.close()
        return {"step": self.step, "eval": self.last_eval, "best": self.best}

    # ---- export -------------------------------------------------------------------------------
    def export(self) -> Path:
        e = self.cfg.export
        folder = Path(e.dir) if e.dir else self.out_dir / "model"
        best_path = self.out_dir / ckpt.BEST
        model, source = self.model, "last"
        meta = {"step": self.step, "eval": scalar_metrics(self.last_eval)}
        if e.source == "best" and best_path.is_file():
            model, state = model_from_checkpoint(best_path)
            source, meta = "best", {"step": state["step"], "eval": state.get("eval", {})}
        meta["source"] = source
        model.save(folder, extra={"training": meta}, half=e.half)
        log.info("exported the %s model to %s", source, folder)
        return folder


def model_from_checkpoint(path: str | Path) -> tuple[XNet, dict[str, Any]]:
    """An XNet (cpu, eval mode) with the weights of a training checkpoint, and the checkpoint."""
    from ..config import resolve

    state = ckpt.load_checkpoint(path)
    cfg = resolve(state["model_config"])
    cfg.encoder.pretrained = False
    cfg.decoder.pretrained = False
    model = XNet(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), state


def _short(metrics: dict[str, Any]) -> str:
    keys = ("abs_rel", "rmse", "d1", "mIoU", "mAcc")
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
