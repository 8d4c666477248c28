"""ModelMetadata: one derivation of class names, palette, depth range, size, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from xnet_model.config import resolve
from xnet_model.metadata import ModelMetadata
from xnet_model.palette import default_palette


def _cfg(**over):
    return resolve({"encoder": {"name": "convnext_atto"}, "decoder": {"name": "convnext_atto"},
                    **over})


def test_defaults_fill_names_and_palette_once():
    meta = ModelMetadata.from_config(
        _cfg(semantic={"num_classes": 3}, data={"input_size": [64, 96]}), size_multiple=32)
    assert meta.tasks == ("depth", "semantic")
    assert meta.class_names == ("class_0", "class_1", "class_2")
    # default_palette(3): Pascal VOC colours of ids 1, 2, 3 (bit-interleaved)
    assert meta.palette == ((128, 0, 0), (0, 128, 0), (128, 128, 0))
    np.testing.assert_array_equal(meta.palette_array(), default_palette(3))
    assert meta.palette_array().dtype == np.uint8
    assert (meta.min_depth, meta.max_depth) == (1e-3, 10.0)
    assert meta.input_size == (64, 96)
    assert meta.network_size(480, 640) == (64, 96)


def test_given_names_palette_and_depth_only_model():
    meta = ModelMetadata.from_config(
        _cfg(semantic={"num_classes": 2, "class_names": ["a", "b"],
                       "palette": [[1, 2, 3], [4, 5, 6]]}, depth=None), size_multiple=14)
    assert meta.tasks == ("semantic",)
    assert meta.class_names == ("a", "b")
    assert meta.palette == ((1, 2, 3), (4, 5, 6))
    assert meta.max_depth is None and meta.min_depth == 1e-3
    # free input size: rounded up to the size multiple (14 * 35 = 490, 14 * 46 = 644)
    assert meta.input_size is None
    assert meta.network_size(480, 640) == (490, 644)


def test_no_semantic_head():
    meta = ModelMetadata.from_config(_cfg(), size_multiple=32)
    assert meta.num_classes == 0 and meta.class_names == () and meta.palette == ()
    assert meta.palette_array().shape == (0, 3)


def test_json_round_trip(tmp_path):
    meta = ModelMetadata.from_config(
        _cfg(semantic={"num_classes": 4}, data={"input_size": [32, 64]}), size_multiple=32)
    path = meta.save(tmp_path / "metadata.json")
    assert ModelMetadata.load(path) == meta


def test_bad_files_name_the_problem(tmp_path):
    bad = tmp_path / "metadata.json"
    bad.write_text('{"name": "x", "tasks": ["depth"], "mean": [0, 0, 0], "std": [1, 1, 1], '
                   '"colour": 3}')
    with pytest.raises(ValueError, match="unknown key.*colour"):
        ModelMetadata.load(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read model metadata"):
        ModelMetadata.load(bad)
    with pytest.raises(ValueError, match="cannot read model metadata"):
        ModelMetadata.load(tmp_path / "missing.json")


def test_packaged_demo_model_metadata():
    from pathlib import Path

    import xnet_model
    from xnet_model import load_model

    meta = load_model(Path(xnet_model.__file__).parent / "assets" / "demo_model").meta
    # values written in assets/demo_model/config.json when the demo model was trained
    assert meta.name == "demo_synthetic"
    assert meta.input_size == (120, 160)
    assert meta.class_names[:3] == ("wall", "floor", "ceiling")
    assert meta.palette[0] == (174, 199, 232)
    assert meta.num_classes == len(meta.palette) == 10
