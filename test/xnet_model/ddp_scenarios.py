"""Multi-process training scenarios for test_distributed.py, run by torch.distributed.run:

    python -m torch.distributed.run --nproc_per_node=2 ddp_scenarios.py SCENARIO OUT_DIR

Each rank runs several short Trainer runs in one gloo process group and writes what it saw to
OUT_DIR/SCENARIO_rank<r>.json; the test compares the ranks. Not a test module itself.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from timm.layers import DropPath

from xnet_model.config import deep_merge
from xnet_model.train.config import load_train_config
from xnet_model.train.distributed import init_distributed, parameter_digest
from xnet_model.train.trainer import Trainer

MODEL = {"encoder": {"name": "test_convnext", "drop_path_rate": 0.3},
         "decoder": {"name": "test_convnext", "drop_path_rate": 0.3},
         "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 10},
         "data": {"input_size": [48, 64]}}


def config(out_dir: Path, **sections) -> dict:
    base = {
        "model": MODEL,
        "data": {"batch_size": 1, "workers": 0,  # batch 1: the NYU/KITTI configs' per-GPU batch
                 "synthetic": {"image_size": [48, 64], "train_length": 16, "val_length": 0}},
        "optim": {"max_steps": 6, "lr": 2e-3, "warmup_steps": 1},
        "log_interval": 1, "checkpoint_interval": 0, "out_dir": str(out_dir),
        "progress": False, "device": "cpu", "num_threads": 1, "seed": 5,
    }
    return deep_merge(base, sections)


def train(cfg: dict, stop_at: int | None = None, patch=None) -> tuple[Trainer, list]:
    """Run a Trainer; returns it and the drop-path keep/drop pattern of every forward."""
    trainer = Trainer(load_train_config(cfg))
    if patch is not None:
        patch(trainer)
    patterns: list = []
    for module in trainer.model.modules():
        if isinstance(module, DropPath):
            module.register_forward_hook(
                lambda m, i, o: patterns.append((o.flatten(1) == 0).all(1).tolist()))
    trainer.fit(stop_at=stop_at)
    return trainer, patterns


def resume(out: Path, rank: int) -> dict:
    result: dict = {}
    straight, patterns = train(config(out / "straight"))
    result["straight_digest"] = parameter_digest(straight.model)
    result["drop_patterns"] = patterns
    train(config(out / "split"), stop_at=3)
    # Rank 1 looks in a folder without last.pt, like a node that does not (yet) see the file:
    # rank 0's decision must hold for both.
    own = out / "split" if rank == 0 else out / f"elsewhere_{rank}"
    resumed = Trainer(load_train_config(config(own, resume=True)))
    result["resumed_from"] = resumed.step
    resumed.fit()
    result["resumed_digest"] = parameter_digest(resumed.model)
    result["resumed_step"] = resumed.step

    # A rank that cannot read rank 0's checkpoint stops every rank with one clear error.
    original = Path.is_file
    if rank == 1:
        Path.is_file = lambda self: False if self.name == "last.pt" else original(self)
    try:
        Trainer(load_train_config(config(out / "split", resume=True)))
        result["blind_error"] = None
    except FileNotFoundError as exc:
        result["blind_error"] = str(exc)
    finally:
        Path.is_file = original
    return result


def robust(out: Path, rank: int) -> dict:
    result: dict = {}

    def nan_on_rank1_at_step2(trainer: Trainer) -> None:
        loss_fn = trainer.loss_fn

        def poisoned(outputs, targets):
            loss, values = loss_fn(outputs, targets)
            if rank == 1 and trainer.step == 1:  # computing step 2
                loss = loss * math.nan
            return loss, values

        trainer.loss_fn = poisoned

    nan, _ = train(config(out / "nan", optim={"max_steps": 4}), patch=nan_on_rank1_at_step2)
    result["nan_skipped"] = nan.skipped_steps
    result["nan_step"] = nan.step
    result["nan_digest"] = parameter_digest(nan.model)
    result["nan_scheduler_steps"] = nan.scheduler.last_epoch

    acc, _ = train(config(out / "accumulate", optim={"max_steps": 3, "accumulate": 2},
                          model=deep_merge(MODEL, {"grad_checkpointing": True})))
    result["accumulate_digest"] = parameter_digest(acc.model)
    result["accumulate_step"] = acc.step
    result["checkpointed"] = acc.checkpointed_modules
    result["broadcast_buffers"] = acc.ddp.broadcast_buffers
    result["bucket_view"] = acc.ddp.gradient_as_bucket_view
    return result


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    ctx = init_distributed("cpu")
    result = {"resume": resume, "robust": robust}[scenario](out, ctx.rank)
    (out / f"{scenario}_rank{ctx.rank}.json").write_text(json.dumps(result))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
