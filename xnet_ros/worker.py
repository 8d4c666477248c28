"""Latest-frame slots, the inference worker thread and its counters, without rclpy.

Subscription callbacks only call `InferenceWorker.submit(msg, camera)` (cheap, never blocks). Each
camera has a one-frame slot: a frame arriving while the camera's previous one is still pending
*replaces* it (counted as dropped). One worker thread takes the pending frames of up to
`max_batch` cameras, longest-waiting camera first (a slow camera is not starved by a fast one),
and runs them through `process` together (`batched=True`: `process(items)` -> one outcome per
item; the node's `FramePipeline.infer_batch`, one forward pass) or one at a time (`process(item)`).

`finish(outcome)`, if given, turns each outcome into the frame's result (the node's outputs)
before it is counted and delivered: on the same thread, or with `overlap=True` on a delivery
thread while the inference thread already runs the next batch, so the forward pass and the
post-processing/publishing overlap (a two-stage pipeline; one batch per lane at most waits
between the two). Overlapped, `lanes` > 1 runs that many inference threads, each taking the
pending frames of up to ceil(max_batch / lanes) cameras that have no frame in a lane, with no
barrier between the lanes (independent single-threaded CPU forward passes keep both cores busy
where sub-batches of one batch wait for each other). Per camera at most one frame waits, one is
in a forward pass, one per lane at most is handed over to the delivery thread and, overlapped,
one is being finished: memory and latency stay bounded, and each camera's results are
delivered in order (one delivery thread, batches in the order they were handed over).

After a batch the worker first updates its counters, then calls `on_done(item, result, error,
snapshot)` once per processed or failed frame, with the snapshot of that frame's camera, which
already counts it: what the node publishes and logs ("N failed so far") agrees with the counters.
Counters, per camera and in total, under one lock (a snapshot is consistent):

    received = processed + dropped + skipped + failed + in_flight

``in_flight`` = pending (0 or 1 per camera) + processing (per camera 0 to 2: in the forward
pass, and being finished; with lanes up to one more per lane, handed over for delivery).
``skipped``: frames not worth processing (no subscribers, or `process` returned None); messages
count them as dropped.
"""

from __future__ import annotations

import dataclasses
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
    pending: int = 0  # frames waiting in the slots (0 or 1 per camera)
    busy: bool = False  # frames are being processed
    processing: int = 0  # how many (per camera: forward pass, handed over, finishing)
    rate_hz: float = 0.0
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    last_error: str = ""
    last_processed_age_s: float = math.inf  # seconds since the last processed frame
    last_received_age_s: float = math.inf
    cameras: dict[str, WorkerSnapshot] = field(default_factory=dict)  # per camera (all only)

    @property
    def in_flight(self) -> int:
        return self.pending + max(self.processing, int(self.busy))

    @property
    def dropped_total(self) -> int:
        """What messages report as frames_dropped: busy drops + skipped frames."""
        return self.dropped + self.skipped

    @property
    def balanced(self) -> bool:
        return self.received == (self.processed + self.dropped + self.skipped + self.failed
                                 + self.in_flight)


_EMPTY = object()  # an empty slot (None is a valid item)


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


class _Counts:
    """The counters of one camera, or of all cameras together."""

    def __init__(self, latency_window: int):
        self.received = self.processed = self.dropped = self.skipped = self.failed = 0
        self.processing = 0
        self.done_times: deque[float] = deque()
        self.latency = {k: deque(maxlen=latency_window) for k in TIMING_KEYS}
        self.last_error = ""
        self.last_processed = self.last_received = -math.inf


