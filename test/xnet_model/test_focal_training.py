"""Camera-aware training: the focal follows every resize, depth targets go into the canonical
camera, synthetic scenes through random lenses, config checks, and evaluation in metres."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from xnet_model import build_model
from xnet_model.config import ConfigError, deep_merge
from xnet_model.data.synthetic import SyntheticDataset
from xnet_model.data.transforms import (
    CanonicalDepth,
    RandomScaleCrop,
    Resize,
    build_transforms,
)
from xnet_model.train.cli import eval_main
from xnet_model.train.config import load_train_config, validate
from xnet_model.train.data import train_dataset, val_dataset
from xnet_model.train.evaluate import predict

F60_64 = 32 / math.tan(math.radians(30))  # fx of a 60-degree lens 64 px wide: 55.4256
MODEL = {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"},
         "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 10},
         "data": {"input_size": [48, 64], "canonical_focal": 40.0}}


def sample(h=40, w=60, depth=4.0, focal=100.0):
    return {"image": np.zeros((h, w, 3), np.uint8), "depth": np.full((h, w), depth, np.float32),
            "labels": np.zeros((h, w), np.uint8), "focal": focal}


def config(out_dir, **sections) -> dict:
    cfg = {"model": MODEL,
           "data": {"batch_size": 2, "val_batch_size": 2, "workers": 0, "rotation_degrees": 0.0,
                    "synthetic": {"image_size": [48, 64], "train_length": 6, "val_length": 2}},
           "optim": {"max_steps": 2}, "out_dir": str(out_dir), "progress": False,
           "device": "cpu", "num_threads": 1}
    return deep_merge(cfg, sections)


def test_resizes_carry_the_focal_along():
    rng = np.random.default_rng(0)
    assert Resize((20, 30))(sample(), rng)["focal"] == pytest.approx(50.0)  # half of 100
    assert Resize((20, 30), targets=False)(sample(), rng)["focal"] == pytest.approx(50.0)
    out = RandomScaleCrop((20, 30), (2.0, 2.0))(sample(), rng)  # x2, then a crop: 200
    assert out["image"].shape[:2] == (20, 30) and out["focal"] == pytest.approx(200.0)
    assert "focal" not in Resize((20, 30))({k: v for k, v in sample().items()
                                            if k != "focal"}, rng)


def test_canonical_depth_is_depth_times_canonical_over_focal():
    out = CanonicalDepth(80.0, max_depth=10.0)(sample(depth=4.0, focal=200.0))
    np.testing.assert_allclose(out["depth"], 1.6)  # 4 x 80 / 200
    far = CanonicalDepth(80.0, max_depth=10.0)(sample(depth=30.0, focal=200.0))
    assert not far["depth"].any()  # 12 m > the head's 10 m: invalid, not a wrong target
    with pytest.raises(ValueError, match="no camera focal length"):
        CanonicalDepth(80.0)(sample(focal=math.nan))


def test_focal_augmentation_keeps_target_and_focal_consistent():
    """Random rescaling changes the effective focal; the target follows it exactly:
    depth_c = 4 m x 50 / focal for every valid pixel, whatever the factor drawn."""
    t = build_transforms("depth", True, (20, 30), rotation_degrees=0.0, canonical_focal=50.0,
                         focal_scale_range=(0.5, 2.0), max_depth=10.0)
    focals = []
    for seed in range(12):
        out = t(sample(depth=4.0, focal=100.0), np.random.default_rng(seed))
        depth = out["depth"][0].numpy()
        valid = depth[depth > 0]
        np.testing.assert_allclose(valid, 4.0 * 50.0 / out["focal"], rtol=1e-6)
        focals.append(out["focal"])
    assert 50.0 <= min(focals) < max(focals) <= 200.0 and max(focals) / min(focals) > 1.5
    with pytest.raises(ValueError, match="needs a canonical_focal"):
        build_transforms("depth", True, (20, 30), focal_scale_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="needs a crop_size"):
        build_transforms("depth", True, None, canonical_focal=50.0, focal_scale_range=(0.5, 2))


def test_synthetic_scenes_through_random_lenses():
    fixed = SyntheticDataset(2, 48, 64)
    assert fixed[0]["K"][0, 0] == pytest.approx(F60_64, rel=1e-6)
    ds = SyntheticDataset(400, 48, 64, fov_range=(40.0, 90.0))
    fovs = np.array([ds.fov(i) for i in range(400)])
    assert fovs.min() >= 40.0 and fovs.max() <= 90.0
    assert ds.fov(7) == SyntheticDataset(1, 48, 64, fov_range=(40.0, 90.0)).fov(7)  # seeded
    # focal log-uniform between 32 / tan 45 = 32 and 32 / tan 20 = 87.92 px: the median lens
    # has f = sqrt(32 x 87.92) = 53.04 px, i.e. 2 atan(32 / 53.04) = 62.2 degrees
    assert float(np.median(fovs)) == pytest.approx(62.2, abs=3.0)
    item = ds[3]
    assert item["K"][0, 0] == pytest.approx(32 / math.tan(math.radians(ds.fov(3) / 2)), rel=1e-5)
    with pytest.raises(ValueError, match="fov_range"):
        SyntheticDataset(1, fov_range=(90.0, 40.0))


def test_config_checks_the_focal_augmentation(tmp_path):
    single = deep_merge(MODEL, {"data": {"canonical_focal": None}})
    with pytest.raises(ConfigError, match="model.data.canonical_focal"):
        load_train_config(config(tmp_path, model=single,
                                 data={"synthetic": {"fov_range": [40, 90]}}))
    with pytest.raises(ConfigError, match="data.synthetic.fov_range"):
        load_train_config(config(tmp_path, data={"synthetic": {"fov_range": [90, 40]}}))
    with pytest.raises(ConfigError, match="set data.crop_size"):
        load_train_config(config(tmp_path, data={"focal_scale_range": [0.75, 1.5]}))
    with pytest.raises(ConfigError, match="data.focal_scale_range"):
        load_train_config(config(tmp_path, data={"focal_scale_range": [2.0, 1.0],
                                                 "crop_size": [32, 32]}))
    # xnet eval scores any model (e.g. one saved before) with an augmenting config's data
    cfg = load_train_config(config(tmp_path, data={"synthetic": {"fov_range": [40, 90]}}))
    cfg.model = single
    validate(cfg, training=False)
    # a single-camera model without augmentation is today's configuration
    cfg = load_train_config(config(tmp_path, model=single))
    assert "focal" not in train_dataset(cfg, cfg.model_config())[(0, 0)]


def test_training_targets_are_canonical_and_validation_stays_in_metres(tmp_path):
    """fov_range [60, 60]: every training scene has fx 55.43 px, so the target is the
    rendered depth x 40 / 55.43 (possibly flipped); validation keeps metres and the focal."""
    cfg = load_train_config(config(tmp_path, data={"synthetic": {"fov_range": [60, 60]}}))
    model = cfg.model_config()
    train, val = train_dataset(cfg, model), val_dataset(cfg, model)
    gt = SyntheticDataset(6, 48, 64)[1]["depth"]
    item = train[(0, 1)]
    target = item["depth"][0].numpy()
    assert item["focal"] == pytest.approx(F60_64, rel=1e-6)
    expected = gt * (40.0 / F60_64)
    assert np.allclose(target, expected, rtol=1e-5) or \
        np.allclose(target, expected[:, ::-1], rtol=1e-5)
    v = val[(0, 0)]
    np.testing.assert_array_equal(v["depth"][0].numpy(),
                                  SyntheticDataset(1, 48, 64, 1_000_000)[0]["depth"])
    assert v["focal"] == pytest.approx(F60_64, rel=1e-6)


class ConstantDepth(nn.Module):
    def forward(self, x):
        return {"depth": torch.full((x.shape[0], 1, *x.shape[-2:]), 2.0)}


def test_evaluation_maps_canonical_predictions_to_metres():
    image = torch.zeros(2, 3, 48, 64)
    focal = torch.tensor([F60_64, 2 * F60_64], dtype=torch.float64)
    # network at 24x32: f_net = fx / 2, depth = 2 m x f_net / 40
    out = predict(ConstantDepth(), image, (48, 64), [24, 32], 32, canonical_focal=40.0,
                  focal=focal)
    np.testing.assert_allclose(out["depth"][0].numpy(), 2.0 * 27.7128 / 40.0, rtol=1e-5)
    np.testing.assert_allclose(out["depth"][1].numpy(), 2.0 * 55.4256 / 40.0, rtol=1e-5)
    plain = predict(ConstantDepth(), image, (48, 64), [24, 32], 32)
    np.testing.assert_allclose(plain["depth"].numpy(), 2.0)
    with pytest.raises(ValueError, match="the batch has none"):
        predict(ConstantDepth(), image, (48, 64), [24, 32], 32, canonical_focal=40.0)


@pytest.mark.parametrize("fov", [75.0, 90.0])
def test_eval_cli_scores_a_camera_aware_model_in_metres(tmp_path, fov):
    """A model whose depth head says 7.5 canonical metres everywhere, scored on two held-out
    scenes through a `fov` lens: its metric depth is 7.5 x f / 40 (f = 32 / tan(fov / 2)),
    and abs_rel is recomputed here from the rendered ground truth."""
    torch.manual_seed(0)
    model = build_model(MODEL).eval()
    with torch.no_grad():
        model.heads.depth.weight.zero_()
        model.heads.depth.bias.fill_(math.log(3.0))  # 10 m x sigmoid(ln 3) = 7.5 m
    model.save(tmp_path / "m")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, data={"synthetic": {"fov_deg": fov}})))
    assert eval_main(["--model", str(tmp_path / "m"), "--config", str(path),
                      "--out", str(tmp_path / "report"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "report" / "eval.json").read_text())
    pred = 7.5 * (32 / math.tan(math.radians(fov / 2))) / 40.0
    per_image = []
    for s in SyntheticDataset(2, 48, 64, 1_000_000, fov_deg=fov):
        g = s["depth"][(s["depth"] > 1e-3) & (s["depth"] < 10.0)].astype(np.float64)
        per_image.append(np.mean(np.abs(g - min(pred, 10.0)) / g))
    assert doc["metrics"]["abs_rel"] == pytest.approx(np.mean(per_image), rel=1e-5)
    assert doc["canonical_focal"] == 40.0
