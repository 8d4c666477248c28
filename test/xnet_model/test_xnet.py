"""xNet assembly: every Table-1 row and encoder family, shapes, ranges, gradients, mixing."""

import numpy as np
import pytest
import torch
from tiny import TINY, TINY_SWIN, TINY_VIT

from xnet_model import build_model
from xnet_model.config import ABLATION_ROWS
from xnet_model.decoder import FPNDecoder, ReversedDecoder


@pytest.mark.parametrize("row", sorted(ABLATION_ROWS))
def test_every_table1_row_predicts_depth_and_labels_at_input_resolution(row):
    torch.manual_seed(0)
    model = build_model(TINY, ablation=row).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out["depth"].shape == (2, 1, 64, 96) and out["semantic"].shape == (2, 5, 64, 96)
    assert float(out["depth"].min()) >= 0.0 and float(out["depth"].max()) <= 10.0
    assert torch.isfinite(out["semantic"]).all()
    kind = FPNDecoder if row == "fpn" else ReversedDecoder
    assert isinstance(model.decoder, kind)
    assert (model.pfp is not None) == ABLATION_ROWS[row]["pfp"]["enabled"]
    assert (model.lateral is not None) == (row in ("rev", "rev_pretrained", "rev_pretrained_pfp"))


@pytest.mark.parametrize("spec", [TINY_SWIN, TINY_VIT], ids=["swin", "dinov2_vit"])
def test_transformer_encoders(spec):
    model = build_model(spec).eval()
    h, w = spec["encoder"]["img_size"]
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert out["depth"].shape == (1, 1, h, w) and out["semantic"].shape == (1, 5, h, w)
    # channels and strides come from timm's feature_info, NCHW after the encoder
    feats = model.encoder(torch.randn(1, 3, h, w))
    assert [f.shape[1] for f in feats] == model.encoder.channels


def test_vit_with_feature_pyramid_connections():
    model = build_model(TINY_VIT, feature_pyramid=True, mixing="none").eval()
    assert model.encoder.strides == [14] * len(model.encoder.strides)
    assert model(torch.randn(1, 3, 56, 84))["depth"].shape == (1, 1, 56, 84)


def test_odd_input_size_still_returns_input_resolution():
    model = build_model(TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 101))
    assert out["depth"].shape == (1, 1, 70, 101)


@pytest.mark.parametrize("row", ["xnet", "xnet_i", "fpn", "rev"])
def test_gradients_reach_every_trainable_parameter(row):
    torch.manual_seed(0)
    model = build_model(TINY, ablation=row).train()
    out = model(torch.randn(2, 3, 64, 96))
    (out["depth"].mean() + out["semantic"].logsumexp(1).mean()).backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == []
    if row != "fpn":  # the pre-trained decoder's stages are trained, not frozen
        assert model.decoder.stages[-1].blocks[0].conv_dw.weight.grad.abs().sum() > 0


def test_mixing_is_elementwise_product_with_stem_output():
    model = build_model(TINY).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        enc = model.encoder(x)
        stem = model.decoder.stem(x)
        expected = model.rs_mix(enc[-1], stem.shape[-2:]) * stem
        torch.testing.assert_close(model.mix(enc[-1], x), expected)
    assert expected.shape[1] == model.decoder.stem_channels


def test_xnet_i_mixes_with_the_rgb_image():
    model = build_model(TINY, ablation="xnet_i").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        enc = model.encoder(x)
        expected = model.decoder.stem(model.rs_mix(enc[-1], x.shape[-2:]) * x)
        torch.testing.assert_close(model.mix(enc[-1], x), expected)


def test_single_task_models():
    depth_only = build_model(TINY, semantic=None)
    assert depth_only.heads.semantic is None
    seg_only = build_model(TINY, depth=None)
    assert set(seg_only(torch.randn(1, 3, 64, 64))) == {"semantic"}


def test_decoder_keeps_timm_stage_order_and_drops_the_head():
    model = build_model(TINY)
    assert model.decoder.strides == [4, 8, 16, 32]
    assert not any(k.startswith("decoder.head") for k in model.state_dict())


@pytest.mark.parametrize("row", ["xnet", "fpn"])
def test_depth_output_is_sigmoid_of_the_head_conv_times_max_depth(row):
    """Set the depth head's 1x1 conv, then recompute depth from the features entering the heads
    with numpy: a scaled, shifted or clipped depth output cannot pass."""
    torch.manual_seed(0)
    model = build_model(TINY, ablation=row).eval()
    channels = model.heads.depth.in_channels
    weight = np.linspace(-0.5, 0.5, channels)
    with torch.no_grad():
        model.heads.depth.weight.copy_(torch.from_numpy(weight).reshape(1, channels, 1, 1))
        model.heads.depth.bias.fill_(0.25)
    features = []
    model.heads.register_forward_pre_hook(lambda module, args: features.append(args[0]))
    with torch.no_grad():
        depth = model(torch.randn(2, 3, 64, 96))["depth"].numpy()
    (f,) = features
    logit = np.einsum("c,nchw->nhw", weight, f.numpy().astype(np.float64)) + 0.25
    expected = 10.0 / (1.0 + np.exp(-logit))  # max_depth 10 m (TINY)
    assert depth.shape == (2, 1, 64, 96)
    assert expected.std() > 0.1  # the features vary: not all pixels at one depth
    np.testing.assert_allclose(depth[:, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row, width", [("fpn", 24), ("rev", 3), ("xnet", 3)])
def test_decoders_share_one_call_signature(row, width):
    """decoder(image, enc, rs_mix, lateral) -> stages for every row; the last stage is the
    decoder's output (FPN: its finest level, stride 4; reversed: the last stage, stride 32)."""
    model = build_model(TINY, ablation=row).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stages = model.decoder(x, model.encoder(x), model.rs_mix, model.lateral)
    assert stages[-1].shape[1] == model.decoder.out_channels
    assert stages[-1].shape[-1] == width  # 96 / out_stride


def test_size_multiple_of_a_stride14_encoder():
    """DINOv2 (patch 14): inputs are rounded to multiples of 14 (the paper's 476x644 stays as
    is), not to the lcm with the ConvNeXt decoder's strides, which only dynamic graphs need."""
    from xnet_model import Predictor
    from xnet_model.runtime.export import network_stride

    model = build_model(TINY_VIT).eval()
    assert model.encoder.strides == [14, 14, 14]
    assert model.size_multiple == 14 and model.meta.size_multiple == 14
    assert model.meta.network_size(476, 644) == (476, 644)
    assert model.exact_size_multiple == 224 == network_stride(model)  # lcm(14, 4, 8, 16, 32)
    predictor = Predictor(model)
    assert predictor.network_size(50, 80) == (56, 84)  # the encoder's fixed 56x84 input
    assert predictor.predict(np.zeros((50, 80, 3), np.uint8)).labels.shape == (50, 80)