class InferenceWorker:
    """Run `process` on a worker thread for the newest submitted frame of each camera.

    `process(item)` (or, with `batched=True`, `process(items)` -> one outcome per item) returns
    a result with a `timings` dict (milliseconds; keys of TIMING_KEYS, others are ignored) for a
    processed frame, or None for a frame it decided to skip; an exception (raised, or returned
    as a batch outcome) counts the frame as failed; an exception raised by a batched `process`
    fails the whole batch. Then `on_done(item, result, error, snapshot)` delivers the result (or
    the error); it may return milliseconds it spent delivering (publishing), which are added to
    the frame's post_ms and total_ms. If it raises, the worker survives. `finish(outcome)`, if
    given, runs for each outcome that is neither None nor an exception and returns the result
    (or an exception: the frame failed); with `overlap` on a second thread, fed by `lanes`
    inference threads (module docstring).
    `cameras` names the cameras known from the start (others are added by their first frame).
    """

    def __init__(self, process: ProcessFn, *, on_done: DoneFn | None = None,
                 finish: Callable[[Any], Any] | None = None, overlap: bool = False,
                 batched: bool = False, max_batch: int = 1, lanes: int = 1,
                 cameras: tuple[str, ...] = ("",),
                 name: str = "xnet-inference", rate_window_s: float = 3.0,
                 latency_window: int = 100, clock: Callable[[], float] = time.monotonic):
        self._process = process
        self._on_done = on_done
        self._finish = finish
        self._overlap = overlap and finish is not None
        self._batched = batched
        self._max_batch = max(1, int(max_batch)) if batched else 1
        self._lanes = max(1, min(int(lanes), self._max_batch)) if self._overlap else 1
        self._lane_batch = -(-self._max_batch // self._lanes)
        self._name = name
        self._clock = clock
        self._rate_window_s = rate_window_s
        self._window = latency_window
        self._cond = threading.Condition()
        self._slots: dict[str, LatestFrameSlot] = {}
        self._waiting_since: dict[str, float] = {}  # when each pending slot began to wait
        self._counts: dict[str, _Counts] = {}
        self._all = _Counts(latency_window)
        self._thread: threading.Thread | None = None
        self._lane_threads: list[threading.Thread] = []
        self._finisher: threading.Thread | None = None
        self._handoffs: deque[tuple[list, list]] = deque()  # batches for the delivery thread
        self._in_lane: set[str] = set()  # cameras with a frame in a lane's forward pass
        self._lanes_done = 0
        self._delivering = False  # on_done is running for frames already counted
        self._stopping = False
        for camera in cameras:
            self._camera_locked(camera)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._lane_threads = [self._thread] + [
            threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
            for i in range(1, self._lanes)]
        if self._overlap:
            self._finisher = threading.Thread(target=self._run_finisher,
                                              name=f"{self._name}-delivery", daemon=True)
            self._finisher.start()
        for t in self._lane_threads:
            t.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting frames, let the batch in progress finish, drop the pending ones
        (counted as dropped). True if the thread ended within `timeout`."""
        with self._cond:
            self._stopping = True
            for camera, slot in self._slots.items():
                if slot.close() is not _EMPTY:
                    self._bump(camera, "dropped")
            self._cond.notify_all()
        if self._thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        threads = [*self._lane_threads, *([self._finisher] if self._finisher else [])]
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    @property
    def running(self) -> bool:
        return (bool(self._lane_threads) and all(t.is_alive() for t in self._lane_threads)
                and not self._stopping
                and (self._finisher is None or self._finisher.is_alive()))

    # ------------------------------------------------------------------- inputs
    def submit(self, item: Any, camera: str = "") -> bool:
        """Offer a received frame of `camera`. Returns True when it replaced a pending frame
        (dropped). After `stop()` the frame is counted as received and dropped."""
        with self._cond:
            self._received_locked(camera)
            if self._stopping:
                self._bump(camera, "dropped")
                return True
            replaced = self._slots[camera]._put_locked(item) is not _EMPTY
            if replaced:
                self._bump(camera, "dropped")
            else:
                self._waiting_since[camera] = self._clock()
            return replaced

    def skip(self, camera: str = "") -> None:
        """Count a received frame that is not processed on purpose (no subscribers)."""
        with self._cond:
            self._received_locked(camera)
            self._bump(camera, "skipped")

    def fail(self, error: str, camera: str = "") -> None:
        """Count a received frame that was rejected before reaching the worker."""
        with self._cond:
            self._received_locked(camera)
            self._bump(camera, "failed")
            self._counts[camera].last_error = self._all.last_error = error

    # ------------------------------------------------------------------ outputs
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending, being processed or delivered; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._all.processing or self._delivering or self._pending()),
                timeout)

    def snapshot(self, camera: str | None = None) -> WorkerSnapshot:
        """All cameras together (with `cameras`, one snapshot each), or one camera."""
        with self._cond:
            return self._snapshot_locked(camera)

    def _snapshot_locked(self, camera: str | None = None) -> WorkerSnapshot:
        now = self._clock()
        if camera is not None:
            return self._snap(self._camera_locked(camera), int(self._slots[camera].pending),
                              now)
        per_camera = {c: self._snap(counts, int(self._slots[c].pending), now)
                      for c, counts in self._counts.items()}
        return dataclasses.replace(self._snap(self._all, len(self._pending()), now),
                                   cameras=per_camera)

    def _snap(self, c: _Counts, pending: int, now: float) -> WorkerSnapshot:
        return WorkerSnapshot(
            received=c.received, processed=c.processed, dropped=c.dropped, skipped=c.skipped,
            failed=c.failed, pending=pending, busy=c.processing > 0, processing=c.processing,
            rate_hz=self._rate_locked(c, now),
            latency={k: LatencySummary.of(list(v)) for k, v in c.latency.items()},
            last_error=c.last_error, last_processed_age_s=now - c.last_processed,
            last_received_age_s=now - c.last_received)

    def _rate_locked(self, c: _Counts, now: float) -> float:
        """Processed frames per second over the last `rate_window_s` seconds."""
        times = c.done_times
        while times and now - times[0] > self._rate_window_s:
            times.popleft()
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], times[-1] - times[0])
        # frames completed per second; (n - 1) intervals between n completions, extended to
        # `now` so the rate decays to 0 when frames stop coming
        return (len(times) - 1) / span if span > 0 else 0.0

    # ------------------------------------------------------------------ counters
    def _camera_locked(self, camera: str) -> _Counts:
        counts = self._counts.get(camera)
        if counts is None:
            counts = self._counts[camera] = _Counts(self._window)
            self._slots[camera] = LatestFrameSlot(self._cond)
            if self._stopping:
                self._slots[camera].close()
        return counts

    def _bump(self, camera: str, key: str, n: int = 1) -> None:
        for c in (self._camera_locked(camera), self._all):
            setattr(c, key, getattr(c, key) + n)

    def _received_locked(self, camera: str) -> None:
        self._bump(camera, "received")
        self._counts[camera].last_received = self._all.last_received = self._clock()

    def _pending(self) -> list[str]:
        return [c for c, slot in self._slots.items() if slot.pending]

    def _count_outcome_locked(self, camera: str, outcome: Any, now: float) -> None:
        self._bump(camera, "processing", -1)
        if isinstance(outcome, BaseException):
            self._bump(camera, "failed")
            self._counts[camera].last_error = self._all.last_error = (
                f"{type(outcome).__name__}: {outcome}")
        elif outcome is None:
            self._bump(camera, "skipped")
        else:
            self._bump(camera, "processed")
            for c in (self._counts[camera], self._all):
                c.last_processed = now
                c.done_times.append(now)
                self._rate_locked(c, now)  # prunes old completion times

    def _record_latency_locked(self, camera: str, timings: dict[str, float],
                               extra_ms: float) -> None:
        for key, value in timings.items():
            if key in self._all.latency and value is not None:
                extra = extra_ms if key in ("post_ms", "total_ms") else 0.0
                for c in (self._counts[camera], self._all):
                    c.latency[key].append(float(value) + extra)

    # -------------------------------------------------------------------- thread
    def _ready(self) -> list[str]:
        """Cameras with a pending frame and none in a lane's forward pass."""
        return [c for c in self._pending() if c not in self._in_lane]

    def _take_batch_locked(self) -> list[tuple[str, Any]]:
        """The pending frames of up to max_batch / lanes ready cameras, longest-waiting
        camera first."""
        cameras = sorted(self._ready(), key=lambda c: self._waiting_since.get(c, 0.0))
        batch = [(c, self._slots[c]._take_locked()) for c in cameras[:self._lane_batch]]
        for camera, _ in batch:
            self._bump(camera, "processing")
            self._in_lane.add(camera)
        return batch

    def _outcomes(self, items: list[Any]) -> list[Any]:
        """One outcome per item: a result, None (skipped) or the exception. Not batched: one
        item (max_batch 1); batched: an exception of `process` fails every frame."""
        try:
            outcomes = list(self._process(items)) if self._batched else [self._process(items[0])]
        except Exception as exc:  # any failure is counted, never fatal
            return [exc] * len(items)
        if len(outcomes) != len(items):
            return [RuntimeError(f"{len(outcomes)} outcomes for {len(items)} frames")] * len(items)
        return outcomes

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._ready() or self._stopping)
                    if not self._ready():  # stopping (stop() empties the slots)
                        return
                    batch = self._take_batch_locked()
                outcomes = self._outcomes([item for _, item in batch])
                with self._cond:
                    if self._finisher is not None:  # a batch per lane waits at most
                        self._cond.wait_for(lambda: len(self._handoffs) < self._lanes
                                            or not self._finisher.is_alive())
                        self._handoffs.append((batch, outcomes))
                    self._in_lane.difference_update(c for c, _ in batch)
                    self._cond.notify_all()
                if self._finisher is None:
                    self._complete(batch, [self._finished(o) for o in outcomes])
        finally:
            with self._cond:
                self._lanes_done += 1
                self._cond.notify_all()

    def _run_finisher(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._handoffs
                                    or self._lanes_done == len(self._lane_threads))
                if not self._handoffs:
                    return
                batch, outcomes = self._handoffs.popleft()
                self._cond.notify_all()
            self._complete(batch, [self._finished(o) for o in outcomes])

    def _finished(self, outcome: Any) -> Any:
        if self._finish is None or outcome is None or isinstance(outcome, BaseException):
            return outcome
        try:
            return self._finish(outcome)
        except Exception as exc:  # counted as failed, never fatal
            return exc

    def _complete(self, batch: list[tuple[str, Any]], outcomes: list[Any]) -> None:
        """Count the batch's frames, then deliver each (`on_done`) and record its latency."""
        with self._cond:
            now = self._clock()
            for (camera, _), outcome in zip(batch, outcomes):
                self._count_outcome_locked(camera, outcome, now)
            deliveries = [(camera, item, outcome, self._snapshot_locked(camera))
                          for (camera, item), outcome in zip(batch, outcomes)
                          if outcome is not None]
            self._delivering = bool(deliveries)
            self._cond.notify_all()
        for camera, item, outcome, snapshot in deliveries:
            error = outcome if isinstance(outcome, BaseException) else None
            result = None if error is not None else outcome
            extra_ms = 0.0
            if self._on_done is not None:
                try:
                    extra_ms = float(self._on_done(item, result, error, snapshot) or 0.0)
                except Exception:  # publishing/logging must never kill the worker
                    extra_ms = 0.0
            if result is not None:
                with self._cond:
                    self._record_latency_locked(camera, result.timings, extra_ms)
        with self._cond:
            self._delivering = False
            self._cond.notify_all()
