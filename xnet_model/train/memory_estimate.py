"""Estimate the memory a training config needs per process, without the memory or the GPU.

The model is built on the meta device and run on fake tensors (`FakeTensorMode`: shapes and
dtypes, no data, no arithmetic) for one forward pass under the config's autocast precision and
one backward pass, at the training crop and per-process batch size. A dispatch mode follows
every tensor the operators create and frees it when the last reference dies, so its peak is
the activation + gradient + temporary memory of one step. Added to it: the fp32 weights and the
two AdamW moments (12 bytes per parameter). Autocast runs with the CPU's op lists (CUDA's
backward cannot run without a GPU); allocator rounding, cuDNN workspaces and the CUDA context
(~0.5-1 GiB) come on top. `python -m xnet_model.train.memory_estimate config/train/*.yaml`
prints the table in docs/training.md.
"""

from __future__ import annotations

import argparse
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..xnet import XNet
from . import hardware as hw
from .config import TrainConfig, load_train_config

GIB = 2**30
ADAMW_AND_WEIGHTS = 12  # bytes per parameter: fp32 weight + exp_avg + exp_avg_sq


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the storages that operator outputs keep alive: now (`live`) and at most
    (`peak`). A storage counts once however many views share it."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, storage.nbytes()
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.live -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self._track(item)
        return out


@dataclass
class MemoryEstimate:
    name: str
    batch: int
    size: tuple[int, int]
    precision: str
    parameters: int
    step_peak: int  # activations + gradients + temporaries of one forward/backward, bytes

    @property
    def static(self) -> int:
        return self.parameters * ADAMW_AND_WEIGHTS

    @property
    def total(self) -> int:
        return self.static + self.step_peak


def training_size(cfg: TrainConfig) -> tuple[int, int]:
    d = cfg.data
    if d.crop_size is not None:
        return tuple(d.crop_size)
    if d.kind == "synthetic":
        return tuple(d.synthetic.image_size)
    return tuple(cfg.model_config().data.input_size)


def estimate(cfg: TrainConfig, batch: int | None = None,
             grad_checkpointing: bool | None = None) -> MemoryEstimate:
    """The per-process memory of one training step of `cfg` (see the module docstring)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model_cfg = cfg.model_config()
    model_cfg.encoder.pretrained = model_cfg.decoder.pretrained = False
    with torch.device("meta"):
        model = XNet(model_cfg).train()
    if cfg.grad_checkpointing if grad_checkpointing is None else grad_checkpointing:
        hw.enable_grad_checkpointing(model)
    batch = batch or cfg.data.batch_size
    size = training_size(cfg)
    mode = FakeTensorMode()
    cpu = torch.device("cpu")
    parameters = sum(t.numel() for t in model.parameters())
    # fake CPU tensors in place of the meta ones, in the module itself (not functional_call:
    # checkpointing's recompute in backward calls the modules again)
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, t in table.items():
                if t is not None:
                    fake = mode.fake_tensor_converter.from_meta_and_device(mode, t, cpu)
                    table[key] = fake.requires_grad_(True) if t.requires_grad else fake
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    tracker = LiveTensorBytes()
    autocast = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    with mode, tracker:
        image = torch.empty(batch, 3, *size)
        with autocast:
            outputs = model(image)
        loss = sum(v.float().mean() for v in outputs.values())
        del outputs
        loss.backward()
    return MemoryEstimate(model_cfg.name, batch, size, cfg.precision, parameters, tracker.peak)


def markdown_table(rows: list[tuple[str, MemoryEstimate, MemoryEstimate | None]]) -> str:
    lines = ["| config | crop x batch | params | weights + AdamW | step peak | total "
             "| with grad_checkpointing |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, e, ckpt in rows:
        with_ckpt = f"{ckpt.total / GIB:.1f} GiB" if ckpt is not None else ""
        lines.append(f"| `{name}` | {e.size[0]}x{e.size[1]} x {e.batch} "
                     f"| {e.parameters / 1e6:.0f} M | {e.static / GIB:.1f} GiB "
                     f"| {e.step_peak / GIB:.1f} GiB | **{e.total / GIB:.1f} GiB** "
                     f"| {with_ckpt} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", type=Path, help="training config YAML files")
    p.add_argument("--batch", type=int, help="per-process batch (default: the config's)")
    p.add_argument("--no-checkpointing-column", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for path in args.configs:
        cfg = load_train_config(path)
        plain = estimate(cfg, args.batch, grad_checkpointing=False)
        ckpt = None if args.no_checkpointing_column else estimate(cfg, args.batch, True)
        rows.append((path.stem, plain, ckpt))
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
