"""What xnet_node reports: counters, /diagnostics (one status for the node and, with several
cameras, one per camera) and the periodic log line. A mixin of `XnetNode` (node.py), which
owns the state it reads; the levels, messages and values come from the ROS-free
`diagnostics` module."""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from std_msgs.msg import Header

from .cameras import camera_topic
from .diagnostics import NodeView, status_summary, status_values, summary_line
from .params import ALL_OUTPUTS
from .ros_messages import diagnostic_status
from .worker import WorkerSnapshot


class NodeStatus:
    """Counters and diagnostics of XnetNode (see node.py for the attributes it reads)."""

    _cameras: list[str]
    _info_rejected: Any  # Counter[str]: camera_info rejected per camera
    _last_sizes: dict[str, tuple[int, int, int, int]]
    published: Any  # Counter[str]: messages published per output topic

    @property
    def cameras(self) -> list[str]:
        """The configured cameras ([''] = the single camera, topics without prefix)."""
        return list(self._cameras)

    @property
    def _camera_info_rejected(self) -> int:
        return sum(self._info_rejected.values())

    def worker_snapshot(self, camera: str | None = None) -> WorkerSnapshot:
        """The counters of all cameras together (`.cameras`: each one), or of one camera."""
        worker = self._worker
        s = worker.snapshot() if worker is not None else self._last_snapshot
        return s if camera is None else s.cameras.get(camera, WorkerSnapshot())

    def output_subscription_counts(self) -> dict[str, int]:
        """Subscriptions matched to each output (and ~/stats)."""
        return self._pubs.counts()

    def diagnostic_status(self, camera: str | None = None) -> DiagnosticStatus:
        """`<node>: inference` (all cameras), or `<node>: inference <camera>` (one)."""
        p, state, pipeline = self._params, self.lifecycle_state, self._pipeline
        s, cams = self.worker_snapshot(camera), self._cameras if camera is None else [camera]
        level, message = status_summary(NodeView(
            state, self._config_error, s, listened=any(self._wanted(c) for c in cams),
            lazy=p.lazy, period_s=p.diagnostics_period))
        model = ({"name": pipeline.meta.name, "path": str(self._model_path),
                  "backend": self._backend} if pipeline is not None else {})
        sources = ["camera_info" if pipeline is not None and pipeline.calibration(c)
                   else "parameters" if p.has_intrinsics else "none" for c in cams]
        values = status_values(
            state, s, model, camera_info_rejected=sum(self._info_rejected[c] for c in cams),
            intrinsics=", ".join(sources), sizes=self._last_sizes.get(cams[-1], (0, 0, 0, 0))
            if len(cams) == 1 else (0, 0, 0, 0),
            published={n: sum(self.published[camera_topic(c, n)] for c in cams)
                       for n in ALL_OUTPUTS},
            publish_failed=sum(self.publish_failed[camera_topic(c, n)] for c in cams
                               for n in ALL_OUTPUTS))
        if cams != [""]:
            values["cameras"] = ", ".join(cams)
        name = f"{self.get_fully_qualified_name()}: inference{f' {camera}' if camera else ''}"
        return diagnostic_status(level, name, message, model.get("backend", ""), values)

    def _on_diagnostics_timer(self) -> None:
        many = self._cameras if len(self._cameras) > 1 else []
        self._diag_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()),
            status=[self.diagnostic_status(), *map(self.diagnostic_status, many)]))
        now, period = time.monotonic(), self._params.log_period
        if self._worker is not None and period > 0 and now - self._last_log >= period:
            self._last_log = now
            s = self.worker_snapshot()
            self.get_logger().info(summary_line(s) + "".join(
                f"\n  {c}: {summary_line(s.cameras[c])}" for c in many if c in s.cameras))
