"""Depth metrics (BTS conventions, KITTI reference values) and dataset-level segmentation IoU."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from xnet_model.metrics import (
    DEPTH_METRIC_KEYS,
    DepthMetricAccumulator,
    SegmentationMetric,
    crop_mask,
    depth_metrics,
)

KITTI_GT = ("kitti/KITTI_tiny/2011_09_26/2011_09_26_drive_0023_sync/proj_depth/velodyne_raw/"
            "image_02/0000000000.png")


def test_depth_metrics_hand_computed() -> None:
    gt = np.array([[2.0, 4.0]], dtype=np.float32)
    pred = np.array([[1.0, 4.0]], dtype=np.float32)
    m = depth_metrics(pred, gt)
    assert list(m) == list(DEPTH_METRIC_KEYS)
    assert all(isinstance(v, float) for v in m.values())
    log2 = math.log(2.0)
    expected = {
        "abs_rel": 0.25, "sq_rel": 0.25, "rmse": math.sqrt(0.5),
        "rmse_log": log2 / math.sqrt(2.0), "log10": math.log10(2.0) / 2,
        "silog": 100 * log2 / 2, "d1": 0.5, "d2": 0.5, "d3": 0.5,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key


def test_perfect_and_scaled_predictions() -> None:
    gt = np.linspace(1.0, 9.0, 64, dtype=np.float32).reshape(8, 8)
    perfect = depth_metrics(gt, gt, max_depth=10.0)
    assert perfect["abs_rel"] == 0.0 and perfect["silog"] == 0.0 and perfect["d1"] == 1.0
    scaled = depth_metrics(gt * 1.5, gt, max_depth=100.0)
    assert scaled["abs_rel"] == pytest.approx(0.5)
    assert scaled["silog"] == pytest.approx(0.0, abs=1e-5)  # scale invariant
    assert scaled["d1"] == 0.0 and scaled["d2"] == 1.0  # 1.25 < 1.5 < 1.25^2


def test_clamping_and_valid_mask() -> None:
    gt = np.array([[1.0, 2.0, 3.0, 5.0, 0.0, np.inf, 90.0, np.nan]])
    pred = np.array([[np.nan, np.inf, -1.0, 200.0, 7.0, 7.0, 7.0, 7.0]])
    m = depth_metrics(pred, gt, min_depth=0.5, max_depth=10.0)
    # valid: the first four; clamped pred = [0.5, 10, 0.5, 10]
    p, g = np.array([0.5, 10.0, 0.5, 10.0]), np.array([1.0, 2.0, 3.0, 5.0])
    assert m["abs_rel"] == pytest.approx(np.mean(np.abs(g - p) / g))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((g - p) ** 2)))


def test_gt_exactly_at_min_or_max_depth_is_not_evaluated() -> None:
    """BTS eval_with_pngs.py: valid_mask = (gt > min_depth_eval) & (gt < max_depth_eval),
    strict at both ends (../shared/fixtures/README.md), so e.g. NYU pixels clipped at exactly
    10 m do not count."""
    gt = np.array([[10.0, 2.0, 4.0, 0.5]], dtype=np.float32)
    pred = np.array([[1.0, 1.0, 4.0, 3.0]], dtype=np.float32)
    m = depth_metrics(pred, gt, min_depth=0.5, max_depth=10.0)
    # Only gt 2 and 4 count (pred 1 and 4), as in test_depth_metrics_hand_computed. Were gt 10
    # or 0.5 counted, abs_rel would be (0.9 + 0.5 + 0) / 3 or (0.5 + 0 + 5) / 3.
    log2 = math.log(2.0)
    expected = {
        "abs_rel": 0.25, "sq_rel": 0.25, "rmse": math.sqrt(0.5),
        "rmse_log": log2 / math.sqrt(2.0), "log10": math.log10(2.0) / 2,
        "silog": 100 * log2 / 2, "d1": 0.5, "d2": 0.5, "d3": 0.5,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key
    # one float32 step inside either limit counts: gt 9.9999990 and 0.50000006 with pred 1
    inside = np.array([[np.nextafter(np.float32(10.0), np.float32(0.0)),
                        np.nextafter(np.float32(0.5), np.float32(1.0))]])
    m = depth_metrics(np.ones((1, 2), np.float32), inside, min_depth=0.5, max_depth=10.0)
    assert m["abs_rel"] == pytest.approx((0.9 + 1.0) / 2, rel=1e-6)  # |g - 1| / g: 0.9, ~1.0
    assert m["d1"] == 0.0  # ratios 10 and 2
    # the accumulator (bag eval, trainer validation) applies the same limits
    acc = DepthMetricAccumulator(min_depth=0.5, max_depth=10.0)
    acc.update(pred, gt)
    acc.update(np.ones((1, 2)), np.array([[10.0, 0.5]]))  # nothing valid: skipped
    assert acc.compute()["abs_rel"] == pytest.approx(0.25, rel=1e-12)
    assert (acc.count, acc.skipped) == (1, 1)


def test_no_valid_pixel_gives_nan() -> None:
    m = depth_metrics(np.ones((4, 4)), np.zeros((4, 4)))
    assert all(math.isnan(v) for v in m.values())


def test_torch_inputs_and_channel_dim() -> None:
    gt = torch.full((1, 1, 4, 4), 2.0)
    m = depth_metrics(torch.full((1, 4, 4), 2.0, requires_grad=True), gt)
    assert m["abs_rel"] == 0.0


def test_crops() -> None:
    with pytest.raises(ValueError, match="garg"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 4)), crop="eigen")
    nyu = crop_mask((480, 640), "eigen_nyu")
    assert nyu.sum() == (471 - 45) * (601 - 41)
    assert nyu[45, 41] and nyu[470, 600] and not nyu[44, 41] and not nyu[471, 600]
    assert not nyu[45, 40] and not nyu[45, 601]
    half = crop_mask((240, 320), "eigen_nyu")  # scaled proportionally
    assert half.sum() == (235 - 22) * (300 - 20)
    garg = crop_mask((375, 1242), "garg")
    rows, cols = np.nonzero(garg)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)
    eigen = crop_mask((375, 1242), "eigen_kitti")
    rows, _ = np.nonzero(eigen)
    assert (rows.min(), rows.max() + 1) == (124, 342)


def test_kitti_reference_values(fixtures_dir) -> None:
    raw = cv2.imread(str(fixtures_dir / KITTI_GT), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16
    gt = raw.astype(np.float32) / 256.0
    v, u = np.mgrid[0 : gt.shape[0], 0 : gt.shape[1]].astype(np.float64)
    pred = (gt * (1 + 0.2 * np.sin(u / 50) + 0.1 * np.cos(v / 30))).astype(np.float32)
    m = depth_metrics(pred, gt, crop="garg", max_depth=80.0)
    assert m["abs_rel"] == pytest.approx(0.138552, abs=1e-5)
    assert m["rmse"] == pytest.approx(3.306636, abs=1e-5)
    assert m["d1"] == pytest.approx(0.810641, abs=1e-5)
    assert m["silog"] == pytest.approx(16.246988, abs=1e-5)


def test_accumulator_averages_over_images() -> None:
    gt = np.array([[2.0, 4.0]])
    acc = DepthMetricAccumulator(max_depth=10.0)
    acc.update(np.array([[1.0, 4.0]]), gt)  # abs_rel 0.25
    acc.update(torch.tensor([[[[2.0, 4.0]]]]), torch.tensor([[[[2.0, 4.0]]]]))  # abs_rel 0
    acc.update(np.ones((1, 2)), np.zeros((1, 2)))  # no valid pixel: skipped
    out = acc.compute()
    assert out["count"] == 2 and acc.skipped == 1
    assert out["abs_rel"] == pytest.approx(0.125)
    acc.reset()
    acc.update(np.stack([gt, gt]) * 1.0, np.stack([gt, gt]))  # a batch
    assert acc.compute()["count"] == 2
    assert math.isnan(DepthMetricAccumulator().compute()["rmse"])


def test_segmentation_hand_computed() -> None:
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    metric = SegmentationMetric(num_classes=4)
    metric.update(pred, gt)
    out = metric.compute()
    # confusion rows (gt) 0: [1,1,0], 1: [0,2,0], 2: [0,1,0]; class 3 absent everywhere
    assert out["IoU"][:3] == pytest.approx([0.5, 0.5, 0.0])
    assert math.isnan(out["IoU"][3]) and math.isnan(out["Acc"][3])
    assert out["Acc"][:3] == pytest.approx([0.5, 1.0, 0.0])
    assert out["mIoU"] == pytest.approx(1 / 3)
    assert out["mAcc"] == pytest.approx(0.5)
    assert out["aAcc"] == pytest.approx(3 / 5)


def test_segmentation_ignores_and_batches() -> None:
    metric = SegmentationMetric(num_classes=2, ignore_index=255)
    gt = torch.tensor([[[0, 1, 255, 7]], [[1, 1, 0, 255]]])  # 7 >= num_classes: ignored
    pred = torch.tensor([[[0, 1, 1, 0]], [[1, 0, 0, 1]]])
    metric.update(pred, gt)
    out = metric.compute()
    assert metric.confusion.dtype == np.int64 and metric.confusion.sum() == 5
    assert out["aAcc"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="outside"):
        metric.update(np.array([[5]]), np.array([[0]]))
    metric.reset()
    assert math.isnan(metric.compute()["mIoU"])


def test_segmentation_dataset_level_differs_from_per_image_mean() -> None:
    images = [
        (np.zeros((1, 8), int), np.zeros((1, 8), int)),  # per-image mIoU 1.0
        (np.array([[1, 1]]), np.array([[0, 1]])),  # IoU0 = 0, IoU1 = 0.5 -> 0.25
    ]
    dataset = SegmentationMetric(num_classes=2)
    per_image = []
    for pred, gt in images:
        dataset.update(pred, gt)
        single = SegmentationMetric(num_classes=2)
        single.update(pred, gt)
        per_image.append(single.compute()["mIoU"])
    assert np.mean(per_image) == pytest.approx(0.625)
    # summed confusion [[8, 1], [0, 1]]: IoU0 = 8/9, IoU1 = 1/2
    assert dataset.compute()["mIoU"] == pytest.approx((8 / 9 + 0.5) / 2)
