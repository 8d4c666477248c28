"""The training loop: AdamW with per-module param groups, warm-up + poly LR, autocast, gradient
accumulation and clipping, steps skipped in agreement across ranks when a loss is not finite,
periodic evaluation, atomic resumable checkpoints, metrics.jsonl / TensorBoard, and the exported
model directory. Runs single-process or under torchrun (DDP)."""

from __future__ import annotations

import contextlib
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
from ..xnet import XNet
from . import checkpoint as ckpt
from . import hardware as hw
from .checkpoint import model_from_checkpoint
from .config import TrainConfig, best_metric
from .data import eval_spec, samples_without_ground_truth, train_dataset, val_dataset
from .distributed import (
    DistContext,
    ResumableSampler,
    ShardSampler,
    all_gather_objects,
    all_reduce_mean,
    any_rank,
    barrier,
    dump_parameter_digest,
    init_distributed,
)
from .evaluate import evaluate, scalar_metrics
from .metrics_log import METRICS_FILE, MetricsLog
from .optim import WarmupPoly, align_step_tensors, param_groups

__all__ = ["AUTOCAST_DTYPES", "METRICS_FILE", "MetricsLog", "Trainer", "WarmupPoly",
           "model_from_checkpoint", "param_groups", "seed_everything"]

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        self.step = 0  # optimizer steps taken or skipped: the data position
        self.skipped_steps = 0
        self._skips_in_a_row = 0
        self.best: float | None = None
        self.last_eval: dict[str, Any] = {}
        resume_path = ckpt.agreed_resume_path(cfg.resume, self.out_dir, self.ctx)
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for stale in ckpt.remove_stale_temps(self.out_dir):
                log.warning("removed an incomplete checkpoint write: %s", stale)
            (self.out_dir / "train_config.yaml").write_text(
                yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.log = MetricsLog(self.out_dir if self.ctx.is_main else None, cfg.tensorboard)
        self._configure_device()
        self._build_model(resume_path)
        if self.ctx.rank:  # own random streams per rank (drop path); rank 0 keeps cfg.seed's
            seed_everything(hw.process_seed(cfg.seed, self.ctx.rank))
        self._build_data()
        o = cfg.optim
        self.total_steps = o.max_steps or o.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, o.lr, o.weight_decay, o.encoder_lr_mult),
            lr=o.lr, betas=tuple(o.betas),
            **hw.adamw_options(self.ctx.device.type, cfg.performance.fused_adamw),
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule())
        self.autocast_dtype = AUTOCAST_DTYPES.get(cfg.precision)
        self.scaler = hw.make_grad_scaler(self.ctx.device.type, cfg.precision == "fp16")
        self.loss_fn = MultiTaskLoss(
            cfg.loss.weights,
            depth=SILogLoss(cfg.loss.silog_lambda, cfg.loss.silog_scale,
                            self.model_cfg.depth.min_depth if self.model_cfg.depth else 1e-3),
            semantic=SegmentationCELoss(self.model_cfg.semantic.ignore_index
                                        if self.model_cfg.semantic else 255),
        )
        if resume_path is not None:  # before DDP, whose start copies rank 0's weights to all
            self._load(resume_path)
        self.ddp: nn.Module = self.model
        self._no_sync = contextlib.nullcontext
        if self.ctx.distributed:
            ddp = DistributedDataParallel(self.model, **hw.ddp_options(self.model,
                                                                       self.ctx.device))
            self.ddp, self._no_sync = ddp, ddp.no_sync
        if cfg.performance.compile:
            self.ddp = torch.compile(self.ddp, **cfg.performance.compile_options)

    # ---- set-up -----------------------------------------------------------------------------
    def _configure_device(self) -> None:
        """cuDNN autotuning and TF32 on GPUs that have them; a warning for emulated bf16."""
        device, perf = self.ctx.device, self.cfg.performance
        capability, name = hw.device_properties(device)
        settings = hw.cuda_settings(device.type, capability, perf.cudnn_benchmark, perf.tf32)
        if device.type == "cuda":
            hw.apply_cuda_settings(settings)
        advice = hw.precision_advice(self.cfg.precision, device.type, capability, name)
        self.device_notes = settings.notes + ([advice] if advice else [])
        for note in self.device_notes if self.ctx.is_main else ():
            log.warning(note)

    def _build_model(self, resume_path: Path | None) -> None:
        cfg, ctx = self.cfg, self.ctx
        if resume_path is not None or cfg.init_from:
            # every encoder/decoder weight comes from the checkpoint or from init_from (which
            # stops on any that does not fit): downloading hub weights would only be overwritten
            self.model_cfg.encoder.pretrained = False
            self.model_cfg.decoder.pretrained = False
        from_hub = True in (self.model_cfg.encoder.pretrained, self.model_cfg.decoder.pretrained)
        wait = ctx.distributed and from_hub
        if wait and not ctx.is_main:
            barrier(ctx)  # rank 0 fills the pretrained-weight cache first
        self.model = XNet(self.model_cfg)
        if wait and ctx.is_main:
            barrier(ctx)
        self.init_report = None
        if cfg.init_from and resume_path is None:
            self.init_report = ckpt.transfer_weights(self.model, cfg.init_from)
            log.info(self.init_report.summary())
            self.log.write({"kind": "init_from", "step": 0, **self.init_report.to_dict()})
        self.checkpointed_modules: list[str] = []
        if cfg.grad_checkpointing:
            self.checkpointed_modules = hw.enable_grad_checkpointing(self.model)
        self.model.to(ctx.device)
        if cfg.performance.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.stride = self.model.size_multiple

    def _build_data(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        d = cfg.data
        self.train_set = train_dataset(cfg, self.model_cfg)
        self.sampler = ResumableSampler(self.train_set, ctx.world_size, ctx.rank, cfg.seed)
        per_step = d.batch_size * cfg.optim.accumulate
        self.steps_per_epoch = self.sampler.num_samples // per_step
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training set ({len(self.train_set)} samples over "
                             f"{ctx.world_size} processes) is smaller than one step "
                             f"({d.batch_size} x {cfg.optim.accumulate} samples per process)")
        options = hw.loader_options(ctx.device.type, d.workers, d.persistent_workers)
        hw.prepare_loader_workers(d.workers)
        self.train_loader = DataLoader(
            self.train_set, batch_size=d.batch_size, sampler=self.sampler, drop_last=True,
            # worker seeds from their own generator: the global RNG stays untouched
            generator=torch.Generator().manual_seed(cfg.seed), **options,
        )
        self._report_without_ground_truth("training", self.train_set)
        self.spec = eval_spec(cfg, self.model_cfg)
        self.val_loader = None
        self.val_without_ground_truth = 0
        if d.kind == "synthetic" and d.synthetic.val_length == 0:
            return
        val_set = val_dataset(cfg, self.model_cfg)
        self.val_without_ground_truth = self._report_without_ground_truth("validation", val_set)
        self.val_loader = DataLoader(
            val_set, batch_size=d.val_batch_size,
            sampler=ShardSampler(len(val_set), ctx.world_size, ctx.rank), **options,
        )

    def _report_without_ground_truth(self, split: str, dataset) -> int:
        count = samples_without_ground_truth(dataset)
        if count and self.ctx.is_main:
            log.warning("%s split: %d line(s) without ground truth ('None') left out",
                        split, count)
        return count

    def _schedule(self) -> WarmupPoly:
        o = self.cfg.optim
        return WarmupPoly(o.warmup_steps, self.total_steps, o.poly_power, o.warmup_start,
                          o.min_lr_ratio)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    @property
    def progress(self) -> bool:
        return self.cfg.progress and self.ctx.is_main and sys.stderr.isatty()

    # ---- checkpoints --------------------------------------------------------------------------
    def state(self, rng_per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        rngs = rng_per_rank or [ckpt.capture_rng(self.ctx.device)]
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "skipped_steps": self.skipped_steps,
            "best": {"metric": self.metric_name, "mode": self.metric_mode, "value": self.best},
            "eval": scalar_metrics(self.last_eval),
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "world_size": self.ctx.world_size,
        }

    def save(self, best: bool = False) -> None:
        """Write last.pt (and best.pt) on rank 0. Every rank must call it: each one's RNG
        states are gathered into the checkpoint, so that a resumed run is exact on every rank."""
        rngs = all_gather_objects(ckpt.capture_rng(self.ctx.device), self.ctx)
        if not self.ctx.is_main:
            return
        state = self.state(rngs)
        ckpt.atomic_save(state, self.out_dir / ckpt.LAST)
        if best:
            ckpt.atomic_save(state, self.out_dir / ckpt.BEST)

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        current = [{k: v for k, v in g.items() if k != "params"}
                   for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, current):
            group.update(settings)  # this config's weight decay, betas, fused, ...
        align_step_tensors(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.best = state["best"]["value"]
        self._rebuild_schedule(self.scheduler.last_epoch)
        saved_world = state.get("world_size", 1)
        rngs = state.get("rng_per_rank")
        if saved_world != self.ctx.world_size:
            if self.ctx.is_main:
                log.warning("resuming a %s-process run on %d processes: the data order and the "
                            "random streams change", saved_world, self.ctx.world_size)
        elif rngs is not None:
            ckpt.restore_rng(rngs[self.ctx.rank], self.ctx.device)
        elif self.ctx.is_main:  # a checkpoint from before per-rank states
            ckpt.restore_rng(state["rng"], self.ctx.device)
        log.info("resumed from %s at step %d", path, self.step)
        self.log.write({"kind": "resume", "step": self.step, "checkpoint": str(path)})

    def _rebuild_schedule(self, position: int) -> None:
        """The current config's schedule (length, warm-up, lr) at `position` optimizer steps.
        A checkpoint's scheduler holds the schedule of the run that wrote it; when max_steps,
        epochs, the world size or accumulate changed, its length would be wrong (LR 0 for the
        rest of a longer run)."""
        fn = self._schedule()
        sched = self.scheduler
        sched.lr_lambdas = [fn] * len(self.optimizer.param_groups)
        sched.base_lrs = list(self.base_lrs)
        sched.last_epoch = position
        lrs = [base * fn(position) for base in self.base_lrs]
        for group, base, lr in zip(self.optimizer.param_groups, self.base_lrs, lrs):
            group["initial_lr"], group["lr"] = base, lr
        sched._last_lr = lrs  # what get_last_lr() reports

    # ---- loop ---------------------------------------------------------------------------------
    def _batches(self, start_step: int):
        """(epoch, the micro-batches of one step) from `start_step` on; an epoch's order
        depends on seed + epoch only. Micro-batches left over at an epoch's end are dropped."""
        step = start_step
        accumulate = self.cfg.optim.accumulate
        while True:
            epoch, done = divmod(step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, done * self.cfg.data.batch_size * accumulate)
            group = []
            for batch in self.train_loader:
                group.append(batch)
                if len(group) < accumulate:
                    continue
                yield epoch, group
                group = []
                step += 1
                if step % self.steps_per_epoch == 0:
                    break

    def train_step(self, batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]
                   ) -> dict[str, float]:
        """One optimizer step on a batch, or on a list of micro-batches whose gradients are
        accumulated (DDP synchronises on the last one only).

        A loss that is not finite on any rank skips the step on every rank (no backward, no
        optimizer or scheduler step), and so does an fp16 gradient overflow (GradScaler).
        Returns the mean losses over the micro-batches, 'grad_norm' (with clipping), and
        'skipped' (1.0 when the optimizer did not step).
        """
        micro = [batch] if isinstance(batch, dict) else list(batch)
        self.optimizer.zero_grad(set_to_none=True)
        values: dict[str, float] = {}
        for i, b in enumerate(micro):
            last = i == len(micro) - 1
            with contextlib.nullcontext() if last else self._no_sync():
                loss, losses = self._forward(b)
                if any_rank(~torch.isfinite(loss.detach()), self.ctx):
                    self.optimizer.zero_grad(set_to_none=True)
                    return self._skip({}, "the loss is not finite")
                self.scaler.scale(loss / len(micro)).backward()
            for k, v in losses.items():
                values[k] = values.get(k, 0.0) + v / len(micro)
        if self.cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            values["grad_norm"] = float(norm)
            if not self.scaler.is_enabled() and not math.isfinite(values["grad_norm"]):
                # the norm of the all-reduced gradients: every rank sees the same value
                self.optimizer.zero_grad(set_to_none=True)
                return self._skip(values, "the gradients are not finite")
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            return self._skip(values, "fp16 gradients overflowed (GradScaler lowers its scale)")
        self.scheduler.step()
        self._skips_in_a_row = 0
        values["skipped"] = 0.0
        return values

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        dev = self.ctx.device
        image = batch["image"].to(dev, non_blocking=True)
        if self.cfg.performance.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        targets = {k: batch[k].to(dev, non_blocking=True) for k in ("depth", "labels")
                   if k in batch}
        with self.autocast():
            outputs = self.ddp(image)
        return self.loss_fn({k: v.float() for k, v in outputs.items()}, targets)

    def _skip(self, values: dict[str, float], why: str) -> dict[str, float]:
        self.skipped_steps += 1
        self._skips_in_a_row += 1
        if self.ctx.is_main:
            log.warning("step %d skipped on every rank: %s (%d skipped in this run so far)",
                        self.step + 1, why, self.skipped_steps)
        limit = self.cfg.optim.max_skipped_steps
        if self._skips_in_a_row > limit:
            raise FloatingPointError(
                f"{self._skips_in_a_row} steps in a row skipped, the last at step "
                f"{self.step + 1}: {why} (optim.max_skipped_steps = {limit})")
        values.pop("grad_norm", None)
        values["skipped"] = 1.0
        return values

    def run_eval(self) -> dict[str, Any]:
        return evaluate(self.model, self.val_loader, self.spec, self.ctx,
                        input_size=self.model_cfg.data.input_size, stride=self.stride,
                        flip_tta=self.cfg.eval.flip_tta, autocast=self.autocast(),
                        max_batches=self.cfg.eval.max_batches, progress=self.progress,
                        canonical_focal=self.model_cfg.data.canonical_focal)

    def _log_window(self, window: dict[str, float], counts: dict[str, int], skipped: int,
                    steps: int, epoch: int, elapsed: float) -> float:
        """One metrics.jsonl line: the window's mean losses over steps and ranks."""
        means = all_reduce_mean({k: v / counts[k] for k, v in window.items()}, self.ctx)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        samples = steps * self.cfg.data.batch_size * self.cfg.optim.accumulate
        self.log.write({
            "kind": "train", "step": self.step, "epoch": epoch,
            "lr": lrs.get("rest", max(lrs.values())),
            "lr_encoder": lrs.get("encoder", lrs.get("encoder_no_decay")),
            "grad_norm": means.pop("grad_norm", None), "loss": means, "skipped": skipped,
            "samples_per_s": samples * self.ctx.world_size / elapsed,
        })
        return means.get("total", math.nan)

    def _evaluate_and_track(self) -> bool:
        """Evaluate, log, and return whether the tracked metric improved."""
        self.last_eval = self.run_eval()
        value = self.last_eval.get(self.metric_name)
        improved = self._improved(value)
        if improved:
            self.best = value
        record = {"kind": "eval", "step": self.step, "metrics": scalar_metrics(self.last_eval),
                  "best": {self.metric_name: self.best}}
        if self.val_without_ground_truth:
            record["without_ground_truth"] = self.val_without_ground_truth
        self.log.write(record)
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
        log.info("training %s for %d steps (%d per epoch, %d micro-batch(es) of %d each) on %d "
                 "process(es), %s, %s", self.model_cfg.name, total, self.steps_per_epoch,
                 cfg.optim.accumulate, cfg.data.batch_size, self.ctx.world_size,
                 self.ctx.device, cfg.precision)
        bar = tqdm(total=total, initial=min(self.step, total), desc="train",
                   disable=not self.progress, dynamic_ncols=True)
        window: dict[str, float] = {}
        counts: dict[str, int] = {}
        steps = skipped = 0
        t0 = time.perf_counter()
        batches = self._batches(self.step)
        while self.step < end:
            epoch, group = next(batches)
            values = self.train_step(group)
            skipped += int(values.pop("skipped", 0.0))
            for k, v in values.items():
                window[k] = window.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            self.step += 1
            steps += 1
            bar.update(1)
            last = self.step == total
            if self.step % cfg.log_interval == 0 or last:
                loss = self._log_window(window, counts, skipped, steps, epoch,
                                        time.perf_counter() - t0)
                bar.set_postfix(loss=f"{loss:.4f}")
                window, counts, steps, skipped = {}, {}, 0, 0
                t0 = time.perf_counter()
            evaluated = improved = False
            if self.val_loader is not None and (
                    last or (cfg.eval.interval and self.step % cfg.eval.interval == 0)):
                evaluated, improved = True, self._evaluate_and_track()
            if last or evaluated or self.step == end or (
                    cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0):
                self.save(best=improved)
        bar.close()
        if self.ctx.is_main and self.step >= total:
            self.export()
        dump_parameter_digest(self.model, self.ctx)
        barrier(self.ctx)
        self.log.close()
        return {"step": self.step, "eval": self.last_eval, "best": self.best,
                "skipped_steps": self.skipped_steps}

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


def _short(metrics: dict[str, Any]) -> str:
    keys = ("abs_rel", "rmse", "d1", "mIoU", "mAcc")
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
