"""Trainer behaviour that matters on GPUs and clusters, checked in one CPU process: offline
init_from, the schedule after a resume with other settings, skipped steps (non-finite loss,
fp16 overflow), gradient accumulation, and the speed options (channels_last, fused AdamW,
memory-mapped checkpoints, persistent workers, torch.compile). The multi-process sides are in
test_distributed.py."""

import copy
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from test_trainer import TINY_MODEL, _depth_model_dir, read_jsonl, tiny_config, train

from xnet_model.config import deep_merge
from xnet_model.train import checkpoint as ckpt
from xnet_model.train import hardware as hw
from xnet_model.train.config import load_train_config
from xnet_model.train.trainer import Trainer, WarmupPoly, param_groups


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()  # Trainer applies cfg.num_threads process-wide
    yield
    torch.set_num_threads(threads)


def _trainer(out_dir, **sections) -> Trainer:
    return Trainer(load_train_config(tiny_config(out_dir, **sections)))


def test_init_from_never_touches_the_hub_even_with_pretrained_true(tmp_path, monkeypatch):
    import huggingface_hub
    import timm.models._builder

    depth_only, source = _depth_model_dir(tmp_path)
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("no network: HF_HUB_OFFLINE=1")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model = deep_merge(TINY_MODEL, {"encoder": {"pretrained": True},
                                    "decoder": {"pretrained": True}})
    trainer = _trainer(tmp_path / "ft", model=model, init_from=str(source))
    assert calls == []
    source_state, state = depth_only.state_dict(), trainer.model.state_dict()
    backbone = [k for k in state if k.startswith(("encoder.", "decoder."))]
    assert backbone and all(torch.equal(state[k], source_state[k]) for k in backbone)
    assert trainer.init_report.reinitialised == ["heads.semantic.bias", "heads.semantic.weight"]


def test_a_resume_with_a_longer_run_and_another_lr_follows_the_new_schedule(tmp_path):
    # The checkpoint's scheduler knows a 4-step run; resumed as an 8-step run at lr 1e-3 the
    # LR must follow WarmupPoly(1, 8) x 1e-3 (the old schedule gave LR 0 from step 4 on).
    out = tmp_path / "run"
    over = {"eval": {"interval": 0}, "checkpoint_interval": 0}
    train(out, stop_at=2, optim={"max_steps": 4, "warmup_steps": 1}, **over)
    resumed = _trainer(out, resume=True, optim={"max_steps": 8, "warmup_steps": 1, "lr": 1e-3},
                       **over)
    new = WarmupPoly(1, 8, 0.9, 1e-3)
    assert resumed.step == 2 and resumed.total_steps == 8
    assert resumed.scheduler.get_last_lr() == pytest.approx([1e-3 * new(2)] * 4)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([1e-3 * new(2)] * 4)
    resumed.fit()
    records = read_jsonl(out / "metrics.jsonl")
    logged = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    for step in range(3, 9):  # the lr logged after step s is the one step s + 1 uses
        assert logged[step] == pytest.approx(1e-3 * new(step)), step
    assert all(logged[s] > 0 for s in range(3, 8))
    assert ckpt.load_checkpoint(out / "last.pt")["scheduler"]["last_epoch"] == 8


def test_a_resume_applies_the_current_optimiser_settings(tmp_path):
    out = tmp_path / "run"
    over = {"eval": {"interval": 0}, "checkpoint_interval": 0}
    train(out, stop_at=2, optim={"max_steps": 4, "weight_decay": 0.01}, **over)
    resumed = _trainer(out, resume=True, optim={"max_steps": 4, "weight_decay": 0.2},
                       performance={"fused_adamw": True}, **over)
    groups = {g["name"]: g for g in resumed.optimizer.param_groups}
    assert groups["encoder"]["weight_decay"] == 0.2
    assert groups["rest_no_decay"]["weight_decay"] == 0
    assert all(g["fused"] is True for g in groups.values())
    steps = [s["step"] for s in resumed.optimizer.state.values()]
    assert steps and all(s.device.type == "cpu" and float(s) == 2 for s in steps)
    resumed.fit()  # the fused kernel steps on the moments the checkpoint brought
    assert all(float(s["step"]) == 4 for s in resumed.optimizer.state.values())


