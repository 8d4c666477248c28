"""torchrun / DDP plumbing: process-group set-up from the environment, resumable sharded
sampling, rank-0 helpers and cross-rank reductions. Single-process runs use the same code with
world_size 1 and no process group.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

log = logging.getLogger(__name__)

# When set to a folder, every rank writes params_rank<r>.txt (a SHA-256 of its parameters)
# at the end of training: equal files prove the DDP replicas stayed in sync.
PARAM_HASH_ENV = "XNET_DEBUG_PARAM_HASH_DIR"


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    # joined a process group although alone (a one-process torchrun): DDP and collectives run
    process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.process_group


def choose_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no CUDA device")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def process_group_backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (MASTER_ADDR / MASTER_PORT for the
    rendezvous) and join the process group: NCCL on CUDA, gloo on CPU. Under torchrun the group
    is joined even by a single process, so `torchrun --nproc_per_node=1` exercises the same
    DDP/NCCL path as a multi-GPU run."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = choose_device(device_preference, local_rank)
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    joined = False
    if (world_size > 1 or under_torchrun) and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = process_group_backend(device.type)
        dist.init_process_group(backend, init_method="env://", rank=rank,
                                world_size=world_size, timeout=timedelta(minutes=30))
        log.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend,
                 device)
        joined = True
    return DistContext(rank, world_size, local_rank, device, process_group=joined)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of each scalar over the ranks (every rank must pass the same keys)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


def all_gather_objects(obj, ctx: DistContext) -> list:
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's `obj` on every rank (picklable objects)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool | torch.Tensor, ctx: DistContext) -> bool:
    """True on every rank when `flag` is true on at least one: a decision all ranks share, so
    none of them waits alone in a collective the others skipped."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.as_tensor(flag, dtype=torch.float32, device=ctx.device).reshape(1).clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch) that can start an epoch part-way, and that
    yields (epoch, index) keys so a dataset can seed its augmentation per epoch and sample.

    With these keys, the data of step s depends on s alone, never on how many processes,
    workers or restarts came before: a resumed run sees exactly the batches of an
    uninterrupted one.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int,
                 shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Epoch `epoch`, leaving out this rank's first `skip` samples."""
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in itertools.islice(super().__iter__(), self.skip, None))

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class ShardSampler(Sampler):
    """Evaluation shard: indices rank, rank + world, ... (no padding, so no sample counts
    twice in the gathered metrics)."""

    def __init__(self, length: int, num_replicas: int, rank: int):
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dump_parameter_digest(model: torch.nn.Module, ctx: DistContext) -> Path | None:
    folder = os.environ.get(PARAM_HASH_ENV)
    if not folder:
        return None
    path = Path(folder) / f"params_rank{ctx.rank}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(parameter_digest(model) + "\n")
    return path
