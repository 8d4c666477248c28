"""Latest-frame slot, inference worker thread and its counters, without rclpy.

The subscription callback only calls `InferenceWorker.submit(msg)` (cheap, never blocks on
inference). One worker thread takes the newest pending frame and runs `process(item)` on it (the
node's `FramePipeline.run`). A frame that arrives while another one is still pending *replaces*
it; the replaced frame is counted as dropped. So at most one frame waits and at most one is being
processed: memory and latency stay bounded however slow the model is.

After each processed or failed frame the worker first updates its counters, then calls
`on_done(item, result, error, snapshot)` once, with the snapshot that already counts the frame:
what the node publishes and logs (frames_processed, "N failed so far") agrees with the counters.

Counters (all under one lock, so a snapshot is consistent):

    received = processed + dropped + skipped + failed + in_flight

``in_flight`` is 0 when idle, else 1 (pending or being processed) or 2 (one being processed and
one pending). ``skipped`` counts frames that were not worth processing (nobody subscribed to any
output, or `process` returned None); messages report them inside ``frames_dropped``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TIMING_KEYS = ("pre_ms", "infer_ms", "post_ms", "total_ms")


@dataclass(frozen=True)
class LatencySummary:
    """Statistics of one timing (milliseconds) over the last `window` processed frames."""

    last: float = math.nan
    mean: float = math.nan
    p50: float = math.nan
    p95: float = math.nan
    max: float = math.nan
    count: int = 0

    @classmethod
    def of(cls, values: list[float]) -> LatencySummary:
        if not values:
            return cls()
        ordered = sorted(values)
        n = len(ordered)

        def pct(q: float) -> float:
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

        return cls(last=values[-1], mean=sum(values) / n, p50=pct(0.5), p95=pct(0.95),
                   max=ordered[-1], count=n)


@dataclass(frozen=True)
class WorkerSnapshot:
    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced in the slot while the worker was busy
    skipped: int = 0  # not processed on purpose (no subscribers)
    failed: int = 0
    pending: int = 0  # 0 or 1 frames waiting in the slot
    busy: bool = False  # a frame is being processed
    rate_hz: float = 0.0
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    last_error: str = ""
    last_processed_age_s: float = math.inf  # seconds since the last processed frame
    last_received_age_s: float = math.inf

    @property
    def in_flight(self) -> int:
        return self.pending + int(self.busy)

    @property
    def dropped_total(self) -> int:
        """What messages report as frames_dropped: busy drops + skipped frames."""
        return self.dropped + self.skipped

    @property
    def balanced(self) -> bool:
        return self.received == (self.processed + self.dropped + self.skipped + self.failed
                                 + self.in_flight)


class _Empty:
    pass


_EMPTY = _Empty()


class LatestFrameSlot:
    """A one-element mailbox: `put` replaces, `take` waits. Thread-safe on its own; the worker
    shares its condition variable so the counters change atomically with the slot."""

    def __init__(self, cond: threading.Condition | None = None):
        self._cond = cond or threading.Condition()
        self._item: Any = _EMPTY
        self._closed = False

    @property
    def cond(self) -> threading.Condition:
        return self._cond

    def _put_locked(self, item: Any) -> Any:
        """Store item; return the replaced item or _EMPTY. Caller holds the lock."""
        old, self._item = self._item, item
        self._cond.notify_all()
        return old

    def put(self, item: Any) -> bool:
        """Store `item`; True when it replaced a pending item (that one is dropped)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("slot is closed")
            return self._put_locked(item) is not _EMPTY

    def _take_locked(self) -> Any:
        item, self._item = self._item, _EMPTY
        return item

    def take(self, timeout: float | None = None) -> tuple[bool, Any]:
        """(True, item) once an item is there; (False, None) on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not _EMPTY or self._closed,
                                       timeout):
                return False, None
            if self._item is _EMPTY:
                return False, None
            return True, self._take_locked()

    @property
    def pending(self) -> bool:
        return self._item is not _EMPTY

    def close(self) -> Any:
        """Refuse further puts, wake waiters; returns the discarded pending item or _EMPTY."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            return self._take_locked()

    @property
    def closed(self) -> bool:
        return self._closed


ProcessFn = Callable[[Any], Any]
DoneFn = Callable[[Any, Any, "BaseException | None", WorkerSnapshot], "float | None"]


