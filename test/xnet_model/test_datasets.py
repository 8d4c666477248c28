"""Datasets on the real fixtures (NYU, KITTI, ADE20K) and a synthetic Cityscapes tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from xnet_model.data.datasets import (
    ADE20KDataset,
    CityscapesDataset,
    DatasetError,
    DepthSplitDataset,
    kitti_eigen,
    nyu_depth,
)
from xnet_model.data.transforms import build_transforms

NYU_RGB = "images/bookstore_0001d_00001.jpg"
NYU_DEPTH = "annotations/bookstore_0001d_00001.png"
KITTI_DRIVE = "2011_09_26_drive_0023_sync"
KITTI_FOCAL = 721.5377


def write_split(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def nyu_root(fixtures_dir: Path) -> Path:
    return fixtures_dir / "nyu" / "mmseg_pseudo_nyu"


@pytest.fixture
def kitti_split(fixtures_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    data_root = fixtures_dir / "kitti" / "KITTI_tiny"
    gt_root = data_root / "2011_09_26"
    lines = [
        f"2011_09_26/{KITTI_DRIVE}/image_02/data/000000000{i}.png "
        f"{KITTI_DRIVE}/proj_depth/velodyne_raw/image_02/000000000{i}.png {KITTI_FOCAL}"
        for i in range(3)
    ]
    return data_root, gt_root, write_split(tmp_path / "kitti_eigen.txt", lines)


def test_nyu_sample_shapes_and_scale(nyu_root: Path, tmp_path: Path) -> None:
    # BTS NYU splits write paths with a leading '/'
    split = write_split(tmp_path / "nyu.txt", [f"/{NYU_RGB} /{NYU_DEPTH} 518.8579"])
    dataset = nyu_depth(nyu_root, None, split)
    assert len(dataset) == 1 and dataset.eval_crop == "eigen_nyu"
    sample = dataset[0]
    image, depth = sample["image"], sample["depth"]
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    bgr = cv2.imread(str(nyu_root / NYU_RGB), cv2.IMREAD_COLOR)
    assert np.array_equal(image, bgr[..., ::-1])  # RGB order
    assert depth.shape == (120, 160) and depth.dtype == np.float32
    assert depth.max() == 10.0 and (depth == 10.0).sum() == 2815
    raw = cv2.imread(str(nyu_root / NYU_DEPTH), cv2.IMREAD_UNCHANGED)
    assert np.allclose(depth, raw / 1000.0)
    assert sample["meta"]["focal"] == pytest.approx(518.8579)
    assert sample["meta"]["split_line"] == 1

    tensors = nyu_depth(nyu_root, nyu_root, split, transform=build_transforms("depth", False))[0]
    assert tensors["image"].shape == (3, 120, 160) and tensors["depth"].shape == (1, 120, 160)


def test_kitti_eigen_kb_crop_and_loader(kitti_split: tuple[Path, Path, Path]) -> None:
    data_root, gt_root, split = kitti_split
    dataset = kitti_eigen(data_root, gt_root, split)
    assert len(dataset) == 3 and dataset.eval_crop == "garg"
    sample = dataset[0]
    assert sample["image"].shape == (352, 1216, 3) and sample["depth"].shape == (352, 1216)
    raw = cv2.imread(sample["meta"]["depth_path"], cv2.IMREAD_UNCHANGED)
    expected = raw[375 - 352 :, 13 : 13 + 1216] / 256.0
    expected[expected > 80.0] = 0.0
    assert np.allclose(sample["depth"], expected)
    assert sample["depth"].max() <= 80.0 and 0.0 < (sample["depth"] > 0).mean() < 0.2

    full = kitti_eigen(data_root, gt_root, split, kb_crop=False)[2]
    assert full["image"].shape == (375, 1242, 3)

    dataset.transform = build_transforms("depth", False)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 3, 352, 1216) and batch["depth"].shape == (3, 1, 352, 1216)
    assert torch.allclose(batch["meta"]["focal"].double(), torch.full((3,), KITTI_FOCAL).double())


def test_depth_none_means_no_ground_truth(kitti_split: tuple[Path, Path, Path],
                                          tmp_path: Path) -> None:
    data_root, gt_root, _ = kitti_split
    rgb = f"2011_09_26/{KITTI_DRIVE}/image_02/data/0000000001.png"
    split = write_split(tmp_path / "test.txt", [f"{rgb} None {KITTI_FOCAL}"])
    sample = kitti_eigen(data_root, gt_root, split)[0]
    assert "depth" not in sample and sample["meta"]["depth_path"] == ""


def test_lines_without_ground_truth_can_be_left_out(kitti_split: tuple[Path, Path, Path],
                                                    tmp_path: Path) -> None:
    data_root, gt_root, full = kitti_split
    lines = full.read_text().splitlines()
    rgb1 = lines[1].split()[0]
    split = write_split(tmp_path / "test.txt", [lines[0], f"{rgb1} None {KITTI_FOCAL}", lines[2]])
    dataset = kitti_eigen(data_root, gt_root, split, require_ground_truth=True)
    assert len(dataset) == 2 and [e.line_number for e in dataset.entries] == [1, 3]
    assert [e.line_number for e in dataset.without_ground_truth] == [2]
    assert all("depth" in dataset[i] for i in range(2))
    assert len(kitti_eigen(data_root, gt_root, split)) == 3  # kept by default
    none_only = write_split(tmp_path / "none.txt", [f"{rgb1} None {KITTI_FOCAL}"])
    with pytest.raises(DatasetError, match="no sample with ground truth"):
        kitti_eigen(data_root, gt_root, none_only, require_ground_truth=True)


def test_split_errors_name_file_and_line(nyu_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DatasetError, match="nope.txt"):
        nyu_depth(nyu_root, None, missing)
    assert issubclass(DatasetError, FileNotFoundError)

    split = write_split(tmp_path / "split.txt", [
        f"{NYU_RGB} {NYU_DEPTH} 518.8579",
        "# a comment",
        f"images/missing.jpg {NYU_DEPTH} 518.8579",
        f"{NYU_RGB} annotations/missing.png 518.8579",
    ])
    dataset = nyu_depth(nyu_root, None, split)
    assert len(dataset) == 3
    dataset[0]
    with pytest.raises(DatasetError, match=r"split\.txt, line 3: rgb file not found: .*missing"):
        dataset[1]
    with pytest.raises(DatasetError, match=r"line 4: depth file not found"):
        dataset[2]
    with pytest.raises(DatasetError, match=r"2 missing file\(s\)") as info:
        dataset.validate()
    assert "line 3" in str(info.value) and "line 4" in str(info.value)

    bad = [("too many", f"{NYU_RGB} {NYU_DEPTH} 1.0 extra", "line 2: expected"),
           ("bad focal", f"{NYU_RGB} {NYU_DEPTH} f=518", "line 2: focal"),
           ("one field", NYU_RGB, "line 2: expected")]
    for name, line, message in bad:
        path = write_split(tmp_path / f"{name}.txt", [f"{NYU_RGB} {NYU_DEPTH}", line])
        with pytest.raises(DatasetError, match=message):
            DepthSplitDataset(nyu_root, None, path, 1000.0, 10.0)
    with pytest.raises(DatasetError, match="no samples"):
        nyu_depth(nyu_root, None, write_split(tmp_path / "empty.txt", [""]))


def test_ade20k_reduce_zero_label(fixtures_dir: Path) -> None:
    root = fixtures_dir / "ade20k"
    dataset = ADE20KDataset(root, split="validation")
    assert len(dataset) == 2 and dataset.num_classes == 150
    sample = dataset[0]
    assert Path(sample["meta"]["rgb_path"]).name == "ADE_val_00000001.jpg"
    assert sample["image"].shape == (512, 683, 3) and sample["labels"].shape == (512, 683)
    assert sample["labels"].dtype == np.uint8
    raw = ADE20KDataset(root, "validation", reduce_zero_label=False)[0]["labels"]
    assert np.array_equal(sample["labels"][raw == 0], np.full((raw == 0).sum(), 255))
    assert np.array_equal(sample["labels"][raw > 0], raw[raw > 0] - 1)
    assert (raw == 0).any()

    out = ADE20KDataset(root, "validation", build_transforms("semantic", True, 64, seed=0))[1]
    assert out["image"].shape == (3, 64, 64) and out["labels"].dtype == torch.int64


def test_ade20k_missing_files(fixtures_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="training"):
        ADE20KDataset(fixtures_dir / "ade20k", split="training")
    root = tmp_path / "ADEChallengeData2016"
    shutil.copytree(fixtures_dir / "ade20k", root)
    (root / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    dataset = ADE20KDataset(root, "validation")
    dataset[0]
    with pytest.raises(DatasetError, match="ADE_val_00000002.png"):
        dataset[1]
    with pytest.raises(DatasetError, match="1 label file"):
        dataset.validate()


def make_cityscapes(root: Path) -> None:
    rng = np.random.default_rng(0)
    for city, frames in (("aachen", 2), ("bochum", 1)):
        image_dir = root / "leftImg8bit" / "val" / city
        label_dir = root / "gtFine" / "val" / city
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for i in range(frames):
            stem = f"{city}_000000_00001{i}"
            bgr = np.zeros((16, 32, 3), np.uint8)
            bgr[..., 0] = 200  # blue in BGR
            cv2.imwrite(str(image_dir / f"{stem}_leftImg8bit.png"), bgr)
            labels = rng.choice([*range(19), 255], size=(16, 32)).astype(np.uint8)
            cv2.imwrite(str(label_dir / f"{stem}_gtFine_labelTrainIds.png"), labels)
            # other gtFine files that must not be picked up
            cv2.imwrite(str(label_dir / f"{stem}_gtFine_labelIds.png"), labels)


def test_cityscapes_layout(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    dataset = CityscapesDataset(tmp_path, "val")
    assert len(dataset) == 3 and dataset.num_classes == 19
    names = [Path(p).name for p, _ in dataset.pairs]
    assert names[0].startswith("aachen") and names[-1].startswith("bochum")
    sample = dataset[2]
    assert sample["image"].shape == (16, 32, 3) and np.all(sample["image"][..., 2] == 200)
    expected = cv2.imread(sample["meta"]["labels_path"], cv2.IMREAD_UNCHANGED)
    assert sample["meta"]["labels_path"].endswith("bochum_000000_000010_gtFine_labelTrainIds.png")
    assert np.array_equal(sample["labels"], expected)
    with pytest.raises(DatasetError, match="leftImg8bit"):
        CityscapesDataset(tmp_path, "train")
