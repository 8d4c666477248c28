"""Device-dependent training choices (xnet_model.train.hardware), decided from fake device
properties on the CPU: bf16 on pre-Ampere GPUs, cuDNN/TF32 flags, fused AdamW and GradScaler
across torch versions, DataLoader options, DDP buffer broadcasting, per-rank seeds and
gradient checkpointing."""

import types
import warnings

import cv2
import numpy as np
import pytest
import torch
from tiny import TINY, TINY_SWIN, TINY_VIT
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xnet_model import build_model
from xnet_model.train import hardware as hw

V100, T4, A100, H100 = (7, 0), (7, 5), (8, 0), (9, 0)


@pytest.mark.parametrize("capability, emulated", [(V100, True), (T4, True), (A100, False),
                                                  (H100, False)])
def test_bf16_on_a_pre_ampere_gpu_is_reported_with_the_fp16_alternative(capability, emulated):
    advice = hw.precision_advice("bf16", "cuda", capability, "Tesla V100")
    if emulated:
        assert "emulated" in advice and "precision=fp16" in advice
        assert f"{capability[0]}.{capability[1]} < 8.0" in advice and "Tesla V100" in advice
    else:
        assert advice is None
    assert hw.precision_advice("fp16", "cuda", capability) is None
    assert hw.precision_advice("bf16", "cpu", None) is None


def test_cuda_settings_follow_the_device():
    assert hw.cuda_settings("cpu", None, True, True) == hw.CudaSettings()
    on_a100 = hw.cuda_settings("cuda", A100, True, True)
    assert (on_a100.cudnn_benchmark, on_a100.tf32, on_a100.notes) == (True, True, [])
    on_v100 = hw.cuda_settings("cuda", V100, True, True)
    assert (on_v100.cudnn_benchmark, on_v100.tf32) == (True, False)
    assert "no TF32" in on_v100.notes[0]
    off = hw.cuda_settings("cuda", H100, False, False)
    assert (off.cudnn_benchmark, off.tf32, off.notes) == (False, False, [])


def test_apply_cuda_settings_sets_the_process_flags_without_a_gpu():
    saved = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
             torch.backends.cudnn.allow_tf32)
    try:
        torch.set_float32_matmul_precision("highest")
        hw.apply_cuda_settings(hw.CudaSettings(cudnn_benchmark=True, tf32=True))
        assert torch.backends.cudnn.benchmark is True
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32 is True
        hw.apply_cuda_settings(hw.CudaSettings(cudnn_benchmark=False, tf32=False))
        assert torch.backends.cudnn.benchmark is False
        assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32 is False
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.set_float32_matmul_precision(saved[1])
        torch.backends.cudnn.allow_tf32 = saved[2]


def test_fused_adamw_is_chosen_by_device_and_torch_version():
    assert hw.adamw_options("cuda", None, (2, 4)) == {"fused": True}
    assert hw.adamw_options("cpu", None, (2, 9)) == {}
    assert hw.adamw_options("cuda", False, (2, 9)) == {}
    assert hw.adamw_options("cpu", True, (2, 3)) == {}  # fused CPU kernels came in torch 2.4
    assert hw.adamw_options("cpu", True, (2, 4)) == {"fused": True}
    assert hw.torch_version("2.4.1+cu121") == (2, 4)
    assert hw.torch_version("2.10.0a0") == (2, 10)
    options = hw.adamw_options("cpu", True)  # this torch: a real fused step on the CPU
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, **options)
    p.grad = torch.ones(3)
    opt.step()
    assert opt.param_groups[0]["fused"] is True
    assert torch.allclose(p.detach(), torch.full((3,), 0.9) - 0.1 * 0.01)  # lr x sign, decay


def test_grad_scaler_on_a_torch_without_torch_amp_gradscaler():
    scaler = hw.make_grad_scaler("cpu", True)
    assert scaler.is_enabled()
    old_amp = types.SimpleNamespace()  # torch < 2.3: no torch.amp.GradScaler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp.GradScaler is deprecated here
        disabled = hw.make_grad_scaler("cpu", False, amp=old_amp)
    assert not disabled.is_enabled()
    with pytest.raises(RuntimeError, match="fp16 on cpu needs torch >= 2.3"):
        hw.make_grad_scaler("cpu", True, amp=old_amp)


