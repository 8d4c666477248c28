"""Config resolution: variants, Table-1 rows, YAML files, and clear errors."""

import re

import pytest

from xnet_model.config import ABLATION_ROWS, PAPER_MODELS, ConfigError, resolve


def test_every_named_variant_resolves():
    for name in PAPER_MODELS:
        cfg = resolve(name)
        assert cfg.name == name and cfg.tasks


def test_xnet_defaults_follow_the_paper():
    cfg = resolve("atto_x_atto")
    assert cfg.mixing == "stem" and not cfg.feature_pyramid and cfg.pfp.enabled
    assert cfg.decoder.kind == "pretrained" and cfg.pfp.scale == 4


@pytest.mark.parametrize("row", sorted(ABLATION_ROWS))
def test_ablation_rows(row):
    cfg = resolve("atto_x_atto", ablation=row)
    assert cfg.decoder.kind == ("fpn" if row == "fpn" else "pretrained")


def test_yaml_file_with_variant_and_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  variant: atto_x_atto\n  ablation: xnet_i\n"
                    "  semantic: {num_classes: 3}\n  depth: {max_depth: 80.0}\n")
    cfg = resolve(str(path))
    assert cfg.mixing == "image" and cfg.semantic.num_classes == 3
    assert cfg.depth.max_depth == 80.0 and cfg.encoder.name == "convnext_atto"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mixing": "sum"}, "mixing"),
        ({"decoder": {"kind": "unet"}}, "decoder.kind"),
        ({"encoder": {"nme": "x"}}, "encoder: unknown key(s) ['nme']"),
        ({"depth": None}, "at least one head"),
        ({"depth": {"max_depth": -1}}, "max_depth"),
        ({"semantic": {"num_classes": 2, "class_names": ["a"]}}, "semantic.class_names"),
        ({"pfp": {"scale": 3}}, "pfp.scale"),
        ({"variant": "nope"}, "unknown variant"),
        ({"decoder": {"kind": "fpn"}, "mixing": "stem"}, "no stem"),
    ],
)
def test_bad_values_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(spec)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        resolve(str(bad))
