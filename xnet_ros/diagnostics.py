"""What xnet_node reports on /diagnostics and in its periodic log line, without rclpy.

`status_summary` decides the level and message from the lifecycle state and the worker's
counters; `status_values` lists the key/value pairs; the node only wraps them into a
diagnostic_msgs/DiagnosticStatus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cameras import camera_label
from .params import ALL_OUTPUTS
from .worker import TIMING_KEYS, WorkerSnapshot

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class NodeView:
    """The node's state as the diagnostics need it."""

    state: str  # lifecycle state label: unconfigured, inactive, active, finalized
    config_error: str = ""  # why the last configure failed ('' = it did not)
    snapshot: WorkerSnapshot = WorkerSnapshot()
    listened: bool = True  # someone subscribes to an output or the stats
    lazy: bool = True
    period_s: float = 1.0  # of the diagnostics


def status_summary(v: NodeView) -> tuple[int, str]:
    """(level, message) of the node's one diagnostic status."""
    s = v.snapshot
    stale_s = max(5.0, 3 * v.period_s)
    if v.state not in ("inactive", "active"):
        if v.config_error:
            return ERROR, v.config_error
        return WARN, f"not configured (state {v.state})"
    if v.state != "active":
        return WARN, f"inactive (state {v.state})"
    if s.received == 0 or s.last_received_age_s > stale_s:
        return WARN, "no input images" + (
            f" for {s.last_received_age_s:.0f} s" if s.received else " yet")
    if s.failed and s.last_error and s.last_processed_age_s > s.last_received_age_s + 1:
        return ERROR, f"input failing: {s.last_error}"
    if v.lazy and not v.listened:
        return OK, "idle: no subscribers (frames are skipped)"
    if s.last_processed_age_s > stale_s:
        return WARN, "no frame processed recently"
    return OK, f"{s.rate_hz:.1f} Hz" if s.processed else "idle"


def status_values(state: str, s: WorkerSnapshot, model: dict[str, str], *,
                  camera_info_rejected: int, intrinsics: str,
                  sizes: tuple[int, int, int, int], published: dict[str, int],
                  publish_failed: int = 0) -> dict[str, Any]:
    """The key/value pairs of the status; `model` has name, path and backend ('' = none),
    `sizes` is (input w, h, output w, h) of the last frame, `publish_failed` the output
    messages the middleware refused."""
    values: dict[str, Any] = {
        "state": state,
        "model": model.get("name", ""), "model_path": model.get("path", ""),
        "backend": model.get("backend", ""),
        "rate_hz": f"{s.rate_hz:.2f}",
        "frames_received": s.received, "frames_processed": s.processed,
        "frames_dropped_busy": s.dropped, "frames_skipped_no_subscribers": s.skipped,
        "frames_failed": s.failed, "frames_in_flight": s.in_flight,
        "camera_info_rejected": camera_info_rejected,
        "intrinsics": intrinsics,
        "input_size": "{}x{}".format(*sizes[:2]),
        "output_size": "{}x{}".format(*sizes[2:]),
        "last_error": s.last_error,
    }
    values.update({f"published_{name.replace('/', '_')}": published.get(name, 0)
                   for name in ALL_OUTPUTS})
    values["publish_failed"] = publish_failed
    for key in TIMING_KEYS:
        summary = s.latency.get(key)
        if summary is not None and summary.count:
            values[f"latency_{key[:-3]}_mean_ms"] = f"{summary.mean:.2f}"
            values[f"latency_{key[:-3]}_p95_ms"] = f"{summary.p95:.2f}"
    return values


def summary_line(s: WorkerSnapshot) -> str:
    """The periodic log line: rate, mean latencies, frame counters."""
    lat = {k: v.mean for k, v in s.latency.items()}
    return (f"{s.rate_hz:.1f} Hz; latency ms pre {lat['pre_ms']:.1f} infer "
            f"{lat['infer_ms']:.1f} post {lat['post_ms']:.1f} end-to-end "
            f"{lat['total_ms']:.1f}; frames received {s.received} processed {s.processed} "
            f"dropped {s.dropped} skipped {s.skipped} failed {s.failed}")


def frame_error_message(compressed: bool, failed: int, error: BaseException,
                        camera: str = "") -> str:
    """The log line for a frame that failed; `failed` (of its camera) counts it already."""
    kind = "compressed image" if compressed else "image"
    where = f"{camera_label(camera)}: " if camera else ""
    return f"{where}{kind} skipped ({failed} failed so far): {type(error).__name__}: {error}"