def test_loader_options_pin_memory_on_cuda_and_keep_workers():
    assert hw.loader_options("cuda", 4, True) == {
        "num_workers": 4, "pin_memory": True, "persistent_workers": True,
        "worker_init_fn": hw.loader_worker_init}
    assert hw.loader_options("cpu", 0, True) == {"num_workers": 0, "pin_memory": False}


class _CV2Threads(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return cv2.getNumThreads()


def test_loader_workers_run_opencv_single_threaded():
    parent = cv2.getNumThreads()
    cv2.setNumThreads(3)  # what a worker would inherit
    image = np.zeros((512, 512, 3), np.float32)
    cv2.GaussianBlur(image, (31, 31), 5)  # this process's OpenCV thread pool is running
    try:
        hw.prepare_loader_workers(2)
        # (a forked worker that set its own thread count here would deadlock: timeout)
        loader = DataLoader(_CV2Threads(), batch_size=1, timeout=60,
                            **hw.loader_options("cpu", 2, False))
        assert [int(x) for x in loader] == [1, 1]
        assert cv2.getNumThreads() == 1
        cv2.setNumThreads(3)
        hw.prepare_loader_workers(0)  # no workers: this process keeps its threads
        assert cv2.getNumThreads() == 3
        hw.loader_worker_init(0)  # what a spawned worker runs
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(parent)


def test_buffers_are_broadcast_only_for_running_statistics():
    assert not hw.needs_buffer_broadcast(build_model(TINY))
    swin = build_model(TINY_SWIN)
    assert len(list(swin.buffers())) > 0 and not hw.needs_buffer_broadcast(swin)
    assert hw.needs_buffer_broadcast(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    assert not hw.needs_buffer_broadcast(nn.BatchNorm2d(4, track_running_stats=False))
    options = hw.ddp_options(swin, torch.device("cpu"))
    assert options == {"device_ids": None, "broadcast_buffers": False,
                       "gradient_as_bucket_view": True}
    assert hw.ddp_options(swin, torch.device("cuda", 3))["device_ids"] == [3]


def test_every_rank_gets_its_own_seed_and_rank_0_keeps_the_configured_one():
    assert hw.process_seed(7, 0) == 7
    seeds = [hw.process_seed(7, r) for r in range(64)]
    assert len(set(seeds)) == 64
    assert hw.process_seed(8, 0) not in seeds[1:]


def _block_calls_in_forward_and_backward(model, block, size) -> int:
    calls = []
    # a pre-hook: checkpointing's recompute stops once it has what backward needs, so a
    # block's forward may never return the second time
    handle = block.register_forward_pre_hook(lambda m, i: calls.append(1))
    out = model(torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)))
    sum(v.float().mean() for v in out.values()).backward()
    handle.remove()
    return len(calls)


@pytest.mark.parametrize("spec, inner, size", [(TINY, False, (64, 96)),
                                               (TINY_VIT, True, (56, 84))],
                         ids=["convnext_features", "dinov2_getter"])
def test_grad_checkpointing_recomputes_encoder_and_decoder_blocks(spec, inner, size):
    torch.manual_seed(0)
    model = build_model(spec).train()
    encoder_blocks = (model.encoder.body.model.blocks if inner
                      else model.encoder.body.stages_1.blocks)
    decoder_block = model.decoder.stages[1].blocks[0]
    before = [_block_calls_in_forward_and_backward(model, b, size)
              for b in (encoder_blocks[1], decoder_block)]
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    names = hw.enable_grad_checkpointing(model)
    assert names[0] == ("encoder.body.model" if inner else "encoder.body")
    assert names[1:] == [f"decoder.stages.{i}" for i in range(4)]
    after = [_block_calls_in_forward_and_backward(model, b, size)
             for b in (encoder_blocks[1], decoder_block)]
    assert before == [1, 1] and after == [2, 2]  # run again in backward: activations not kept
    for n, p in model.named_parameters():  # the same gradients
        if n in grads:
            assert torch.allclose(p.grad, grads[n], atol=1e-6, rtol=1e-4), n
