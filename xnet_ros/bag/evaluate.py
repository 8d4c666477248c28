"""`xnet bag eval`: the model's predictions against ground truth stored in a bag.

Each `--image-topic` is a camera with its own GT topics (`--depth-topic` / `--labels-topic`, one
per image topic, in order) and scores (`scoring.CameraScore`: matching by stamp, metrics,
panels). The bag is read in one pass: frames of all cameras are decoded, rectified like the
node does when their camera_info has distortion (`--rectify auto`; the GT then goes through the
same maps, nearest neighbour), and batched into one forward pass (one frame per camera). One
camera writes its report into `--report`; several write one subdirectory each plus a summary.
Stamps are assumed to grow with bag time, roughly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xnet_model.metrics import DEPTH_CROPS, json_safe

from ..outputs import DEPTH
from ..pipeline import FrameInput, FramePipeline, FrameSettings, stamp_ns
from ..rectify import RectifierCache
from .cameras import (
    CameraInfoIndex,
    FrameBatcher,
    as_list,
    camera_info_topic,
    camera_names,
    load_camera_infos,
)
from .infer import IMAGE_TYPES
from .io import BagError, BagReader, BagReadError, Topic, progress_bar, read_ahead
from .messages import COMPRESSED_IMAGE, IMAGE
from .report import ReportWriter
from .scoring import (
    IGNORE_LABEL,
    CameraScore,
    StampMatcher,
    WaitingFrame,
    gt_depth_metres,
    gt_labels,
    panel_positions,
)

__all__ = ["EvalOptions", "StampMatcher", "run_eval"]

log = logging.getLogger(__name__)

MATCH_MODES = ("exact", "nearest")
MAX_LOGGED_FAILURES = 3


@dataclass
class EvalOptions:
    image_topic: str | Sequence[str]  # several: one camera each
    depth_topic: str | Sequence[str] | None = None  # one per image topic
    labels_topic: str | Sequence[str] | None = None
    camera_info_topic: str | Sequence[str] | None = None  # None: the siblings, if any
    use_camera_info: bool = True
    rectify: str = "auto"
    max_batch: int = 0  # frames per forward pass; 0 = the number of cameras
    match: str = "exact"
    tolerance_ms: float = 20.0  # `nearest` only
    crop: str | None = None
    min_depth: float = 1e-3
    max_depth: float | None = None  # None: the model's depth range (80 m without one)
    num_panels: int = 4
    every: int = 1
    read_ahead: int = 4
    quiet: bool = False
    # fx, fy, cx, cy (cx/cy 0 = the centre) for images without camera_info: the focal a
    # camera-aware model needs (pipeline.fit_intrinsics)
    fallback_intrinsics: tuple[float, float, float, float] | None = None


@dataclass
class EvalCamera:
    name: str
    image: Topic
    gt: dict[str, Topic]  # kind (depth, labels) -> topic
    info_topic: str | None
    calibrations: CameraInfoIndex | None
    score: CameraScore | None = None
    gt_maps: RectifierCache = field(default_factory=RectifierCache)
    index: int = -1  # position on the image topic


@dataclass
class Pending:
    """A decoded frame waiting for its batch's forward pass."""

    camera: EvalCamera
    index: int
    position: int  # among the camera's frames taken (panels)
    timestamp: int
    decoded: Any


def _per_camera(value: str | Sequence[str] | None, n: int, flag: str) -> list[str | None]:
    values = as_list(value)
    if values and len(values) != n:
        raise BagError(f"{len(values)} {flag} for {n} --image-topic: give one per image "
                       "topic, in the same order")
    return values or [None] * n


