"""What /diagnostics says, decided without ROS (xnet_ros.diagnostics)."""

from __future__ import annotations

import pytest

from xnet_ros.diagnostics import (
    ERROR,
    OK,
    WARN,
    NodeView,
    frame_error_message,
    status_summary,
    status_values,
    summary_line,
)
from xnet_ros.worker import LatencySummary, WorkerSnapshot

RUNNING = WorkerSnapshot(received=10, processed=8, dropped=1, skipped=0, failed=1, rate_hz=9.5,
                         last_received_age_s=0.1, last_processed_age_s=0.2)


@pytest.mark.parametrize("view, expected", [
    (NodeView("unconfigured", "model: 'x' does not exist"),
     (ERROR, "model: 'x' does not exist")),
    (NodeView("unconfigured"), (WARN, "not configured (state unconfigured)")),
    (NodeView("finalized"), (WARN, "not configured (state finalized)")),
    (NodeView("inactive"), (WARN, "inactive (state inactive)")),
    (NodeView("active"), (WARN, "no input images yet")),
    (NodeView("active", snapshot=WorkerSnapshot(received=3, last_received_age_s=12.4)),
     (WARN, "no input images for 12 s")),
    # a 3 s diagnostics period: images are stale after 9 s, not 5
    (NodeView("active", period_s=3.0, snapshot=WorkerSnapshot(
        received=3, processed=3, last_received_age_s=7.0, last_processed_age_s=7.0)),
     (OK, "0.0 Hz")),
    (NodeView("active", snapshot=WorkerSnapshot(received=2, skipped=2, last_received_age_s=1.0)),
     (WARN, "no frame processed recently")),
    (NodeView("active", snapshot=WorkerSnapshot(
        received=5, failed=5, last_error="ImageConversionError: bad", last_received_age_s=0.1)),
     (ERROR, "input failing: ImageConversionError: bad")),
    (NodeView("active", snapshot=RUNNING, listened=False), (OK, "idle: no subscribers "
                                                                "(frames are skipped)")),
    (NodeView("active", snapshot=RUNNING, listened=False, lazy=False), (OK, "9.5 Hz")),
    (NodeView("active", snapshot=WorkerSnapshot(
        received=5, processed=5, last_received_age_s=0.1, last_processed_age_s=6.0)),
     (WARN, "no frame processed recently")),
    (NodeView("active", snapshot=RUNNING), (OK, "9.5 Hz")),
])
def test_status_summary(view, expected):
    assert status_summary(view) == expected


def test_status_values_report_the_counters_exactly():
    lat = {"pre_ms": LatencySummary.of([1.0, 3.0]), "infer_ms": LatencySummary.of([10.0]),
           "post_ms": LatencySummary(), "total_ms": LatencySummary.of([20.0, 30.0])}
    s = WorkerSnapshot(received=12, processed=7, dropped=2, skipped=1, failed=1, pending=1,
                       rate_hz=4.56789, latency=lat, last_error="E: x")
    values = status_values("active", s, {"name": "m", "path": "/p", "backend": "torch (cpu)"},
                           camera_info_rejected=3, intrinsics="parameters",
                           sizes=(640, 480, 320, 240), published={"depth": 7, "points": 6},
                           publish_failed=2)
    assert values == {
        "state": "active", "model": "m", "model_path": "/p", "backend": "torch (cpu)",
        "rate_hz": "4.57", "frames_received": 12, "frames_processed": 7,
        "frames_dropped_busy": 2, "frames_skipped_no_subscribers": 1, "frames_failed": 1,
        "frames_in_flight": 1, "camera_info_rejected": 3, "intrinsics": "parameters",
        "input_size": "640x480", "output_size": "320x240", "last_error": "E: x",
        "published_depth": 7, "published_depth_camera_info": 0, "published_semantic_labels": 0,
        "published_semantic_color": 0, "published_points": 6, "publish_failed": 2,
        "latency_pre_mean_ms": "2.00", "latency_pre_p95_ms": "3.00",
        "latency_infer_mean_ms": "10.00", "latency_infer_p95_ms": "10.00",
        "latency_total_mean_ms": "25.00", "latency_total_p95_ms": "30.00",
    }
    assert status_values("unconfigured", WorkerSnapshot(), {}, camera_info_rejected=0,
                         intrinsics="none", sizes=(0, 0, 0, 0), published={})["model"] == ""


def test_log_lines():
    lat = {k: LatencySummary.of([v]) for k, v in
           (("pre_ms", 1.0), ("infer_ms", 2.0), ("post_ms", 3.0), ("total_ms", 7.25))}
    s = WorkerSnapshot(received=9, processed=5, dropped=2, skipped=1, failed=1, rate_hz=2.5,
                       latency=lat)
    assert summary_line(s) == ("2.5 Hz; latency ms pre 1.0 infer 2.0 post 3.0 end-to-end 7.2; "
                               "frames received 9 processed 5 dropped 2 skipped 1 failed 1")
    assert frame_error_message(True, 4, ValueError("bad jpeg")) == (
        "compressed image skipped (4 failed so far): ValueError: bad jpeg")
