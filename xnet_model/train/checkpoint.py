"""Training checkpoints (atomic writes, RNG states) and `init_from` weight transfer.

A checkpoint is a torch file of plain containers and tensors (loadable with
`weights_only=True`): model, optimizer, scheduler, scaler, step, epoch, best metric, RNG states
(python, numpy, torch, cuda; one set per rank), the training config and the resolved model
config. Loading memory-maps the file (`mmap=True`): a rank reads the tensors it copies instead of
holding a second full copy of a multi-GB checkpoint in memory.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from ..files import default_file_mode
from ..weights import WeightsError, read_checkpoint
from ..xnet import WEIGHTS_FILE, XNet
from .distributed import DistContext, all_gather_objects, broadcast_object

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
TMP_SUFFIX = ".tmp"  # in-progress writes: ".<name>.<random>.tmp", never "*.pt"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any],
                 mode: int | None = None) -> Path:
    """`write(file)` into a temporary file in the same folder, fsync, then os.replace: a reader
    (or a crash at any point) sees the old complete file or the new complete file, never a
    part. `mode`: the file's permissions; None = what `open()` gives a new file (the umask's),
    not mkstemp's owner-only 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save `obj` to `path` atomically (`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temp files a killed writer left behind (call before any writer starts)."""
    stale = [p for p in Path(folder).glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # a legacy (non-zip) file cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "step" not in ckpt:
        raise WeightsError(f"{path} is not an xNet training checkpoint (no model/step)")
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple[XNet, dict[str, Any]]:
    """An XNet (cpu, eval mode) with the weights of a training checkpoint, and the checkpoint."""
    from ..config import resolve

    state = load_checkpoint(path)
    cfg = resolve(state["model_config"])
    cfg.encoder.pretrained = False
    cfg.decoder.pretrained = False
    model = XNet(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), state


# ---- resume ----------------------------------------------------------------------------------


def resume_path(resume: bool | str | None, out_dir: Path) -> Path | None:
    """The checkpoint `resume` names: True = <out_dir>/last.pt if it exists (else None, a fresh
    start), a folder = its last.pt, or a file; FileNotFoundError when a named one is missing."""
    if resume is False or resume is None:
        return None
    if resume is True:
        path = out_dir / LAST
        if not path.is_file():
            log.info("resume: no %s yet, starting from step 0", path)
            return None
        return path
    path = Path(resume)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"resume: checkpoint not found: {path}")
    return path


def agreed_resume_path(resume: bool | str | None, out_dir: Path,
                       ctx: DistContext) -> Path | None:
    """`resume_path` as rank 0 sees it, on every rank. A rank deciding alone from what its
    node's file system shows could start from step 0 while the others resume; a rank that
    cannot read rank 0's checkpoint stops every rank (not only itself, leaving the others
    waiting in a collective)."""
    decision: tuple[str, str | None] = ("ok", None)
    if ctx.is_main:
        try:
            path = resume_path(resume, out_dir)
            decision = ("ok", None if path is None else str(path))
        except FileNotFoundError as exc:
            decision = ("error", str(exc))
    kind, value = broadcast_object(decision, ctx)
    if kind == "error":
        raise FileNotFoundError(value)
    path = None if value is None else Path(value)
    if path is not None and ctx.distributed:
        readable = all_gather_objects(path.is_file(), ctx)
        blind = [rank for rank, ok in enumerate(readable) if not ok]
        if blind:
            raise FileNotFoundError(
                f"resume: rank 0 resumes from {path}, which rank(s) {blind} cannot read: "
                "out_dir must be on a file system that every node shares")
    return path


# ---- RNG states ------------------------------------------------------------------------------


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states; with a CUDA `device`, that device's generator (each rank
    saves its own, see Trainer.save)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached_gaussian": cached},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda_device" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has %d CUDA RNG states, this machine %d devices: not restored",
                        len(cuda), torch.cuda.device_count())


# ---- init_from -------------------------------------------------------------------------------

HEAD_PREFIX = "heads."


@dataclass
class TransferReport:
    source: str
    transferred: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # head tensors kept fresh
    skipped: list[str] = field(default_factory=list)  # source tensors the model has no place for

    def by_module(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self.transferred:
            top = key.split(".", 1)[0]
            counts[top] = counts.get(top, 0) + 1
        return counts

    def summary(self) -> str:
        mods = ", ".join(f"{m} {n}" for m, n in sorted(self.by_module().items()))
        parts = [f"init_from {self.source}: transferred {len(self.transferred)} tensors ({mods})"]
        if self.reinitialised:
            parts.append(f"re-initialised {len(self.reinitialised)}: "
                         f"{', '.join(self.reinitialised)}")
        if self.skipped:
            more = f" (+{len(self.skipped) - 10} more)" if len(self.skipped) > 10 else ""
            parts.append(f"skipped {len(self.skipped)} source tensors: "
                         f"{', '.join(self.skipped[:10])}{more}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "transferred": self.by_module(),
                "reinitialised": self.reinitialised, "skipped": self.skipped}


def read_source_state(source: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from a training checkpoint (.pt), a saved model dir, or a file."""
    source = Path(source)
    if source.is_dir():
        source = source / WEIGHTS_FILE
    state = read_checkpoint(source)  # unwraps {'model': ...}; reads .safetensors too
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def transfer_weights(model: nn.Module, source: str | Path) -> TransferReport:
    """Copy every same-named, same-shaped tensor of `source` into `model` (encoder, decoder,
    RS, PFP, lateral links); heads whose shape differs or that the source lacks stay freshly
    initialised (depth pre-training -> semantic fine-tuning). A non-head tensor that is missing
    or mis-shaped means another architecture: WeightsError naming it."""
    state = read_source_state(source)
    report, to_load = plan_transfer(model.state_dict(), state, str(source))
    model.load_state_dict(to_load, strict=False)
    return report


def plan_transfer(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                  source: str) -> tuple[TransferReport, dict[str, torch.Tensor]]:
    """What `transfer_weights` copies (by name and shape only: works on meta tensors too)."""
    report = TransferReport(source)
    bad = []
    to_load = {}
    for key, tensor in target.items():
        src = state.get(key)
        if src is not None and src.shape == tensor.shape:
            to_load[key] = src
            report.transferred.append(key)
        elif key.startswith(HEAD_PREFIX):
            report.reinitialised.append(key)
        else:
            found = "missing" if src is None else f"{tuple(src.shape)} vs {tuple(tensor.shape)}"
            bad.append(f"{key} ({found})")
    if bad:
        raise WeightsError(f"init_from {source} does not fit this model's architecture: "
                           f"{len(bad)} tensors, e.g. {', '.join(bad[:8])}")
    report.reinitialised.sort()
    report.skipped = sorted(k for k in state if k not in target or k in report.reinitialised)
    return report, to_load