def _poison(trainer, steps):
    """Make the loss NaN while computing the given (1-based) steps."""
    loss_fn = trainer.loss_fn

    def poisoned(outputs, targets):
        loss, values = loss_fn(outputs, targets)
        return (loss * math.nan if trainer.step + 1 in steps else loss), values

    trainer.loss_fn = poisoned


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_non_finite_loss_skips_the_step_and_training_goes_on(tmp_path, precision):
    trainer = _trainer(tmp_path, precision=precision, optim={"max_steps": 4},
                       eval={"interval": 0})
    if precision == "fp16":  # no GradScaler overflow skips at a start scale of 2^16: only NaN's
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    _poison(trainer, {2})
    trainer.fit(stop_at=1)
    after_1 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(stop_at=2)
    assert all(torch.equal(v, after_1[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.scheduler.last_epoch == 1  # the schedule waits for real steps
    trainer.fit()
    assert trainer.step == 4 and trainer.skipped_steps == 1 and trainer.scheduler.last_epoch == 3
    steps = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["skipped"] for r in steps] == [0, 1, 0, 0]
    assert steps[1]["loss"] == {} and steps[1]["grad_norm"] is None
    assert all(math.isfinite(v) for r in steps for v in r["loss"].values())
    assert ckpt.load_checkpoint(tmp_path / "last.pt")["skipped_steps"] == 1


def test_too_many_skipped_steps_in_a_row_stop_the_run(tmp_path):
    trainer = _trainer(tmp_path, optim={"max_steps": 6, "max_skipped_steps": 2},
                       eval={"interval": 0})
    _poison(trainer, {2, 3, 4, 5})
    with pytest.raises(FloatingPointError, match=r"3 steps in a row skipped, the last at step 4"):
        trainer.fit()


def test_a_gradscaler_skip_does_not_advance_the_schedule(tmp_path):
    trainer = _trainer(tmp_path, precision="fp16", optim={"max_steps": 3, "warmup_steps": 2},
                       eval={"interval": 0})
    weight = trainer.model.heads.depth.weight
    weight.register_hook(lambda g: g * math.inf if trainer.step == 0 else g)  # overflow, step 1
    before = weight.detach().clone()
    scale = trainer.scaler.get_scale()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(stop_at=1)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert torch.equal(weight.detach(), before)  # GradScaler skipped optimizer.step ...
    assert trainer.scaler.get_scale() == scale / 2
    assert trainer.scheduler.last_epoch == 0  # ... and the scheduler waited
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * 1e-3)  # warm-up start
    trainer.fit()
    assert trainer.skipped_steps == 1 and trainer.scheduler.last_epoch == 2
    assert not torch.equal(weight.detach(), before)


def test_gradient_accumulation_steps_once_on_the_mean_gradient(tmp_path):
    trainer = _trainer(tmp_path, data={"batch_size": 1},
                       optim={"max_steps": 2, "accumulate": 2, "grad_clip": None,
                              "warmup_steps": 0}, eval={"interval": 0})
    assert trainer.steps_per_epoch == 5  # 10 scenes / (1 x 2) per step
    _, micro = next(trainer._batches(0))
    assert len(micro) == 2 and micro[0]["image"].shape[0] == 1
    # the reference: one AdamW step on the mean of the two micro-batch losses
    reference = copy.deepcopy(trainer.model)
    o = trainer.cfg.optim
    opt = torch.optim.AdamW(param_groups(reference, o.lr, o.weight_decay, o.encoder_lr_mult),
                            lr=o.lr, betas=tuple(o.betas))
    loss = sum(trainer.loss_fn(reference(b["image"]), {"depth": b["depth"],
                                                        "labels": b["labels"]})[0] / 2
               for b in micro)
    loss.backward()
    opt.step()
    trainer.fit(stop_at=1)
    for (name, p), q in zip(trainer.model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5), name
    record = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"][0]
    assert record["loss"]["total"] == pytest.approx(float(loss.detach()), rel=1e-5)


def test_speed_options_channels_last_fused_adamw_and_workers(tmp_path):
    trainer = _trainer(tmp_path, data={"workers": 2},
                       performance={"channels_last": True, "fused_adamw": True},
                       model=deep_merge(TINY_MODEL, {"grad_checkpointing": True}),
                       optim={"max_steps": 1}, eval={"interval": 0})
    stem = trainer.model.encoder.body.stem_0.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)
    assert trainer.optimizer.param_groups[0]["fused"] is True
    assert trainer.checkpointed_modules[0] == "encoder.body"
    loader = trainer.train_loader
    assert loader.persistent_workers and loader.worker_init_fn is hw.loader_worker_init
    assert loader.pin_memory is False  # pinned only on CUDA
    before = stem.detach().clone()
    trainer.fit()
    assert torch.isfinite(stem).all() and not torch.equal(stem.detach(), before)


def test_persistent_loader_workers_give_the_batches_of_an_in_process_loader(tmp_path):
    # 12 steps of 2 micro-batches cross 2 epoch boundaries (5 steps each, the leftover micro-
    # batch of an epoch dropped) and a stop/restart of the step loop at step 7
    over = {"optim": {"max_steps": 12, "accumulate": 2}, "eval": {"interval": 0},
            "data": {"batch_size": 1, "workers": 0, "synthetic": {"train_length": 11}}}
    in_process = _trainer(tmp_path / "w0", **over)
    with_workers = _trainer(tmp_path / "w2", **deep_merge(over, {"data": {"workers": 2}}))
    assert with_workers.train_loader.persistent_workers and in_process.steps_per_epoch == 5
    in_process.fit()
    with_workers.fit(stop_at=7)
    with_workers.fit()
    a, b = in_process.model.state_dict(), with_workers.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _mapped_files() -> dict[str, list[tuple[int, int]]]:
    spans: dict[str, list[tuple[int, int]]] = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            spans.setdefault(parts[5], []).append((lo, hi))
    return spans


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_checkpoints_load_memory_mapped(tmp_path):
    path = ckpt.atomic_save({"step": 1, "model": {"w": torch.arange(4096.0)}},
                            tmp_path / "last.pt")
    state = ckpt.load_checkpoint(path)
    address = state["model"]["w"].data_ptr()
    spans = _mapped_files().get(str(path), [])
    assert any(lo <= address < hi for lo, hi in spans)  # in the file's mapping, not a copy
    assert torch.equal(state["model"]["w"], torch.arange(4096.0))


@pytest.mark.slow
def test_torch_compile_of_the_model_trains(tmp_path):
    # the eager backend: dynamo captures the model without inductor's C++ compile
    trainer = _trainer(tmp_path, optim={"max_steps": 2}, eval={"interval": 0},
                       performance={"compile": True, "compile_options": {"backend": "eager"}})
    assert type(trainer.ddp).__name__ == "OptimizedModule"
    trainer.fit()
    losses = [r["loss"]["total"] for r in read_jsonl(tmp_path / "metrics.jsonl")
              if r["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert os.path.isdir(tmp_path / "model")
