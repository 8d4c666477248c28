"""The training-memory estimate behind the table in docs/training.md: the live-tensor tracker
on hand-sized tensors, and the fake-tensor estimate against a real CPU run of a tiny model."""

import pytest
import torch

from xnet_model import build_model
from xnet_model.train.config import load_train_config
from xnet_model.train.memory_estimate import (
    ADAMW_AND_WEIGHTS,
    LiveTensorBytes,
    estimate,
    markdown_table,
)

MODEL = {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"},
         "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 10},
         "data": {"input_size": [64, 96]}}


def test_the_tracker_counts_each_storage_once_and_frees_it_with_its_last_view():
    tracker = LiveTensorBytes()
    with tracker:
        a = torch.zeros(1000)  # 4000 bytes
        b = a.view(10, 100)  # a view: no new bytes
        c = torch.zeros(500, dtype=torch.float64)  # 4000 bytes
        assert (tracker.live, tracker.peak) == (8000, 8000)
        del a
        assert tracker.live == 8000  # b still holds the storage
        del b
        assert tracker.live == 4000
        d = torch.zeros(250, dtype=torch.int16)  # 500 bytes
        assert (tracker.live, tracker.peak) == (4500, 8000)
    del c, d
    assert tracker.live == 0


def _real_saved_activation_bytes(precision: str) -> int:
    """What autograd keeps for backward in a real CPU forward (storages counted once,
    parameters left out)."""
    torch.manual_seed(0)
    model = build_model(MODEL).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16")):
        model(torch.randn(2, 3, 64, 96))
    return sum(v for k, v in saved.items() if k not in params)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_estimate_brackets_a_real_cpu_step(precision):
    cfg = load_train_config({"model": MODEL, "optim": {"max_steps": 1}, "precision": precision,
                             "data": {"batch_size": 2, "synthetic": {"image_size": [64, 96]}}})
    plain = estimate(cfg)
    assert plain.parameters == sum(p.numel() for p in build_model(MODEL).parameters())
    assert plain.static == ADAMW_AND_WEIGHTS * plain.parameters
    assert (plain.size, plain.batch) == ((64, 96), 2)
    saved, grads = _real_saved_activation_bytes(precision), 4 * plain.parameters
    # at the start of backward every saved activation is alive; gradients then replace them
    assert saved <= plain.step_peak <= 1.5 * (saved + grads)
    checkpointed = estimate(cfg, grad_checkpointing=True)
    assert checkpointed.step_peak < 0.8 * plain.step_peak
    table = markdown_table([("tiny", plain, checkpointed)])
    assert "| `tiny` | 64x96 x 2 | 1 M |" in table
