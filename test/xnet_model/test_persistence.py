"""save -> load_model: bit-identical outputs, no network, clear errors for broken directories."""

import json

import pytest
import torch
from tiny import TINY

from xnet_model import ConfigError, WeightsError, build_model, load_model, model_digest
from xnet_model.xnet import CONFIG_FILE, WEIGHTS_FILE


@pytest.mark.parametrize("row", ["xnet", "fpn", "xnet_i"])
def test_save_load_is_bit_identical(tmp_path, row):
    torch.manual_seed(0)
    model = build_model(TINY, ablation=row).eval()
    model.save(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / CONFIG_FILE).is_file()
    loaded = load_model(tmp_path)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert loaded.cfg == model.cfg


def test_load_never_downloads_even_if_the_config_asked_for_pretrained(tmp_path, monkeypatch):
    model = build_model(TINY)
    model.cfg.decoder.pretrained = True  # as if it had been trained from hub weights
    model.save(tmp_path)
    import timm

    real = timm.create_model

    def no_hub(*args, **kwargs):
        assert not kwargs.get("pretrained"), "load_model must not fetch weights"
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_hub)
    load_model(tmp_path)


def test_half_precision_save_is_half_the_size_and_close(tmp_path):
    model = build_model(TINY).eval()
    model.save(tmp_path / "fp32")
    model.save(tmp_path / "fp16", half=True)
    s32 = (tmp_path / "fp32" / WEIGHTS_FILE).stat().st_size
    s16 = (tmp_path / "fp16" / WEIGHTS_FILE).stat().st_size
    assert s16 < 0.55 * s32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        d = (model(x)["depth"] - load_model(tmp_path / "fp16")(x)["depth"]).abs().max()
    assert d < 1e-2


def test_broken_model_directories(tmp_path):
    with pytest.raises(WeightsError, match="not a saved xNet model directory"):
        load_model(tmp_path)
    build_model(TINY).save(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"corrupt")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_model(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt model config"):
        load_model(tmp_path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    build_model(TINY).save(tmp_path)
    doc = json.loads((tmp_path / CONFIG_FILE).read_text())
    doc["model"]["semantic"]["num_classes"] = 7
    (tmp_path / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="heads.semantic.weight"):
        load_model(tmp_path)


def test_digest_changes_with_weights(tmp_path):
    torch.manual_seed(0)
    build_model(TINY).save(tmp_path / "a")
    build_model(TINY).save(tmp_path / "b")
    assert model_digest(tmp_path / "a") == model_digest(tmp_path / "a")
    assert model_digest(tmp_path / "a") != model_digest(tmp_path / "b")


# sha256 of config.json's bytes followed by model.safetensors' bytes, pinned from
#   hashlib.sha256(b'{"model": {}}' + b"\x00\x01weights").hexdigest()
# The digest keys the engine caches (ONNX exports, TensorRT engines): if it changes, every cached
# engine is rebuilt once after an upgrade. Change this constant only for an intended change.
PINNED_DIGEST = "6b469bc42357c53538c7632a5310b1c26c1d0fe46c502fc5f2b7614e5cadc5c9"


def test_digest_is_pinned_across_versions(tmp_path):
    (tmp_path / CONFIG_FILE).write_bytes(b'{"model": {}}')
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00\x01weights")
    assert model_digest(tmp_path) == PINNED_DIGEST
    (tmp_path / CONFIG_FILE).write_bytes(b'{"model": {"x": 1}}')
    assert model_digest(tmp_path) != PINNED_DIGEST  # the config is part of the key


def test_saved_files_follow_the_umask_not_owner_only(tmp_path):
    """safetensors writes 0600 files; a saved model must be readable like any file the user
    writes (deployed under another account, copied into a package)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = build_model(TINY).save(tmp_path / "m")
    finally:
        os.umask(old)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