class BagEvaluation:
    def __init__(self, predictor: Any, opts: EvalOptions):
        if opts.match not in MATCH_MODES:
            raise BagError(f"--match must be one of {', '.join(MATCH_MODES)}")
        if opts.crop not in DEPTH_CROPS:
            raise BagError(f"--crop must be one of none, {', '.join(map(str, DEPTH_CROPS[1:]))}")
        if not (opts.depth_topic or opts.labels_topic):
            raise BagError("give a GT topic: --depth-topic and/or --labels-topic")
        if opts.every < 1:
            raise BagError(f"--every must be >= 1, got {opts.every}")
        meta = self.meta = predictor.meta
        if opts.depth_topic and "depth" not in meta.tasks:
            raise BagError(f"--depth-topic given but model {meta.name} predicts no depth")
        if opts.labels_topic and "semantic" not in meta.tasks:
            raise BagError(f"--labels-topic given but model {meta.name} has no semantic head")
        self.predictor, self.opts = predictor, opts
        self.max_depth = opts.max_depth or meta.max_depth or 80.0
        if not self.max_depth > opts.min_depth:
            raise BagError(f"need --max-depth > --min-depth, got {opts.min_depth} and "
                           f"{self.max_depth}")
        settings = FrameSettings(rectify=opts.rectify,
                                 fallback_intrinsics=opts.fallback_intrinsics)
        self.pipeline = FramePipeline(predictor, settings,
                                      wanted=lambda camera: frozenset({DEPTH}),
                                      on_warning=lambda key, message: log.warning(message))
        self._warned: set[str] = set()

    def run(self, bag_path: str | Path, report_dir: str | Path) -> dict[str, Any]:
        start = time.perf_counter()
        read_error = None
        with BagReader(bag_path) as bag:
            cameras = self._cameras(bag)
            many = len(cameras) > 1
            for cam in cameras:
                total = (None if cam.image.count is None
                         else math.ceil(cam.image.count / self.opts.every))
                report = ReportWriter(Path(report_dir) / cam.name.replace("/", "_") if many
                                      else report_dir)
                cam.score = CameraScore(self.meta, self.opts, list(cam.gt), report,
                                        panel_positions(total, self.opts.num_panels),
                                        self.max_depth)
            try:
                self._stream(bag, cameras)
            except BagReadError as exc:
                read_error = str(exc)
                log.error("%s", exc)
            except KeyboardInterrupt:
                read_error = "interrupted"
            for cam in cameras:
                cam.score.finish()
        seconds = time.perf_counter() - start
        model_path = str(getattr(self.predictor, "model_path", "") or "")
        docs = {}
        for cam in cameras:
            topics = {"camera": cam.name, "image_topic": cam.image.name,
                      "depth_topic": getattr(cam.gt.get("depth"), "name", None),
                      "labels_topic": getattr(cam.gt.get("labels"), "name", None),
                      "camera_info_topic": cam.info_topic if cam.calibrations else None}
            docs[cam.name] = cam.score.document(str(bag_path), model_path, topics, read_error,
                                                seconds)
            cam.score.report.write(docs[cam.name], cam.score.tally.frames,
                                   cam.score.tally.errors)
        if not many:
            return docs[cameras[0].name]
        return self._summary(Path(report_dir), str(bag_path), model_path, docs, read_error,
                             seconds)

    # -- setup ------------------------------------------------------------------------------

    def _cameras(self, bag: BagReader) -> list[EvalCamera]:
        opts = self.opts
        topics = as_list(opts.image_topic)
        n = len(topics)
        depth = _per_camera(opts.depth_topic, n, "--depth-topic")
        labels = _per_camera(opts.labels_topic, n, "--labels-topic")
        infos = _per_camera(opts.camera_info_topic, n, "--camera-info-topic")
        images = [bag.topic(t, IMAGE_TYPES, "image") for t in topics]
        cameras = []
        for i, name in enumerate(camera_names([image.name for image in images])):
            gt = {kind: bag.topic(topic, [IMAGE], f"GT {kind}")
                  for kind, topic in (("depth", depth[i]), ("labels", labels[i])) if topic}
            info, calibrations = None, None
            if opts.use_camera_info:
                info, reason = camera_info_topic(bag, images[i], infos[i])
                if info is not None:
                    calibrations, problem = load_camera_infos(bag, info, opts.rectify)
                    if not calibrations and problem:
                        log.warning("no usable camera_info on %s (%s): images not rectified",
                                    info, problem)
            cameras.append(EvalCamera(name, images[i], gt, info, calibrations or None))
        return cameras

    # -- reading ----------------------------------------------------------------------------

    def _stream(self, bag: BagReader, cameras: list[EvalCamera]) -> None:
        images = {cam.image.name: cam for cam in cameras}
        gt = {topic.name: (cam, kind) for cam in cameras for kind, topic in cam.gt.items()}
        counts = [cam.image.count for cam in cameras]
        total = (None if None in counts
                 else sum(math.ceil(n / self.opts.every) for n in counts))
        batcher = FrameBatcher(self.opts.max_batch or len(cameras))
        messages = read_ahead(bag.messages({*images, *gt}), self.opts.read_ahead)
        with progress_bar(total, "xnet bag eval", self.opts.quiet) as bar:
            try:
                for topic, timestamp, raw in messages:
                    if topic in gt:
                        self._add_gt(bag, *gt[topic], topic, raw)
                    else:
                        pending = self._add_image(bag, images[topic], timestamp, raw)
                        if pending is not None:
                            for batch in batcher.add(pending, pending.camera.name):
                                self._predict(batch)
                            bar.update()
                    for cam in cameras:
                        cam.score.evaluate_settled()
                self._predict(batcher.take())
            finally:
                messages.close()  # type: ignore[attr-defined]

    def _add_gt(self, bag: BagReader, cam: EvalCamera, kind: str, topic: str,
                raw: Any) -> None:
        counts = cam.score.tally.counts
        try:
            msg = bag.deserialize(raw, IMAGE)
            value = gt_depth_metres(msg) if kind == "depth" else gt_labels(msg)
            stamp = stamp_ns(msg.header.stamp)
            value = self._rectified_gt(cam, kind, stamp, value)
        except Exception as exc:  # a bad GT message is counted, not fatal
            counts[f"{kind}_gt_failed"] += 1
            if counts[f"{kind}_gt_failed"] <= MAX_LOGGED_FAILURES:
                log.warning("GT message on %s skipped: %s", topic, exc)
            return
        cam.score.add_gt(kind, stamp, value)

    def _rectified_gt(self, cam: EvalCamera, kind: str, stamp: int,
                      value: np.ndarray) -> np.ndarray:
        """GT in the camera the prediction is in: through the image's rectification maps."""
        calib = cam.calibrations.lookup(stamp) if cam.calibrations else None
        if calib is None or not calib.distorted or self.opts.rectify != "auto":
            return value
        height, width = value.shape[:2]
        aspect = width / height
        if abs(calib.width / calib.height - aspect) >= 0.01 * aspect:
            if cam.name + kind not in self._warned:
                self._warned.add(cam.name + kind)
                log.warning("GT %s is %dx%d, the camera_info %dx%d: GT not rectified", kind,
                            width, height, calib.width, calib.height)
            return value
        border = np.nan if kind == "depth" else IGNORE_LABEL
        return cam.gt_maps.get(calib, height, width).rectify(value, cv2.INTER_NEAREST, border)

    def _add_image(self, bag: BagReader, cam: EvalCamera, timestamp: int,
                   raw: Any) -> Pending | None:
        counts = cam.score.tally.counts
        cam.index += 1
        counts["messages_on_image_topic"] += 1
        if cam.index % self.opts.every:
            return None
        position = cam.score.taken
        cam.score.taken += 1
        counts["images"] += 1
        try:
            msg = bag.deserialize(raw, cam.image.msgtype)
            calib = (cam.calibrations.lookup(stamp_ns(msg.header.stamp)) if cam.calibrations
                     else None)
            decoded = self.pipeline.decode(
                FrameInput(msg, cam.image.msgtype == COMPRESSED_IMAGE, camera=cam.name),
                camera_info=calib)
        except Exception as exc:  # a bad frame is counted, not fatal
            counts["failed"] += 1
            if counts["failed"] <= MAX_LOGGED_FAILURES:
                log.warning("image %d on %s skipped: %s", cam.index, cam.image.name, exc)
            return None
        return Pending(cam, cam.index, position, timestamp, decoded)

    def _predict(self, batch: list[Pending]) -> None:
        """One forward pass for a batch; each frame then waits for its GT."""
        if not batch:
            return
        predictions = self.pipeline.predict([p.decoded for p in batch], at_image_size=True)
        for p, prediction in zip(batch, predictions):
            keep_rgb = p.position in p.camera.score.panel_indices
            p.camera.score.add_frame(WaitingFrame(
                p.index, stamp_ns(p.decoded.header.stamp), p.timestamp, prediction.depth,
                prediction.labels, p.decoded.rgb if keep_rgb else None))

    # -- several cameras --------------------------------------------------------------------

    def _summary(self, report_dir: Path, bag: str, model_path: str,
                 docs: dict[str, dict[str, Any]], read_error: str | None,
                 seconds: float) -> dict[str, Any]:
        """metrics.json + report.md over all cameras (each has its own directory)."""
        keys = ("settings", "counts", "depth", "segmentation")
        doc = {"bag": bag, "model": {"name": self.meta.name, "path": model_path},
               "cameras": {name: {k: d[k] for k in keys} for name, d in docs.items()},
               "read_error": read_error, "seconds": seconds}
        (report_dir / "metrics.json").write_text(
            json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        rows = ["| camera | images | matched | AbsRel | RMSE (m) | d1 | mIoU | report |",
                "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, d in docs.items():
            dep, seg, c = d["depth"] or {}, d["segmentation"] or {}, d["counts"]
            cells = [f"{v:.4f}" if isinstance(v, float) else "–"
                     for v in (dep.get("abs_rel"), dep.get("rmse"), dep.get("d1"),
                               seg.get("mIoU"))]
            subdir = name.replace("/", "_")
            rows.append(f"| {name} | {c['images']} | {c['matched']} | {' | '.join(cells)} | "
                        f"[{subdir}/report.md]({subdir}/report.md) |")
        (report_dir / "report.md").write_text(
            f"# xnet bag eval: {bag}\n\nModel {self.meta.name}, {len(docs)} cameras, "
            f"{seconds:.1f} s.\n\n" + "\n".join(rows) + "\n")
        return doc


def run_eval(bag_path: str | Path, report_dir: str | Path, predictor: Any,
             opts: EvalOptions) -> dict[str, Any]:
    return BagEvaluation(predictor, opts).run(bag_path, report_dir)
