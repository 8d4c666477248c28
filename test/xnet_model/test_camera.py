"""The canonical camera at inference: focal maths, Predictor(fx=...), metadata through save /
load / pt2 export, and models saved before camera-aware training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny import TINY

from xnet_model import Predictor, build_model, load_model
from xnet_model.camera import check_focal, metric_scale, network_focal
from xnet_model.data.synthetic import render_scene

CANONICAL = 80.0  # fx of a 90-degree horizontal field of view at a 160-pixel-wide input
INPUT = [120, 160]
CONSTANT = 7.5  # canonical depth of the stub network: sigmoid(ln 3) * 10 m = 0.75 * 10 m


def constant_depth_model(canonical_focal: float | None = CANONICAL):
    """A tiny xNet whose depth head outputs CONSTANT metres everywhere (zero weight, bias
    ln 3): whatever the image, the network's depth is known by hand."""
    torch.manual_seed(0)
    data = {"input_size": INPUT, "canonical_focal": canonical_focal}
    model = build_model(TINY, data=data).eval()
    with torch.no_grad():
        model.heads.depth.weight.zero_()
        model.heads.depth.bias.fill_(math.log(3.0))
    return model


def test_network_focal_follows_the_resize():
    # 320 -> 160 wide, 240 -> 120 high: half of fx (hand: 277.128 / 2)
    assert network_focal(277.128, (240, 320), (120, 160)) == pytest.approx(138.564)
    # anisotropic: factors 0.5 and 0.25, geometric mean sqrt(0.125) = 0.353553
    assert network_focal(100.0, (100, 200), (50, 50)) == pytest.approx(35.3553, rel=1e-5)
    assert metric_scale(80.0, 320.0, (240, 320), (120, 160)) == pytest.approx(2.0)
    assert metric_scale(None, 320.0, (240, 320), (120, 160)) == 1.0  # single-camera model
    assert metric_scale(80.0, None, (240, 320), (120, 160)) == 1.0  # no focal: as before


@pytest.mark.parametrize("bad", [0, -5.0, math.nan, math.inf, "wide", None])
def test_a_focal_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="fx"):
        check_focal(bad)


def test_two_fields_of_view_give_depth_in_the_focal_ratio():
    """One synthetic scene through a 40- and a 90-degree lens (320x240). The stub predicts
    canonical depth 7.5 m on both; with fx the Predictor gives 7.5 x f_net / 80: at 90 degrees
    f = 160 / tan 45 = 160 px, f_net = 80 -> 7.5 m; at 40 degrees f = 160 / tan 20 = 439.59 px,
    f_net = 219.80 -> 20.606 m. Their ratio is the focal ratio tan 45 / tan 20 = 2.7475."""
    predictor = Predictor(constant_depth_model())
    wide, narrow = (render_scene(3, 240, 320, fov_deg=fov) for fov in (90.0, 40.0))
    at_wide = predictor.predict(wide.rgb, fx=float(wide.K[0, 0])).depth
    at_narrow = predictor.predict(narrow.rgb, fx=float(narrow.K[0, 0])).depth
    np.testing.assert_allclose(at_wide, 7.5, rtol=1e-5)
    np.testing.assert_allclose(at_narrow, 20.606, rtol=1e-4)
    assert float(np.median(at_narrow) / np.median(at_wide)) == pytest.approx(2.7475, rel=1e-4)
    # without the focal: the network's own output, the same through both lenses (as before)
    np.testing.assert_allclose(predictor.predict(narrow.rgb).depth, CONSTANT, rtol=1e-5)


def test_predict_batch_takes_one_focal_per_image():
    predictor = Predictor(constant_depth_model())
    images = [np.zeros((120, 160, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)]
    # fx 40 at 160 px: f_net 40 -> 7.5 / 2; fx 320 at 320 px: f_net 160 -> 7.5 x 2; None: 7.5
    out = predictor.predict_batch(images + images[:1], fx=[40.0, 320.0, None])
    for prediction, expected in zip(out, (3.75, 15.0, 7.5)):
        np.testing.assert_allclose(prediction.depth, expected, rtol=1e-5)
    raw = predictor.predict_batch(images, fx=[40.0, 320.0], raw=True)  # network size, metres
    assert raw[1].depth.shape == (120, 160)
    np.testing.assert_allclose(raw[1].depth, 15.0, rtol=1e-5)
    with pytest.raises(ValueError, match="2 focal length.s. for 1 image"):
        predictor.predict_batch(images[:1], fx=[40.0, 50.0])
    with pytest.raises(ValueError, match="fx"):
        predictor.predict(images[0], fx=-1.0)


def test_a_single_camera_model_ignores_the_focal():
    predictor = Predictor(constant_depth_model(canonical_focal=None))
    image = np.zeros((120, 160, 3), np.uint8)
    np.testing.assert_allclose(predictor.predict(image, fx=40.0).depth, CONSTANT, rtol=1e-5)


def test_canonical_focal_round_trips_through_save_and_load(tmp_path):
    constant_depth_model().save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["model"]["data"]["canonical_focal"] == CANONICAL
    loaded = load_model(tmp_path / "m")
    assert loaded.meta.canonical_focal == CANONICAL
    predictor = Predictor(tmp_path / "m")
    assert predictor.meta.canonical_focal == CANONICAL
    np.testing.assert_allclose(
        predictor.predict(np.zeros((120, 160, 3), np.uint8), fx=160.0).depth, 15.0, rtol=1e-5)


def test_a_model_saved_before_camera_aware_training_behaves_as_before(tmp_path):
    """config.json as written before the field existed (no data.canonical_focal): it loads,
    has no canonical camera, and gives the same depth with or without a focal."""
    model = constant_depth_model(canonical_focal=None)
    with torch.no_grad():  # an image-dependent head, so 'the same depth' means something
        model.heads.depth.weight.normal_(0, 0.1)
    model.save(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    doc = json.loads(path.read_text())
    del doc["model"]["data"]["canonical_focal"]
    path.write_text(json.dumps(doc))
    old = Predictor(tmp_path / "old")
    assert old.meta.canonical_focal is None
    image = render_scene(5, 240, 320).rgb
    before = Predictor(model).predict(image).depth
    np.testing.assert_array_equal(old.predict(image).depth, before)
    np.testing.assert_array_equal(old.predict(image, fx=500.0).depth, before)


def test_canonical_focal_travels_with_a_pt2_artifact(tmp_path):
    from xnet_model.metadata import ModelMetadata
    from xnet_model.runtime.artifact import METADATA_FILE, export_pt2_artifact

    path, _, meta = export_pt2_artifact(constant_depth_model(), tmp_path / "pt2", 120, 160)
    assert meta.canonical_focal == CANONICAL
    assert ModelMetadata.load(path / METADATA_FILE).canonical_focal == CANONICAL
    artifact = Predictor(path)
    assert artifact.backend.name == "pt2" and artifact.meta.canonical_focal == CANONICAL
    image = np.zeros((240, 320, 3), np.uint8)
    np.testing.assert_allclose(artifact.predict(image, fx=320.0).depth, 15.0, rtol=1e-4)
    np.testing.assert_allclose(artifact.predict(image).depth, CONSTANT, rtol=1e-4)


def test_config_rejects_a_bad_canonical_focal():
    from xnet_model import ConfigError

    with pytest.raises(ConfigError, match="data.canonical_focal"):
        build_model(TINY, data={"canonical_focal": -3.0})
    assert build_model(TINY, data={"canonical_focal": 500}).meta.canonical_focal == 500.0
