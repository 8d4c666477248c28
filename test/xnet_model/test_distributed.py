"""DDP plumbing: resumable sharded sampling, parameter digests, and a real 2-process gloo run
launched with torch.distributed.run on the loopback interface."""

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from xnet_model import build_model
from xnet_model.train import checkpoint as ckpt
from xnet_model.train.distributed import (
    PARAM_HASH_ENV,
    DistContext,
    ResumableSampler,
    ShardSampler,
    all_reduce_mean,
    cleanup,
    init_distributed,
    parameter_digest,
)

REPO = Path(__file__).resolve().parents[2]


def test_sampler_shards_cover_the_dataset_and_depend_on_the_epoch_only():
    data = list(range(10))
    shards = [list(ResumableSampler(data, 2, r, seed=5)) for r in range(2)]
    assert all(len(s) == 5 for s in shards)
    assert sorted(i for s in shards for _, i in s) == data
    assert {e for s in shards for e, _ in s} == {0}
    again = list(ResumableSampler(data, 2, 0, seed=5))
    assert again == shards[0]  # same seed and epoch: same order, in any process
    s = ResumableSampler(data, 2, 0, seed=5)
    s.set_epoch(1)
    epoch1 = list(s)
    assert [e for e, _ in epoch1] == [1] * 5 and [i for _, i in epoch1] != [
        i for _, i in shards[0]]


def test_sampler_resumes_part_way_through_an_epoch():
    data = list(range(12))
    s = ResumableSampler(data, 1, 0, seed=0)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, skip=5)
    assert list(s) == full[5:] and len(s) == 7


