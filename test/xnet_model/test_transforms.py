"""Paired transforms keep image, depth and labels aligned; padding, KB crop, tensors, seeding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xnet_model.data import transforms as T

ROW_CODE = 10000  # depth = row * ROW_CODE + col + 1: every pixel's origin, exact in float32


def coded_sample(height: int = 60, width: int = 80) -> dict:
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    return {
        "image": image,
        "depth": (rows * ROW_CODE + cols + 1).astype(np.float32),
        "labels": ((rows + 2 * cols) % 200).astype(np.uint8),
        "meta": {"name": "coded"},
    }


def decode(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    code = depth.astype(np.int64) - 1
    return code // ROW_CODE, code % ROW_CODE


def assert_aligned(sample: dict, exact_image: bool = True) -> None:
    """Labels and image at each pixel come from the pixel the depth code names."""
    valid = sample["depth"] > 0
    rows, cols = decode(sample["depth"])
    assert np.array_equal(sample["labels"][valid], ((rows + 2 * cols) % 200)[valid])
    assert np.all(sample["labels"][~valid] == 255)
    if exact_image:
        assert np.array_equal(sample["image"][..., 0][valid], (rows % 256)[valid])
        assert np.array_equal(sample["image"][..., 1][valid], (cols % 256)[valid])


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_flip_keeps_alignment() -> None:
    out = T.RandomHorizontalFlip(p=1.0)(coded_sample(), rng())
    _, cols = decode(out["depth"])
    assert cols[0, 0] == 79 and cols[0, -1] == 0
    assert_aligned(out)
    assert out["meta"] == {"name": "coded"}
    same = T.RandomHorizontalFlip(p=0.0)(coded_sample(), rng())
    assert np.array_equal(same["depth"], coded_sample()["depth"])


def test_crop_keeps_alignment_and_size() -> None:
    for seed in range(5):
        out = T.RandomScaleCrop((32, 48))(coded_sample(), rng(seed))
        assert out["image"].shape == (32, 48, 3)
        assert out["depth"].shape == out["labels"].shape == (32, 48)
        assert_aligned(out)
        rows, cols = decode(out["depth"])  # a contiguous window of the original
        assert np.array_equal(rows, rows[:, :1] + 0 * cols) and np.all(np.diff(cols, axis=1) == 1)


def test_scale_crop_targets_stay_consistent() -> None:
    for seed in range(5):
        out = T.RandomScaleCrop((40, 40), scale_range=(0.5, 2.0))(coded_sample(), rng(seed))
        assert out["image"].shape == (40, 40, 3)
        assert_aligned(out, exact_image=False)
        valid = out["depth"] > 0
        rows, _ = decode(out["depth"])
        # bilinear image row ramp vs nearest depth row: within a couple of source pixels
        diff = np.abs(out["image"][..., 0].astype(int) - rows)[valid]
        assert diff.max() <= 2


def test_crop_bigger_than_image_pads_with_ignore() -> None:
    sample = coded_sample(20, 30)
    out = T.RandomScaleCrop((40, 50))(sample, rng())
    assert out["image"].shape == (40, 50, 3)
    assert (out["labels"] != 255).sum() == 20 * 30
    assert (out["depth"] > 0).sum() == 20 * 30
    assert np.all(out["image"][out["labels"] == 255] == 0)
    assert_aligned(out)


def test_rotation_uses_nearest_for_targets() -> None:
    for seed in range(3):
        out = T.RandomRotation(degrees=10.0)(coded_sample(), rng(seed))
        assert out["depth"].dtype == np.float32 and out["labels"].dtype == np.uint8
        assert_aligned(out, exact_image=False)  # every depth value is an original code
        angle = rng(seed).uniform(-10.0, 10.0)  # the draw the transform made
        assert (out["depth"] == 0).any() == (abs(angle) > 1.0)  # uncovered corners get 0 / 255
    zero = T.RandomRotation(degrees=0.0)(coded_sample(), rng())
    assert np.array_equal(zero["depth"], coded_sample()["depth"])


def test_color_jitter_touches_only_the_image() -> None:
    sample = coded_sample()
    out = T.ColorJitter(0.4, 0.4, 0.4)(sample, rng(3))
    assert out["image"].dtype == np.uint8 and not np.array_equal(out["image"], sample["image"])
    assert out["depth"] is sample["depth"] and out["labels"] is sample["labels"]
    unchanged = T.ColorJitter(0.0, 0.0, 0.0)(sample, rng())
    assert np.array_equal(unchanged["image"], sample["image"])


def test_kb_crop_geometry() -> None:
    out = T.KBCrop()(coded_sample(375, 1242))
    assert out["image"].shape == (352, 1216, 3)
    rows, cols = decode(out["depth"])
    assert (rows[0, 0], cols[0, 0]) == (375 - 352, (1242 - 1216) // 2)
    assert (rows[-1, -1], cols[-1, -1]) == (374, 13 + 1215)
    assert_aligned(out)
    with pytest.raises(ValueError, match="352x1216"):
        T.KBCrop()(coded_sample(300, 1242))


def test_resize_nearest_targets_and_image_only_option() -> None:
    out = T.Resize((30, 40))(coded_sample())
    assert out["image"].shape == (30, 40, 3) and out["labels"].shape == (30, 40)
    assert_aligned(out, exact_image=False)
    image_only = T.Resize(32, targets=False)(coded_sample())
    assert image_only["image"].shape == (32, 32, 3) and image_only["depth"].shape == (60, 80)


def test_normalize_to_tensor() -> None:
    sample = coded_sample(4, 6)
    sample["image"][:] = 255
    out = T.NormalizeToTensor(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(sample)
    assert out["image"].shape == (3, 4, 6) and out["image"].dtype == torch.float32
    assert torch.allclose(out["image"][:, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    assert out["depth"].shape == (1, 4, 6) and out["depth"].dtype == torch.float32
    assert out["labels"].shape == (4, 6) and out["labels"].dtype == torch.int64
    assert out["labels"][1, 2].item() == (1 + 4) % 200


def test_build_transforms_per_task() -> None:
    depth_train = T.build_transforms("depth", True, (32, 48), seed=0)
    names = [type(t).__name__ for t in depth_train.transforms]
    assert names == ["RandomRotation", "RandomScaleCrop", "RandomHorizontalFlip", "ColorJitter",
                     "NormalizeToTensor"]
    out = depth_train(coded_sample())
    assert out["image"].shape == (3, 32, 48) and out["depth"].shape == (1, 32, 48)

    semantic = T.build_transforms("semantic", True, 48, seed=0)
    assert semantic.transforms[0].scale_range == (0.5, 2.0)
    out = semantic(coded_sample())
    assert out["image"].shape == (3, 48, 48) and out["labels"].dtype == torch.int64

    kitti_eval = T.build_transforms("depth", False, kb_crop=True)
    out = kitti_eval(coded_sample(375, 1242))
    assert out["image"].shape == (3, 352, 1216) and out["depth"].shape == (1, 352, 1216)

    eval_resized = T.build_transforms("semantic", False, resize=(32, 32))
    out = eval_resized(coded_sample())
    assert out["image"].shape == (3, 32, 32) and out["labels"].shape == (60, 80)
    with pytest.raises(ValueError, match="semantic"):
        T.build_transforms("normals", True)


def test_seeded_pipelines_repeat_and_workers_differ(monkeypatch) -> None:
    def run(seed: int) -> np.ndarray:
        return T.build_transforms("semantic", True, 32, seed=seed)(coded_sample())["labels"]

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))

    pipeline = T.build_transforms("semantic", True, 32, seed=1)
    in_main = pipeline(coded_sample())["labels"]
    outs = []
    for worker_id in (0, 1):
        info = SimpleNamespace(id=worker_id, seed=1000 + worker_id)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        outs.append(pipeline(coded_sample())["labels"])
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], in_main)
