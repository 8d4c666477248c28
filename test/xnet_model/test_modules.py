"""RS, PFP, heads and lateral links: shapes and the equations they implement."""

import pytest
import torch

from xnet_model.modules import PFP, RS, DenseHeads, LateralLinks, resize_to, upscale_factor


def test_rs_is_norm_mlp_pixelshuffle():
    torch.manual_seed(0)
    rs = RS(8, 3, scale=4, hidden_ratio=2.0)
    x = torch.randn(2, 8, 5, 7)
    y = rs(x)
    assert y.shape == (2, 3, 20, 28)
    assert rs.fc1.out_features == 16  # hidden = ratio * max(in, out)
    # The same computation written out: LN over channels, Linear-GELU-Linear, PixelShuffle.
    h = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), rs.norm.weight, rs.norm.bias)
    h = rs.fc2(torch.nn.functional.gelu(rs.fc1(h))).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, torch.nn.functional.pixel_shuffle(h, 4))


def test_rs_resizes_to_exact_size_for_non_integer_ratios():
    rs = RS(8, 4, scale=upscale_factor(14, 4))  # a stride-14 ViT into a stride-4 stem
    assert rs.scale == 4
    assert rs(torch.randn(1, 8, 4, 6), size=(14, 21)).shape == (1, 4, 14, 21)


@pytest.mark.parametrize(("src", "dst", "r"), [(32, 4, 8), (32, 1, 32), (4, 4, 1), (14, 4, 4)])
def test_upscale_factor(src, dst, r):
    assert upscale_factor(src, dst) == r


def test_pfp_fuses_four_stages_to_full_resolution():
    pfp = PFP([8, 16, 32, 64], [4, 8, 16, 32], channels=6, out_channels=5, scale=4)
    feats = [torch.randn(1, c, 64 // s, 96 // s) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]
    assert [rs.scale for rs in pfp.reshape] == [1, 2, 4, 8]
    assert pfp.fuse.fc1.in_features == 4 * 6  # concatenation of the four reshaped stages
    assert pfp(feats, (64, 96)).shape == (1, 5, 64, 96)


def test_heads_depth_range_and_logits():
    heads = DenseHeads(4, max_depth=10.0, num_classes=7)
    with torch.no_grad():
        out = heads(torch.randn(2, 4, 8, 8) * 100)
    assert out["depth"].shape == (2, 1, 8, 8) and out["semantic"].shape == (2, 7, 8, 8)
    assert float(out["depth"].min()) >= 0.0 and float(out["depth"].max()) <= 10.0
    assert set(DenseHeads(4, None, 3)(torch.randn(1, 4, 2, 2))) == {"semantic"}


def test_depth_head_is_sigmoid_of_a_1x1_conv_times_max_depth():
    heads = DenseHeads(2, max_depth=10.0, num_classes=3)
    with torch.no_grad():
        heads.depth.weight.copy_(torch.tensor([1.0, -2.0]).reshape(1, 2, 1, 1))
        heads.depth.bias.fill_(0.5)
        heads.semantic.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
                                    .reshape(3, 2, 1, 1))
        heads.semantic.bias.copy_(torch.tensor([0.0, 0.0, -3.0]))
    # Two pixels: features (0.5, 0.5) and (2.0, -1.0).
    x = torch.tensor([[0.5, 2.0], [0.5, -1.0]]).reshape(1, 2, 1, 2)
    out = heads(x)
    # conv: 1*0.5 - 2*0.5 + 0.5 = 0 -> sigmoid 0.5 -> 5 m;
    #       1*2.0 - 2*(-1.0) + 0.5 = 4.5 -> 10 / (1 + e^-4.5) = 9.89013057369407 m
    torch.testing.assert_close(out["depth"], torch.tensor([[[[5.0, 9.89013057369407]]]]))
    # logits: (0.5, 0.5, -2) and (2, -1, -2)
    torch.testing.assert_close(out["semantic"][0, :, 0],
                               torch.tensor([[0.5, 2.0], [0.5, -1.0], [-2.0, -2.0]]))


def test_lateral_links_pick_matching_strides():
    links = LateralLinks([8, 16, 32, 64], [4, 8, 16, 32], [10, 20, 30], [4, 8, 16])
    assert links.sources == [0, 1, 2]
    x = torch.zeros(1, 20, 8, 8)
    enc = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]
    y = links(1, x, enc)
    torch.testing.assert_close(y, links.proj[1](enc[1]))


def test_resize_to_is_identity_when_sizes_match():
    x = torch.randn(1, 2, 3, 4)
    assert resize_to(x, (3, 4)) is x
