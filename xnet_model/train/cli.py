"""`xnet train` and `xnet eval` (dispatched by xnet_model.cli); both run under torchrun too."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError, deep_merge
from ..weights import WeightsError

log = logging.getLogger(__name__)


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xnet train", description="Train an xNet from a YAML config (docs/training.md).")
    p.add_argument("--config", required=True, help="training config YAML (config/train/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, values parsed as YAML (optim.lr=1e-4)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from <out_dir>/last.pt, or from CHECKPOINT")
    p.add_argument("--init-from", metavar="PATH",
                   help="checkpoint or saved model dir to transfer E/D/PFP/RS weights from")
    p.add_argument("--out-dir", help="output folder (checkpoints, metrics.jsonl, model/)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--export-only", action="store_true",
                   help="only export <out_dir>/best.pt (or last.pt) to the model directory")
    return p


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: argparse gave the bare flag's optional value an override
        args.overrides.append(args.resume)
        args.resume = True
    if args.resume is not None:
        out["resume"] = args.resume
    if args.init_from:
        out["init_from"] = args.init_from
    if args.out_dir:
        out["out_dir"] = args.out_dir
    if args.no_progress:
        out["progress"] = False
    return out


def train_main(argv: list[str]) -> int:
    args = _train_parser().parse_intermixed_args(argv)
    from .config import load_train_config, parse_overrides

    try:
        flags = _flag_overrides(args)
        overrides = deep_merge(parse_overrides(args.overrides), flags)
        cfg = load_train_config(args.config, overrides)
    except ConfigError as exc:
        print(f"xnet train: config error: {exc}", file=sys.stderr)
        return 2
    if args.export_only:
        return _export_only(cfg)
    from .distributed import cleanup
    from .trainer import Trainer

    try:
        result = Trainer(cfg).fit()
    except (WeightsError, FileNotFoundError) as exc:
        print(f"xnet train: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    log.info("finished at step %d; best %s", result["step"], result["best"])
    return 0


def _export_only(cfg) -> int:
    from . import checkpoint as ckpt
    from .trainer import model_from_checkpoint

    out = Path(cfg.out_dir)
    path = out / ckpt.BEST if cfg.export.source == "best" else out / ckpt.LAST
    if not path.is_file():
        path = out / ckpt.LAST
    try:
        model, state = model_from_checkpoint(path)
    except WeightsError as exc:
        print(f"xnet train: {exc}", file=sys.stderr)
        return 1
    folder = Path(cfg.export.dir) if cfg.export.dir else out / "model"
    meta = {"step": state["step"], "eval": state.get("eval", {}), "source": path.stem}
    model.save(folder, extra={"training": meta}, half=cfg.export.half)
    print(f"exported {path} (step {state['step']}) to {folder}")
    return 0


# ---- eval ------------------------------------------------------------------------------------


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xnet eval",
        description="Evaluate a saved model (or a training checkpoint) on a config's val set.")
    p.add_argument("--model", required=True,
                   help="saved model dir (XNet.save) or training checkpoint (.pt)")
    p.add_argument("--config", required=True, help="training config whose data section to use")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.add_argument("--out", help="folder for eval.json / eval.md (default: next to the model)")
    p.add_argument("--flip-tta", action="store_true", help="average with the flipped image")
    p.add_argument("--max-batches", type=int, help="evaluate only this many batches")
    p.add_argument("--no-progress", action="store_true")
    return p


def eval_main(argv: list[str]) -> int:
    args = _eval_parser().parse_intermixed_args(argv)
    from .config import load_train_config, parse_overrides, validate

    model_path = Path(args.model)
    try:
        cfg = load_train_config(args.config, parse_overrides(args.overrides))
        model = _load_any(model_path)
        cfg.model = model.cfg.to_dict()  # the dataset of the config, the model of the file
        validate(cfg, training=False)  # a head the dataset does not score is simply not scored
    except (ConfigError, WeightsError) as exc:
        print(f"xnet eval: {exc}", file=sys.stderr)
        return 2
    if args.flip_tta:
        cfg.eval.flip_tta = True
    if args.max_batches is not None:
        cfg.eval.max_batches = args.max_batches
    from .distributed import cleanup

    try:
        metrics, spec, header = _run_eval(cfg, model, args, model_path)
    except FileNotFoundError as exc:  # DatasetError: a missing split file, image, ...
        print(f"xnet eval: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if metrics is None:  # not rank 0
        return 0
    from .evaluate import format_table, write_report

    print(format_table(metrics, spec.class_names))
    out = Path(args.out) if args.out else (model_path if model_path.is_dir()
                                           else model_path.parent)
    json_path, md_path = write_report(metrics, out, header, spec.class_names)
    print(f"wrote {json_path} and {md_path}")
    return 0


def _load_any(path: Path):
    from ..persistence import load_model
    from .trainer import model_from_checkpoint

    if path.is_dir():
        return load_model(path)
    return model_from_checkpoint(path)[0]


def _run_eval(cfg, model, args, model_path: Path):
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    from . import hardware as hw
    from .data import eval_spec, samples_without_ground_truth, val_dataset
    from .distributed import ShardSampler, init_distributed
    from .evaluate import evaluate
    from .trainer import AUTOCAST_DTYPES

    ctx = init_distributed(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    capability, name = hw.device_properties(ctx.device)
    if ctx.device.type == "cuda":
        perf = cfg.performance
        hw.apply_cuda_settings(hw.cuda_settings("cuda", capability, perf.cudnn_benchmark,
                                                perf.tf32))
    advice = hw.precision_advice(cfg.precision, ctx.device.type, capability, name)
    if advice and ctx.is_main:
        log.warning(advice)
    model = model.to(ctx.device).eval()
    spec = eval_spec(cfg, model.cfg)
    dataset = val_dataset(cfg, model.cfg)
    hw.prepare_loader_workers(cfg.data.workers)
    loader = DataLoader(dataset, batch_size=cfg.data.val_batch_size,
                        sampler=ShardSampler(len(dataset), ctx.world_size, ctx.rank),
                        **hw.loader_options(ctx.device.type, cfg.data.workers, False))
    dtype = AUTOCAST_DTYPES.get(cfg.precision)
    autocast = (torch.autocast(ctx.device.type, dtype=dtype) if dtype
                else contextlib.nullcontext())
    progress = not args.no_progress and ctx.is_main and sys.stderr.isatty()
    metrics = evaluate(model, loader, spec, ctx, input_size=model.cfg.data.input_size,
                       stride=model.size_multiple, flip_tta=cfg.eval.flip_tta,
                       autocast=autocast, max_batches=cfg.eval.max_batches, progress=progress,
                       canonical_focal=model.cfg.data.canonical_focal)
    if not ctx.is_main:
        return None, spec, {}
    d = cfg.data
    header = {
        "model": str(model_path), "config": str(args.config), "dataset": d.kind,
        "split": (f"synthetic seeds {d.synthetic.val_seed_offset}.."
                  f"{d.synthetic.val_seed_offset + d.synthetic.val_length - 1}"
                  if d.kind == "synthetic" else d.val_split),
        "input_size": model.cfg.data.input_size, "crop": spec.crop,
        "max_depth": spec.max_depth if "depth" in spec.tasks else None,
        "flip_tta": cfg.eval.flip_tta, "precision": cfg.precision,
        "canonical_focal": model.cfg.data.canonical_focal,
        # split lines whose ground truth is 'None' (BTS KITTI test split): not scored
        "samples_without_ground_truth": samples_without_ground_truth(dataset),
    }
    return metrics, spec, header
