"""Scores of one camera in `xnet bag eval`: GT matched by stamp, metrics, panels, report.

Each image is paired with a GT depth image (32FC1 metres, or 16UC1/mono16 millimetres) and/or a
GT label image (mono8/mono16, 255 = ignore) by header stamp: equal stamps (`exact`), or the
closest stamp within a tolerance (`nearest`). Depth metrics (`xnet_model.metrics.depth_metrics`)
are computed per image and averaged over images, segmentation is accumulated over the dataset.
Frames without GT are counted and listed, never dropped silently. A frame waits (with its
prediction) until every GT topic has moved past its stamp plus the tolerance.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from xnet_model.metrics import (
    DepthMetricAccumulator,
    SegmentationMetric,
    crop_mask,
    depth_metrics,
)

from ..conversions import image_to_array
from .io import BagError
from .report import ReportWriter

log = logging.getLogger(__name__)

DEPTH_UNITS = {"32FC1": 1, "16UC1": 1000, "mono16": 1000}  # GT encoding -> units per metre
SATURATED_MM = 65535  # "65.535 m or more": no measurement, like 0
LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")
MAX_WAITING = 64  # images held for their GT before they are evaluated with what has arrived
MAX_BUFFERED_GT = 64  # GT messages held per topic
ERROR_SAMPLES_PER_FRAME = 4000  # pixels per frame kept for the error histogram
IGNORE_LABEL = 255


def gt_depth_metres(msg: Any) -> np.ndarray:
    """A GT depth Image in metres (float32). 0 and NaN stay invalid; a saturated 16-bit value
    (65535 mm) becomes NaN, since the true depth beyond 65.5 m is unknown."""
    units = DEPTH_UNITS.get(msg.encoding)
    if units is None:
        raise ValueError(f"GT depth encoding {msg.encoding!r} is not one of "
                         f"{', '.join(DEPTH_UNITS)}")
    depth = image_to_array(msg)
    if units == 1:
        return depth
    metres = depth.astype(np.float32) / np.float32(units)
    metres[depth == SATURATED_MM] = np.nan
    return metres


def gt_labels(msg: Any) -> np.ndarray:
    if msg.encoding not in LABEL_ENCODINGS:
        raise ValueError(f"GT label encoding {msg.encoding!r} is not one of "
                         f"{', '.join(LABEL_ENCODINGS)}")
    return image_to_array(msg)


class StampMatcher:
    """GT arrays by header stamp, paired with image stamps (exact, or nearest within tolerance)."""

    def __init__(self, tolerance_ns: int, nearest: bool):
        self.tolerance_ns = tolerance_ns if nearest else 0
        self.nearest = nearest
        self.items: dict[int, np.ndarray] = {}
        self.latest: int | None = None

    def add(self, stamp: int, value: np.ndarray) -> None:
        self.items[stamp] = value
        self.latest = stamp if self.latest is None else max(self.latest, stamp)
        if len(self.items) > MAX_BUFFERED_GT:
            del self.items[min(self.items)]

    def settled(self, stamp: int) -> bool:
        """No later GT message can give `stamp` a better match."""
        return stamp in self.items or (self.latest is not None and
                                       self.latest > stamp + self.tolerance_ns)

    def match(self, stamp: int) -> tuple[int, np.ndarray] | None:
        if stamp in self.items:
            return stamp, self.items[stamp]
        if not self.nearest or not self.items:
            return None
        best = min(self.items, key=lambda s: abs(s - stamp))
        return (best, self.items[best]) if abs(best - stamp) <= self.tolerance_ns else None

    def prune(self, before: int) -> None:
        for stamp in [s for s in self.items if s < before - self.tolerance_ns]:
            del self.items[stamp]


@dataclass
class WaitingFrame:
    index: int
    stamp: int
    timestamp: int
    depth: np.ndarray | None
    labels: np.ndarray | None
    rgb: np.ndarray | None  # kept only for frames that get a panel


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    depth: DepthMetricAccumulator = field(default_factory=DepthMetricAccumulator)
    errors: list[np.ndarray] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)


class CameraScore:
    """The evaluation state of one camera: GT matchers, frames waiting for GT, the tally."""

    def __init__(self, meta: Any, opts: Any, kinds: list[str], report: ReportWriter,
                 panel_indices: set[int], max_depth: float):
        nearest = opts.match == "nearest"
        tolerance_ns = int(round(opts.tolerance_ms * 1e6))
        self.meta, self.opts, self.report = meta, opts, report
        self.matchers = {kind: StampMatcher(tolerance_ns, nearest) for kind in kinds}
        self.panel_indices, self.max_depth = panel_indices, max_depth
        self.num_classes, self.palette = meta.num_classes, meta.palette_array()
        self.segmentation = (SegmentationMetric(self.num_classes, ignore_index=IGNORE_LABEL)
                             if "labels" in kinds else None)
        self.tally = Tally()
        self.waiting: deque[WaitingFrame] = deque()
        self.taken = 0  # frames taken (after --every)
        self.rng = np.random.default_rng(0)

    def add_gt(self, kind: str, stamp: int, value: np.ndarray) -> None:
        self.matchers[kind].add(stamp, value)

    def add_frame(self, frame: WaitingFrame) -> None:
        self.waiting.append(frame)

    def evaluate_settled(self) -> None:
        """Evaluate the waiting frames whose GT cannot get better, then forget older GT."""
        last = None
        while self.waiting and (
                len(self.waiting) > MAX_WAITING or
                all(m.settled(self.waiting[0].stamp) for m in self.matchers.values())):
            frame = self.waiting.popleft()
            self._evaluate(frame)
            last = frame.stamp
        if last is not None:
            oldest = min([last] + [f.stamp for f in self.waiting])
            for matcher in self.matchers.values():
                matcher.prune(oldest)

    def finish(self) -> None:
        while self.waiting:
            self._evaluate(self.waiting.popleft())

    def _evaluate(self, frame: WaitingFrame) -> None:
        tally, record = self.tally, {"index": frame.index, "stamp_ns": frame.stamp,
                                     "bag_time_ns": frame.timestamp}
        gt_depth = gt_label = pred_depth = pred_labels = None
        found = []
        if "depth" in self.matchers:
            match = self.matchers["depth"].match(frame.stamp)
            record["depth"] = None
            if match is None:
                tally.counts["depth_without_gt"] += 1
            else:
                gt_stamp, gt_depth = match
                pred_depth = _resized(frame.depth, gt_depth.shape, cv2.INTER_LINEAR)
                metrics = depth_metrics(pred_depth, gt_depth, min_depth=self.opts.min_depth,
                                        max_depth=self.max_depth, crop=self.opts.crop)
                record.update(depth_gt_stamp_ns=gt_stamp,
                              depth_dt_ms=(gt_stamp - frame.stamp) / 1e6, depth=metrics)
                found.append("depth")
                tally.counts["depth_matched"] += 1
                if tally.depth.add(metrics):
                    tally.errors.append(self._error_sample(pred_depth, gt_depth))
                else:
                    tally.counts["depth_no_valid_pixels"] += 1
        if "labels" in self.matchers:
            match = self.matchers["labels"].match(frame.stamp)
            record["pixel_acc"] = None
            if match is None:
                tally.counts["labels_without_gt"] += 1
            else:
                gt_stamp, gt_label = match
                pred_labels = _resized(frame.labels, gt_label.shape, cv2.INTER_NEAREST)
                self.segmentation.update(pred_labels, gt_label)
                labelled = (gt_label != 255) & (gt_label < self.num_classes)
                correct = np.count_nonzero((pred_labels == gt_label) & labelled)
                total = np.count_nonzero(labelled)
                record.update(labels_gt_stamp_ns=gt_stamp,
                              labels_dt_ms=(gt_stamp - frame.stamp) / 1e6,
                              pixel_acc=correct / total if total else None)
                found.append("labels")
                tally.counts["labels_matched"] += 1
        status = ("matched" if len(found) == len(self.matchers) else
                  "partial" if found else "without_gt")
        tally.counts[status] += 1
        record["gt"] = status
        tally.frames.append(record)
        if frame.rgb is not None:
            if "depth" in self.matchers and pred_depth is None:
                pred_depth = frame.depth
            if "labels" in self.matchers and pred_labels is None:
                pred_labels = frame.labels
            self.report.panel(frame.index, frame.rgb, gt_depth, pred_depth, gt_label,
                              pred_labels, self.opts.min_depth, self.max_depth, self.palette)

    def _error_sample(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Signed error (pred - gt, metres) on a random subset of the pixels the metrics use."""
        mask = crop_mask(gt.shape, self.opts.crop)
        with np.errstate(invalid="ignore"):
            mask &= np.isfinite(gt) & (gt > self.opts.min_depth) & (gt < self.max_depth)
        idx = np.flatnonzero(mask)
        if idx.size > ERROR_SAMPLES_PER_FRAME:
            idx = self.rng.choice(idx, ERROR_SAMPLES_PER_FRAME, replace=False)
        pred_values = np.nan_to_num(pred.reshape(-1)[idx].astype(np.float64),
                                    nan=self.opts.min_depth, posinf=self.max_depth,
                                    neginf=self.opts.min_depth)
        pred_values = np.clip(pred_values, self.opts.min_depth, self.max_depth)
        return (pred_values - gt.reshape(-1)[idx]).astype(np.float32)

    def document(self, bag_path: str, model_path: str, topics: dict[str, Any],
                 read_error: str | None, seconds: float) -> dict[str, Any]:
        """metrics.json; `topics`: camera, image_topic, depth_topic, labels_topic,
        camera_info_topic (None: none) of this camera."""
        tally, opts = self.tally, self.opts
        counts = {key: tally.counts[key] for key in
                  ("images", "matched", "partial", "without_gt", "failed",
                   "messages_on_image_topic")}
        for kind in self.matchers:
            counts[kind] = {"matched": tally.counts[f"{kind}_matched"],
                            "without_gt": tally.counts[f"{kind}_without_gt"],
                            "gt_failed": tally.counts[f"{kind}_gt_failed"]}
        depth = None
        if "depth" in self.matchers:
            counts["depth"]["no_valid_pixels"] = tally.counts["depth_no_valid_pixels"]
            depth = tally.depth.compute()
        segmentation = None
        if self.segmentation is not None:
            seg = self.segmentation.compute()
            names = self.meta.class_names
            segmentation = {
                "mIoU": seg["mIoU"], "mAcc": seg["mAcc"], "aAcc": seg["aAcc"],
                "classes": [{"id": i, "name": names[i], "IoU": seg["IoU"][i],
                             "Acc": seg["Acc"][i]} for i in range(self.num_classes)],
            }
        return {
            "bag": bag_path,
            "model": {"name": self.meta.name, "path": model_path},
            "settings": {
                **topics, "rectify": opts.rectify, "match": opts.match,
                "tolerance_ms": opts.tolerance_ms if opts.match == "nearest" else 0.0,
                "crop": opts.crop, "min_depth": opts.min_depth, "max_depth": self.max_depth,
                "every": opts.every,
            },
            "counts": counts,
            "depth": depth,
            "segmentation": segmentation,
            "frames": tally.frames,
            "read_error": read_error,
            "seconds": seconds,
        }


def _resized(arr: np.ndarray | None, shape: tuple[int, ...], interpolation: int) -> np.ndarray:
    if arr is None:
        raise BagError("the model returned no prediction for a task being evaluated")
    if arr.shape[:2] == tuple(shape[:2]):
        return arr
    return cv2.resize(arr, (shape[1], shape[0]), interpolation=interpolation)


def panel_positions(frames_total: int | None, num_panels: int) -> set[int]:
    """Positions (among the frames taken) that get a panel: spread evenly, else the first."""
    if num_panels <= 0:
        return set()
    if frames_total is None:
        return set(range(num_panels))
    return {int(round(x)) for x in np.linspace(0, max(frames_total - 1, 0), num_panels)}


