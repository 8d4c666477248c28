"""The demo's numbers: counters, FPS, latencies, accuracy against the synthetic ground truth
(`xnet_model.metrics`), and the printed report."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xnet_model.metrics import DepthMetricAccumulator, SegmentationMetric, json_safe

from .conversions import image_to_array
from .pipeline import stamp_ns


@dataclass
class DemoResult:
    frames_published: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    bag: str = ""
    bag_counts: dict[str, int] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)
    model: str = ""
    model_note: str = ""
    backend: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)

    def save(self, out: Path) -> Path:
        path = out / "summary.json"
        path.write_text(json.dumps(json_safe(self.__dict__), indent=2) + "\n")
        return path


def latency_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": math.nan, "p50": math.nan, "p95": math.nan, "max": math.nan}
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def latencies(stats_msgs: list[Any], depth_msgs: list[tuple[int, Any]], snapshot: Any
              ) -> dict[str, dict[str, float]]:
    """Per stage from the node's stats messages (else its own latency window), and end to
    end: image stamp -> depth message received."""
    e2e = [(t - stamp_ns(m.header.stamp)) / 1e6 for t, m in depth_msgs]
    lat = {"pre_ms": latency_stats([m.preprocess_ms for m in stats_msgs]),
           "infer_ms": latency_stats([m.infer_ms for m in stats_msgs]),
           "post_ms": latency_stats([m.postprocess_ms for m in stats_msgs]),
           "node_total_ms": latency_stats([m.total_ms for m in stats_msgs]),
           "end_to_end_ms": latency_stats(e2e)}
    if not stats_msgs:  # no custom messages: the node's own latency window
        for key in ("pre_ms", "infer_ms", "post_ms"):
            s = snapshot.latency[key]
            lat[key] = {"mean": s.mean, "p50": s.p50, "p95": s.p95, "max": s.max}
    return lat


def accuracy(depth_msgs: list[Any], label_msgs: list[Any], frames: list[Any],
             index_of: dict[int, int], meta: Any) -> dict[str, float]:
    """Depth AbsRel (mean over frames) and pixel accuracy / mIoU of the published outputs
    against the ground truth of the frames they belong to."""
    depth = DepthMetricAccumulator(min_depth=meta.min_depth, max_depth=meta.max_depth or 80.0)
    seg = SegmentationMetric(meta.num_classes) if meta.num_classes else None
    for msg in depth_msgs:
        i = index_of.get(stamp_ns(msg.header.stamp))
        if i is not None:
            depth.update(image_to_array(msg), frames[i].depth)
    for msg in label_msgs if seg is not None else ():
        i = index_of.get(stamp_ns(msg.header.stamp))
        if i is not None:
            seg.update(image_to_array(msg), frames[i].labels)
    result = {}
    if depth.count:
        result["depth_abs_rel"] = depth.compute()["abs_rel"]
    if seg is not None and seg.confusion.sum():
        scores = seg.compute()
        result.update(pixel_accuracy=scores["aAcc"], mIoU=scores["mIoU"])
    return result


def format_report(r: DemoResult, out: Path) -> str:
    c, t = r.counters, r.timings

    def lat(key: str) -> str:
        s = t.get(key) or {}
        return (f"mean {s.get('mean', math.nan):7.1f}  p50 {s.get('p50', math.nan):7.1f}  "
                f"p95 {s.get('p95', math.nan):7.1f}  max {s.get('max', math.nan):7.1f}")

    lines = [
        "",
        f"xnet_ros demo: {Path(r.model).name} ({r.model_note}) on {r.backend}",
        f"  frames   published {r.frames_published}, received {c.get('received')}, processed "
        f"{c.get('processed')}, dropped {c.get('dropped', 0) + c.get('skipped', 0)} (slot busy), "
        f"failed {c.get('failed')}",
        f"  rate     {t.get('fps', math.nan):.1f} FPS processed over {t.get('wall_s', 0):.1f} s "
        f"(camera {t.get('camera_rate_hz', 0):g} Hz); the node alone: "
        f"{t.get('node_capacity_fps', math.nan):.1f} FPS (1 / mean processing time)",
        "  latency  ms",
        f"    preprocess   {lat('pre_ms')}",
        f"    inference    {lat('infer_ms')}",
        f"    postprocess  {lat('post_ms')}",
        f"    end-to-end   {lat('end_to_end_ms')}  (image stamp -> outputs received)",
    ]
    if r.accuracy:
        lines.append("  vs ground truth  " + ", ".join(f"{k} {v:.3f}"
                                                       for k, v in r.accuracy.items()))
    lines.append(f"  bag      {r.bag} (MCAP): " + ", ".join(
        f"{k} {v}" for k, v in sorted(r.bag_counts.items())))
    lines.append(f"  previews {', '.join(str(out / p) for p in r.previews)}")
    lines.append(f"  total    {t.get('total_s', 0):.1f} s (model configure "
                 f"{t.get('model_load_s', 0):.1f} s)")
    return "\n".join(lines)
