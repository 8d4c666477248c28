"""SILog / cross-entropy / multi-task losses: values, masking, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xnet_model.losses import MultiTaskLoss, SegmentationCELoss, SILogLoss


def _depth(seed: int = 0, shape: tuple[int, ...] = (2, 1, 8, 8)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 9 + 1


def test_silog_perfect_prediction_is_zero_with_finite_grad() -> None:
    gt = _depth()
    pred = gt.clone().requires_grad_(True)
    loss = SILogLoss()(pred, gt)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silog_scale_error_depends_on_lambda() -> None:
    gt = _depth()
    pred = (gt * 1.3).requires_grad_(True)
    assert SILogLoss(lambd=1.0)(pred, gt).item() == pytest.approx(0.0, abs=1e-5)
    # lambd 0.85: 10 * sqrt(d^2 - 0.85 d^2) = 10 * sqrt(0.15) * log(1.3)
    expected = 10 * math.sqrt(0.15) * math.log(1.3)
    loss = SILogLoss(lambd=0.85)(pred, gt)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silog_matches_bts_formula_and_masks_invalid_gt() -> None:
    gt = _depth(1, (2, 8, 8))
    gt[0, :4] = 0.0  # invalid: excluded
    pred = _depth(2, (2, 1, 8, 8))
    valid = gt > 1e-3
    d = torch.log(pred[:, 0][valid]) - torch.log(gt[valid])
    expected = 10 * torch.sqrt((d**2).mean() - 0.85 * d.mean() ** 2)
    assert SILogLoss()(pred, gt).item() == pytest.approx(expected.item(), rel=1e-5)
    mask = torch.zeros_like(gt, dtype=torch.bool)
    mask[1] = True
    d = torch.log(pred[1, 0]) - torch.log(gt[1])
    expected = 10 * torch.sqrt((d**2).mean() - 0.85 * d.mean() ** 2)
    assert SILogLoss()(pred, gt, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_silog_no_valid_pixel_is_zero_and_differentiable() -> None:
    pred = _depth().requires_grad_(True)
    loss = SILogLoss()(pred, torch.zeros(2, 8, 8))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_silog_tolerates_zero_prediction() -> None:
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss = SILogLoss()(pred, torch.full((1, 4, 4), 2.0))
    assert torch.isfinite(loss)


def test_ce_ignores_255() -> None:
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    ignored = labels.clone()
    ignored[:, :2] = 255
    loss = SegmentationCELoss()(logits, ignored)
    keep = ignored != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], labels[keep])
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    # changing the logits at ignored pixels changes nothing
    logits2 = logits.clone()
    logits2[:, :, :2] += 100.0
    assert SegmentationCELoss()(logits2, ignored).item() == pytest.approx(loss.item())
    all_ignored = SegmentationCELoss()(logits, torch.full((2, 4, 4), 255))
    assert all_ignored.item() == 0.0


def test_multitask_weights_and_upsampling() -> None:
    gt_depth = _depth(3, (2, 16, 16))
    labels = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(4))
    outputs = {
        "depth": _depth(5, (2, 1, 8, 8)).requires_grad_(True),
        "semantic": torch.randn(2, 5, 8, 8, requires_grad=True),
    }
    criterion = MultiTaskLoss({"depth": 1.0, "semantic": 0.5})
    total, parts = criterion(outputs, {"depth": gt_depth, "labels": labels})
    up_depth = F.interpolate(outputs["depth"], size=(16, 16), mode="bilinear")
    up_logits = F.interpolate(outputs["semantic"], size=(16, 16), mode="bilinear")
    assert parts["depth"] == pytest.approx(SILogLoss()(up_depth, gt_depth).item(), rel=1e-6)
    assert parts["semantic"] == pytest.approx(
        SegmentationCELoss()(up_logits, labels).item(), rel=1e-6)
    assert parts["total"] == pytest.approx(parts["depth"] + 0.5 * parts["semantic"], rel=1e-6)
    assert total.item() == pytest.approx(parts["total"])
    total.backward()
    assert outputs["depth"].grad is not None and outputs["semantic"].grad is not None


def test_multitask_single_task_and_errors() -> None:
    gt = _depth(6, (1, 1, 8, 8))
    total, parts = MultiTaskLoss({"depth": 2.0})({"depth": gt.clone()}, {"depth": gt})
    assert set(parts) == {"depth", "total"} and total.item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown task"):
        MultiTaskLoss({"normals": 1.0})
    with pytest.raises(ValueError, match="no task"):
        MultiTaskLoss({})({"depth": gt}, {"labels": torch.zeros(1, 8, 8, dtype=torch.long)})
