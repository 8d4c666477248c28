"""xNet assembly: every Table-1 row and encoder family, shapes, ranges, gradients, mixing."""

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
