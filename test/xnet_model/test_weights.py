"""Decoder/encoder checkpoints from disk: loaded exactly, mismatches named, bad files clear."""

import pytest
import timm
import torch
from safetensors.torch import save_file
from tiny import TINY

from xnet_model import WeightsError, build_model
from xnet_model.weights import read_checkpoint


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """A real timm classifier checkpoint (with its classifier head) on disk, both formats."""
    torch.manual_seed(123)
    clf = timm.create_model("test_convnext", pretrained=False)
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    d = tmp_path_factory.mktemp("ckpt")
    torch.save({"state_dict": state}, d / "clf.pth")
    save_file(state, str(d / "clf.safetensors"))
    return d, state


@pytest.mark.parametrize("fname", ["clf.pth", "clf.safetensors"])
def test_every_decoder_stem_and_stage_tensor_equals_the_file(timm_checkpoint, fname):
    d, state = timm_checkpoint
    model = build_model(TINY, decoder={"name": "test_convnext", "pretrained": str(d / fname)})
    dec = model.decoder.state_dict()
    assert len(dec) > 0
    for key, value in dec.items():
        assert torch.equal(value, state[key]), key  # stem.* and stages.* keep timm's names
    assert not model.decoder.load_report.missing
    assert not model.decoder.load_report.unexpected  # head.* is dropped silently


def test_random_init_differs_from_the_file(timm_checkpoint):
    d, state = timm_checkpoint
    model = build_model(TINY)
    assert not torch.equal(model.decoder.state_dict()["stem.0.weight"], state["stem.0.weight"])


def test_encoder_loads_a_classifier_checkpoint_through_features_only(timm_checkpoint):
    d, state = timm_checkpoint
    model = build_model(TINY, encoder={"name": "test_convnext", "pretrained": str(d / "clf.pth")})
    enc = model.encoder.body.state_dict()
    assert torch.equal(enc["stem_0.weight"], state["stem.0.weight"])
    assert torch.equal(enc["stages_2.blocks.0.conv_dw.weight"],
                       state["stages.2.blocks.0.conv_dw.weight"])


def test_missing_and_unexpected_keys_are_reported_by_name(timm_checkpoint, tmp_path):
    _, state = timm_checkpoint
    partial = {k: v for k, v in state.items() if not k.startswith("stages.3")}
    partial["extra.weight"] = torch.zeros(2)
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"missing: stages\.3\."):
        build_model(TINY, decoder={"name": "test_convnext",
                                   "pretrained": str(tmp_path / "partial.pth")})


def test_wrong_architecture_checkpoint_names_the_mismatch(tmp_path):
    other = timm.create_model("convnext_atto").state_dict()
    torch.save(other, tmp_path / "atto.pth")
    with pytest.raises(WeightsError, match="mismatched: stem.0.weight"):
        build_model(TINY, decoder={"name": "test_convnext",
                                   "pretrained": str(tmp_path / "atto.pth")})


def test_corrupt_and_missing_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        read_checkpoint(bad)
    trunc = tmp_path / "trunc.pth"
    torch.save({"w": torch.zeros(1000)}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        build_model(TINY, decoder={"name": "test_convnext", "pretrained": str(trunc)})
    with pytest.raises(WeightsError, match="not found"):
        build_model(TINY, decoder={"name": "test_convnext", "pretrained": str(tmp_path / "x.pth")})


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(WeightsError, match="timm cannot build 'convnext_nonexistent'"):
        build_model(TINY, decoder={"name": "convnext_nonexistent"})
