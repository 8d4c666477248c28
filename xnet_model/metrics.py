"""Evaluation metrics: metric depth (BTS/AdaBins/NeWCRFs conventions) and segmentation IoU.

Depth metrics are computed per image and averaged over images; segmentation intersections and
unions are summed over the whole dataset before dividing (mmsegmentation convention).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEPTH_METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
DEPTH_CROPS = (None, "garg", "eigen_kitti", "eigen_nyu")


def to_numpy(array: Any) -> np.ndarray:
    """A numpy view/copy of a numpy array or a (possibly CUDA, grad-tracking) torch tensor."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _squeeze_hw(array: Any, name: str) -> np.ndarray:
    """HxW from HxW, 1xHxW or 1x1xHxW."""
    out = to_numpy(array)
    while out.ndim > 2 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"{name}: expected an HxW depth map, got shape {to_numpy(array).shape}")
    return out


def crop_mask(shape: tuple[int, int], crop: str | None) -> np.ndarray:
    """Boolean HxW mask of the standard evaluation crop.

    'garg' / 'eigen_kitti' are fractions of the image size (KITTI). 'eigen_nyu' is the
    [45:471, 41:601] box defined on 480x640 images; other sizes get the same box scaled
    proportionally (bounds = floor(bound * size / 480 or 640)), exact on 480x640.
    """
    if crop not in DEPTH_CROPS:
        raise ValueError(f"crop: {crop!r} is not one of {DEPTH_CROPS}")
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    if crop is None:
        mask[:] = True
    elif crop in ("garg", "eigen_kitti"):
        top, bottom = (0.40810811, 0.99189189) if crop == "garg" else (0.3324324, 0.91351351)
        rows = slice(int(top * height), int(bottom * height))
        mask[rows, int(0.03594771 * width) : int(0.96405229 * width)] = True
    else:
        rows = slice(45 * height // 480, 471 * height // 480)
        mask[rows, 41 * width // 640 : 601 * width // 640] = True
    return mask


def depth_metrics(pred: Any, gt: Any, *, min_depth: float = 1e-3, max_depth: float = 80.0,
                  crop: str | None = None) -> dict[str, float]:
    """Standard depth metrics of one HxW prediction against its ground truth (metres).

    The prediction is clamped to [min_depth, max_depth] (inf -> max, nan -> min); pixels count
    where min_depth < gt < max_depth, gt is finite and inside `crop`. All maths in float64.
    Returns NaN for every metric when no pixel is valid.
    """
    pred64 = _squeeze_hw(pred, "pred").astype(np.float64)
    gt64 = _squeeze_hw(gt, "gt").astype(np.float64)
    if pred64.shape != gt64.shape:
        raise ValueError(f"pred shape {pred64.shape} != gt shape {gt64.shape}")
    mask = crop_mask(gt64.shape, crop)
    with np.errstate(invalid="ignore"):
        mask &= np.isfinite(gt64) & (gt64 > min_depth) & (gt64 < max_depth)
    if not mask.any():
        return {key: math.nan for key in DEPTH_METRIC_KEYS}

    pred64 = np.nan_to_num(pred64, nan=min_depth, posinf=max_depth, neginf=min_depth)
    p = np.clip(pred64, min_depth, max_depth)[mask]
    g = gt64[mask]

    ratio = np.maximum(g / p, p / g)
    log_err = np.log(p) - np.log(g)
    silog_var = max(np.mean(log_err**2) - np.mean(log_err) ** 2, 0.0)  # rounding can dip < 0
    values = {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean(log_err**2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "silog": 100.0 * np.sqrt(silog_var),
        "d1": np.mean(ratio < 1.25),
        "d2": np.mean(ratio < 1.25**2),
        "d3": np.mean(ratio < 1.25**3),
    }
    return {key: float(values[key]) for key in DEPTH_METRIC_KEYS}


class DepthMetricAccumulator:
    """Running mean of `depth_metrics` over images.

    `update` takes one HxW image or a batch (N,H,W) / (N,1,H,W). Images without any valid
    pixel are skipped and counted in `skipped` (they would make every mean NaN).
    """

    def __init__(self, *, min_depth: float = 1e-3, max_depth: float = 80.0,
                 crop: str | None = None) -> None:
        if crop not in DEPTH_CROPS:
            raise ValueError(f"crop: {crop!r} is not one of {DEPTH_CROPS}")
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.crop = crop
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(DEPTH_METRIC_KEYS, 0.0)
        self.count = 0
        self.skipped = 0

    def update(self, pred: Any, gt: Any) -> None:
        pred_np, gt_np = to_numpy(pred), to_numpy(gt)
        if pred_np.ndim == 4:
            pred_np = pred_np[:, 0]
        if gt_np.ndim == 4:
            gt_np = gt_np[:, 0]
        if gt_np.ndim == 2:
            pred_np, gt_np = pred_np.reshape((1, *pred_np.shape[-2:])), gt_np[None]
        if pred_np.shape != gt_np.shape:
            raise ValueError(f"pred shape {pred_np.shape} != gt shape {gt_np.shape}")
        for pred_img, gt_img in zip(pred_np, gt_np):
            self.add(depth_metrics(pred_img, gt_img, min_depth=self.min_depth,
                                   max_depth=self.max_depth, crop=self.crop))

    def add(self, metrics: dict[str, float]) -> bool:
        """Count one image's already computed `depth_metrics`; False if it had no valid pixel."""
        if math.isnan(metrics["abs_rel"]):
            self.skipped += 1
            return False
        for key in DEPTH_METRIC_KEYS:
            self._sums[key] += metrics[key]
        self.count += 1
        return True

    def compute(self) -> dict[str, float]:
        """Mean of each metric over the images seen, plus 'count' (NaN means when count is 0)."""
        means = {key: total / self.count if self.count else math.nan
                 for key, total in self._sums.items()}
        return {**means, "count": self.count}


class SegmentationMetric:
    """Dataset-level confusion matrix -> IoU / accuracy (mmsegmentation conventions).

    Pixels whose gt is `ignore_index` or outside [0, num_classes) are ignored. Per-class IoU is
    NaN for classes absent from both prediction and GT; per-class Acc is NaN for classes absent
    from GT; mIoU / mAcc are the NaN-means of those lists.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        # confusion[gt, pred]
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        """Add one label map or a batch; `pred` holds class ids (argmax already taken)."""
        pred_np = to_numpy(pred).astype(np.int64, copy=False)
        gt_np = to_numpy(gt).astype(np.int64, copy=False)
        if pred_np.shape != gt_np.shape:
            raise ValueError(f"pred shape {pred_np.shape} != gt shape {gt_np.shape}")
        labelled = (gt_np != self.ignore_index) & (gt_np >= 0) & (gt_np < self.num_classes)
        gt_flat, pred_flat = gt_np[labelled], pred_np[labelled]
        if pred_flat.size and (pred_flat.min() < 0 or pred_flat.max() >= self.num_classes):
            raise ValueError(
                f"pred holds class ids outside [0, {self.num_classes}): "
                f"[{pred_flat.min()}, {pred_flat.max()}]"
            )
        k = self.num_classes
        self.confusion += np.bincount(k * gt_flat + pred_flat, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, Any]:
        intersection = np.diag(self.confusion).astype(np.float64)
        gt_area = self.confusion.sum(axis=1).astype(np.float64)
        pred_area = self.confusion.sum(axis=0).astype(np.float64)
        union = gt_area + pred_area - intersection
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, intersection / union, np.nan)
            acc = np.where(gt_area > 0, intersection / gt_area, np.nan)
        total = gt_area.sum()
        return {
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "aAcc": float(intersection.sum() / total) if total else math.nan,
            "IoU": [float(v) for v in iou],
            "Acc": [float(v) for v in acc],
        }


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def json_safe(value: Any) -> Any:
    """Plain JSON types, with NaN / inf as null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