class InferenceWorker:
    """Run `process(item)` on a worker thread for the newest submitted item.

    `process` returns a result with a `timings` dict (milliseconds; keys of TIMING_KEYS, others
    are ignored) for a processed frame, or None for a frame it decided to skip; an exception
    counts the frame as failed. Then `on_done(item, result, error, snapshot)` delivers the
    result (or the error); it may return milliseconds it spent delivering (publishing), which
    are added to the frame's post_ms and total_ms. If it raises, the worker survives.
    """

    def __init__(self, process: ProcessFn, *, on_done: DoneFn | None = None,
                 name: str = "xnet-inference", rate_window_s: float = 3.0,
                 latency_window: int = 100, clock: Callable[[], float] = time.monotonic):
        self._process = process
        self._on_done = on_done
        self._name = name
        self._clock = clock
        self._rate_window_s = rate_window_s
        self._cond = threading.Condition()
        self._slot = LatestFrameSlot(self._cond)
        self._thread: threading.Thread | None = None
        self._busy = False
        self._delivering = False  # on_done is running for a frame already counted
        self._stopping = False
        self._received = self._processed = self._dropped = self._skipped = self._failed = 0
        self._done_times: deque[float] = deque()
        self._latency: dict[str, deque[float]] = {
            k: deque(maxlen=latency_window) for k in TIMING_KEYS}
        self._last_error = ""
        self._last_processed = -math.inf
        self._last_received = -math.inf

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting frames, let the frame in progress finish, drop the pending one
        (counted as dropped). True if the thread ended within `timeout`."""
        with self._cond:
            self._stopping = True
            if self._slot.close() is not _EMPTY:
                self._dropped += 1
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # ------------------------------------------------------------------- inputs
    def submit(self, item: Any) -> bool:
        """Offer a received frame. Returns True when it replaced a pending frame (dropped).
        After `stop()` the frame is counted as received and dropped."""
        with self._cond:
            self._received += 1
            self._last_received = self._clock()
            if self._stopping:
                self._dropped += 1
                return True
            replaced = self._slot._put_locked(item) is not _EMPTY
            if replaced:
                self._dropped += 1
            return replaced

    def skip(self) -> None:
        """Count a received frame that is not processed on purpose (no subscribers)."""
        with self._cond:
            self._received += 1
            self._skipped += 1
            self._last_received = self._clock()

    def fail(self, error: str) -> None:
        """Count a received frame that was rejected before reaching the worker."""
        with self._cond:
            self._received += 1
            self._failed += 1
            self._last_error = error
            self._last_received = self._clock()

    # ------------------------------------------------------------------ outputs
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending, being processed or delivered; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._busy or self._delivering or self._slot.pending), timeout)

    def snapshot(self) -> WorkerSnapshot:
        with self._cond:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> WorkerSnapshot:
        now = self._clock()
        return WorkerSnapshot(
            received=self._received, processed=self._processed, dropped=self._dropped,
            skipped=self._skipped, failed=self._failed, pending=int(self._slot.pending),
            busy=self._busy, rate_hz=self._rate_locked(now),
            latency={k: LatencySummary.of(list(v)) for k, v in self._latency.items()},
            last_error=self._last_error,
            last_processed_age_s=now - self._last_processed,
            last_received_age_s=now - self._last_received,
        )

    def _rate_locked(self, now: float) -> float:
        """Processed frames per second over the last `rate_window_s` seconds."""
        times = self._done_times
        while times and now - times[0] > self._rate_window_s:
            times.popleft()
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], times[-1] - times[0])
        # frames completed per second; (n - 1) intervals between n completions, extended to
        # `now` so the rate decays to 0 when frames stop coming
        return (len(times) - 1) / span if span > 0 else 0.0

    # -------------------------------------------------------------------- thread
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot.pending or self._stopping)
                if not self._slot.pending:  # stopping and nothing left
                    return
                item = self._slot._take_locked()
                self._busy = True
            result: Any = None
            error: BaseException | None = None
            try:
                result = self._process(item)
            except Exception as exc:  # any failure of one frame is counted, never fatal
                error = exc
            with self._cond:
                self._busy = False
                now = self._clock()
                if error is not None:
                    self._failed += 1
                    self._last_error = f"{type(error).__name__}: {error}"
                elif result is None:
                    self._skipped += 1
                else:
                    self._processed += 1
                    self._last_processed = now
                    self._done_times.append(now)
                    self._rate_locked(now)  # prunes old completion times
                deliver = self._on_done is not None and (result is not None or error is not None)
                self._delivering = deliver
                snapshot = self._snapshot_locked() if deliver else None
                self._cond.notify_all()
            extra_ms = 0.0
            if deliver:
                try:
                    extra_ms = float(self._on_done(item, result, error, snapshot) or 0.0)
                except Exception:  # publishing/logging must never kill the worker
                    extra_ms = 0.0
            with self._cond:
                if result is not None:
                    self._record_latency_locked(result.timings, extra_ms)
                self._delivering = False
                self._cond.notify_all()

    def _record_latency_locked(self, timings: dict[str, float], extra_ms: float) -> None:
        for key, value in timings.items():
            if key in self._latency and value is not None:
                extra = extra_ms if key in ("post_ms", "total_ms") else 0.0
                self._latency[key].append(float(value) + extra)