def test_eval_shards_never_pad():
    shards = [list(ShardSampler(7, 3, r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]


def test_single_process_context_needs_no_process_group(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert all_reduce_mean({"a": 2.0}, ctx) == {"a": 2.0}


def test_parameter_digest_sees_any_change():
    torch.manual_seed(0)
    model = build_model({"encoder": {"name": "test_convnext"},
                         "decoder": {"name": "test_convnext"}})
    digest = parameter_digest(model)
    assert digest == parameter_digest(model) and len(digest) == 64
    with torch.no_grad():
        model.heads.depth.bias.add_(1e-6)
    assert parameter_digest(model) != digest


def test_parameter_digest_is_a_pinned_value():
    # Pinned: computed once with parameter_digest (torch 2.14.1, numpy 2) and equal to the
    # hand-built SHA-256 below ("name:dtype:shape" then the little-endian bytes, names sorted).
    # A torch/numpy version that changes dtype names or byte order would change it.
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(6, dtype=torch.float32).reshape(3, 2) / 8)
        model[0].bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    model.register_buffer("count", torch.tensor([7], dtype=torch.int64))
    pinned = "7c8c55cf43409827c92434e51fbe65b4b2913573964b019004867129cf64bb7d"
    assert parameter_digest(model) == pinned
    by_hand = hashlib.sha256()
    for name, dtype, shape, raw in [
        ("0.bias", "torch.float32", "(3,)", struct.pack("<3f", 1.0, -2.0, 0.5)),
        ("0.weight", "torch.float32", "(3, 2)", struct.pack("<6f", *[i / 8 for i in range(6)])),
        ("count", "torch.int64", "(1,)", struct.pack("<q", 7)),
    ]:
        by_hand.update(f"{name}:{dtype}:{shape}".encode())
        by_hand.update(raw)
    assert by_hand.hexdigest() == pinned


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training_keeps_the_replicas_identical(tmp_path):
    out = tmp_path / "run"
    config = {
        "model": {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"},
                  "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 10},
                  "data": {"input_size": [48, 64]}},
        "data": {"batch_size": 2, "val_batch_size": 2, "workers": 0,
                 "synthetic": {"image_size": [48, 64], "train_length": 16, "val_length": 5}},
        "optim": {"max_steps": 4, "lr": 2e-3, "warmup_steps": 1},
        "eval": {"interval": 2}, "log_interval": 1, "checkpoint_interval": 2,
        "out_dir": str(out), "progress": False, "device": "cpu", "num_threads": 1,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo", **{PARAM_HASH_ENV: str(tmp_path / "hash")})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "xnet_model.cli", "train", "--config", str(path)]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    digests = [(tmp_path / "hash" / f"params_rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    state = ckpt.load_checkpoint(out / "last.pt")
    assert state["step"] == 4 and state["world_size"] == 2
    model = build_model(state["model_config"])
    model.load_state_dict(state["model"])
    assert parameter_digest(model) + "\n" == digests[0]  # rank 0's checkpoint is that model
    # rank 0 alone logs: one line per step, and the eval saw all 5 held-out scenes once
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["metrics"]["depth_count"] == 5 for r in evals)
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "last.pt", "metrics.jsonl", "model", "train_config.yaml"]


def _run_scenario(name: str, tmp_path: Path) -> list[dict]:
    """Run ddp_scenarios.py NAME on 2 gloo processes; each rank's result."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    script = Path(__file__).with_name("ddp_scenarios.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(script), name, str(tmp_path)]
    # ~40 s on a loaded 2-core machine; a rank left waiting in a collective would hang
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((tmp_path / f"{name}_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_two_process_resume_is_exact_per_rank_and_follows_rank_0(tmp_path):
    ranks = _run_scenario("resume", tmp_path)
    # per-rank seeds: at batch 1 the ranks' drop-path patterns differ (they were identical)
    assert ranks[0]["drop_patterns"] != ranks[1]["drop_patterns"]
    assert len(ranks[0]["drop_patterns"]) == len(ranks[1]["drop_patterns"]) > 0
    # rank 1 saw no last.pt in its own out_dir, yet resumed where rank 0 did
    assert [r["resumed_from"] for r in ranks] == [3, 3]
    assert [r["resumed_step"] for r in ranks] == [6, 6]
    # every rank's RNG state is saved and restored: the resumed run ends with the
    # uninterrupted run's parameters, bit for bit, on both ranks
    digests = {r[k] for r in ranks for k in ("straight_digest", "resumed_digest")}
    assert len(digests) == 1
    for r in ranks:  # a rank that cannot read the checkpoint stops both, with one message
        assert "rank(s) [1] cannot read" in r["blind_error"]
        assert "file system that every node shares" in r["blind_error"]


@pytest.mark.slow
def test_two_process_runs_survive_a_nan_on_one_rank_and_accumulate_gradients(tmp_path):
    ranks = _run_scenario("robust", tmp_path)
    # a NaN loss on rank 1 at step 2: both ranks skip that step (no hang, no divergence)
    assert [(r["nan_step"], r["nan_skipped"], r["nan_scheduler_steps"]) for r in ranks] == [
        (4, 1, 3), (4, 1, 3)]
    assert ranks[0]["nan_digest"] == ranks[1]["nan_digest"]
    records = [json.loads(line) for line in
               (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records if r["kind"] == "train"] == [0, 1, 0, 0]
    # 2 micro-batches a step, DDP synchronising the last one, grad checkpointing on
    assert [r["accumulate_step"] for r in ranks] == [3, 3]
    assert ranks[0]["accumulate_digest"] == ranks[1]["accumulate_digest"]
    assert "encoder.body" in ranks[0]["checkpointed"]
    # no BatchNorm: buffers are not re-broadcast every step; gradients live in DDP's buckets
    assert ranks[0]["broadcast_buffers"] is False and ranks[0]["bucket_view"] is True


def test_one_process_torchrun_joins_the_process_group(monkeypatch):
    """`torchrun --nproc_per_node=1` (the GPU check's NCCL run) goes through the DDP path."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    try:
        ctx = init_distributed("cpu")
        assert (ctx.world_size, ctx.process_group, ctx.distributed) == (1, True, True)
        assert torch.distributed.get_backend() == "gloo"
        assert all_reduce_mean({"a": 2.0}, ctx) == {"a": 2.0}
    finally:
        cleanup()


def test_dist_context_defaults():
    ctx = DistContext()
    assert ctx.device == torch.device("cpu") and ctx.is_main
