"""Latest-frame slot and inference worker (no ROS): replacement semantics and counters."""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import pytest

from xnet_ros.worker import InferenceWorker, LatencySummary, LatestFrameSlot


class SlowPredictor:
    """A fake model: blocks until released (or sleeps), records what it processed."""

    def __init__(self, delay: float = 0.0, gated: bool = False):
        self.delay = delay
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.started = threading.Event()
        self.seen: list = []

    def __call__(self, item):
        self.started.set()
        assert self.gate.wait(10.0)
        time.sleep(self.delay)
        if item == "bad":
            raise ValueError("bad frame")
        if item == "skip":
            return None
        self.seen.append(item)
        return SimpleNamespace(timings={"pre_ms": 1.0, "infer_ms": 10.0, "post_ms": 2.0,
                                        "total_ms": 14.0})


def test_slot_put_replaces_and_take_empties():
    slot = LatestFrameSlot()
    assert slot.take(timeout=0.01) == (False, None)
    assert slot.put(1) is False
    assert slot.put(2) is True  # replaced 1
    assert slot.pending
    assert slot.take(timeout=0.01) == (True, 2)
    assert not slot.pending
    assert slot.take(timeout=0.01) == (False, None)
    slot.put(None)  # None is a valid item
    assert slot.take(timeout=0.01) == (True, None)


def test_slot_take_waits_for_put_and_close_wakes():
    slot = LatestFrameSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=5.0)))
    t.start()
    time.sleep(0.05)
    slot.put("x")
    t.join(5.0)
    assert got == [(True, "x")]
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=5.0)))
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(5.0)
    assert got[-1] == (False, None)
    with pytest.raises(RuntimeError):
        slot.put("y")


def test_busy_worker_keeps_only_the_newest_frame():
    fake = SlowPredictor(gated=True)
    w = InferenceWorker(fake)
    w.start()
    try:
        w.submit(0)
        assert fake.started.wait(5.0)  # 0 is being processed, the gate holds it
        replaced = [w.submit(i) for i in range(1, 6)]
        assert replaced == [False, True, True, True, True]
        s = w.snapshot()
        assert (s.received, s.processed, s.dropped, s.pending, s.busy) == (6, 0, 4, 1, True)
        assert s.in_flight == 2 and s.balanced
        fake.gate.set()
        assert w.wait_idle(5.0)
        s = w.snapshot()
        assert fake.seen == [0, 5]  # the first and the newest; 1..4 were replaced
        assert (s.received, s.processed, s.dropped, s.failed, s.in_flight) == (6, 2, 4, 0, 0)
        assert s.balanced
    finally:
        assert w.stop(5.0)


def test_counters_balance_under_a_concurrent_flood():
    fake = SlowPredictor(delay=0.002)
    w = InferenceWorker(fake)
    w.start()
    n_threads, per_thread = 4, 250
    snapshots = []

    def flood(k):
        for i in range(per_thread):
            w.submit((k, i))
            if i % 50 == 0:
                snapshots.append(w.snapshot())

    threads = [threading.Thread(target=flood, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.wait_idle(10.0)
    s = w.snapshot()
    assert w.stop(5.0)
    total = n_threads * per_thread
    assert s.received == total
    assert s.processed + s.dropped == total and s.failed == 0
    assert s.processed == len(fake.seen) >= 1 and s.dropped > 0
    for snap in snapshots:
        assert snap.balanced and 0 <= snap.in_flight <= 2 and snap.pending <= 1


def test_failures_skips_and_error_callback():
    errors = []

    def on_done(item, result, exc, snapshot):
        if exc is not None:
            errors.append((item, str(exc)))
        raise RuntimeError("a failing logger must not kill the worker")

    w = InferenceWorker(SlowPredictor(), on_done=on_done)
    w.start()
    try:
        for item in ("bad", "skip", "ok"):
            w.submit(item)
            assert w.wait_idle(5.0)
        w.skip()  # no subscribers: counted without processing
        w.fail("rejected early")
        s = w.snapshot()
        assert (s.received, s.processed, s.skipped, s.failed, s.dropped) == (5, 1, 2, 2, 0)
        assert s.dropped_total == 2 and s.balanced
        assert errors == [("bad", "bad frame")]
        assert s.last_error == "rejected early"
        assert w.running
    finally:
        w.stop(5.0)


def test_stop_drops_the_pending_frame_and_later_submits():
    fake = SlowPredictor(gated=True)
    w = InferenceWorker(fake)
    w.start()
    w.submit("a")
    assert fake.started.wait(5.0)
    w.submit("b")  # pending
    threading.Timer(0.1, fake.gate.set).start()
    assert w.stop(5.0)  # waits for "a", discards "b"
    w.submit("c")
    s = w.snapshot()
    assert fake.seen == ["a"]
    assert (s.received, s.processed, s.dropped, s.in_flight) == (3, 1, 2, 0)
    assert s.balanced and not w.running


def test_latency_and_rate():
    clock = [100.0]
    w = InferenceWorker(SlowPredictor(), clock=lambda: clock[0], rate_window_s=3.0)
    w.start()
    try:
        for _ in range(11):  # one frame every 0.1 s of fake time
            w.submit("f")
            assert w.wait_idle(5.0)
            clock[0] += 0.1
        s = w.snapshot()
        assert s.processed == 11
        assert s.rate_hz == pytest.approx(10 / 1.1, rel=1e-6)  # 10 intervals over 1.1 s to now
        lat = s.latency["infer_ms"]
        assert (lat.count, lat.mean, lat.p50, lat.p95, lat.max, lat.last) == (
            11, 10.0, 10.0, 10.0, 10.0, 10.0)
        assert s.latency["total_ms"].mean == 14.0
        clock[0] += 10.0  # frames stop: the rate decays to 0
        assert w.snapshot().rate_hz == 0.0
        assert w.snapshot().last_processed_age_s == pytest.approx(10.1)
    finally:
        w.stop(5.0)


def test_latency_summary():
    empty = LatencySummary.of([])
    assert empty.count == 0 and math.isnan(empty.mean)
    s = LatencySummary.of([float(v) for v in range(1, 101)])
    assert (s.p50, s.p95, s.max, s.mean, s.last) == (50.0, 95.0, 100.0, 50.5, 100.0)


def test_on_done_sees_counters_that_already_count_the_frame():
    """N bad frames: the callback for the k-th sees failed == k (what the node logs as
    "k failed so far"); a processed frame sees itself in processed; skips are not delivered."""
    calls = []

    def on_done(item, result, exc, snapshot):
        calls.append((item, result is not None, type(exc).__name__ if exc else None,
                      snapshot.processed, snapshot.failed, snapshot.skipped, snapshot.balanced))

    w = InferenceWorker(SlowPredictor(), on_done=on_done)
    w.start()
    try:
        for item in ("bad", "bad", "skip", "ok", "bad"):
            w.submit(item)
            assert w.wait_idle(5.0)
        s = w.snapshot()
    finally:
        w.stop(5.0)
    assert calls == [("bad", False, "ValueError", 0, 1, 0, True),
                     ("bad", False, "ValueError", 0, 2, 0, True),
                     ("ok", True, None, 1, 2, 1, True),
                     ("bad", False, "ValueError", 1, 3, 1, True)]
    assert (s.received, s.processed, s.failed, s.skipped) == (5, 1, 3, 1)


def test_delivery_time_counts_in_post_and_total_latency_and_wait_idle_waits_for_it():
    delivered = threading.Event()

    def on_done(item, result, exc, snapshot):
        time.sleep(0.05)
        delivered.set()
        return 5.0  # ms spent publishing

    w = InferenceWorker(SlowPredictor(), on_done=on_done)
    w.start()
    try:
        w.submit("f")
        assert w.wait_idle(5.0) and delivered.is_set()
        lat = w.snapshot().latency
    finally:
        w.stop(5.0)
    # SlowPredictor's timings: pre 1, infer 10, post 2, total 14 (ms)
    assert (lat["pre_ms"].last, lat["infer_ms"].last) == (1.0, 10.0)
    assert (lat["post_ms"].last, lat["total_ms"].last) == (7.0, 19.0)


# ----------------------------------------------------------------------- several cameras
class BatchRecorder:
    """A fake batched pipeline: items are (camera, i); "bad" cameras fail, each call waits for
    a permit (gated) or sleeps `delay`, and records the cameras of every batch."""

    def __init__(self, delay: float = 0.0, gated: bool = False, bad=("broken",)):
        self.delay, self.gated, self.bad = delay, gated, set(bad)
        self.permits = threading.Semaphore(0)
        self.started = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, items):
        self.started.set()
        if self.gated:
            assert self.permits.acquire(timeout=10.0)
        time.sleep(self.delay)
        self.batches.append([camera for camera, _ in items])
        timings = {"pre_ms": 1.0, "infer_ms": 10.0, "post_ms": 2.0, "total_ms": 14.0}
        return [ValueError(f"bad frame of {camera}") if camera in self.bad
                else SimpleNamespace(timings=dict(timings)) for camera, _ in items]


def test_one_batch_takes_the_pending_frame_of_every_camera():
    fake = BatchRecorder(gated=True)
    delivered = []
    w = InferenceWorker(fake, batched=True, max_batch=3, cameras=("a", "b", "c"),
                        on_done=lambda item, result, exc, s: delivered.append((item, s)))
    w.start()
    try:
        w.submit(("a", 0), "a")
        assert fake.started.wait(5.0)  # a alone is being processed
        for i in (1, 2):  # b twice: the second replaces the first
            w.submit(("b", i), "b")
        w.submit(("c", 1), "c")
        w.submit(("a", 1), "a")
        s = w.snapshot()
        assert (s.received, s.pending, s.processing, s.in_flight, s.dropped) == (5, 3, 1, 4, 1)
        assert s.cameras["a"].in_flight == 2 and s.cameras["b"].dropped == 1 and s.balanced
        fake.permits.release(2)
        assert w.wait_idle(5.0)
    finally:
        assert w.stop(5.0)
    assert fake.batches == [["a"], ["b", "c", "a"]]  # longest-waiting camera first
    assert [item for item, _ in delivered] == [("a", 0), ("b", 2), ("c", 1), ("a", 1)]
    # each delivery sees its own camera's counters, which already count it
    assert [(s.received, s.processed) for _, s in delivered] == [(2, 1), (2, 1), (1, 1), (2, 2)]
    s = w.snapshot()
    assert (s.received, s.processed, s.dropped, s.in_flight) == (5, 4, 1, 0)
    assert {c: (x.received, x.processed, x.dropped) for c, x in s.cameras.items()} == {
        "a": (2, 2, 0), "b": (2, 1, 1), "c": (1, 1, 0)}


def test_with_a_small_max_batch_the_longest_waiting_camera_goes_first():
    fake = BatchRecorder(gated=True)
    w = InferenceWorker(fake, batched=True, max_batch=1, cameras=("fast", "slow"))
    w.start()
    try:
        w.submit(("fast", 0), "fast")
        assert fake.started.wait(5.0)
        w.submit(("slow", 0), "slow")  # waits from now on
        for i in range(1, 4):  # fast keeps replacing its frame: it keeps its later start
            w.submit(("fast", i), "fast")
        fake.permits.release(1)  # -> fast 0 done
        assert wait_for(lambda: len(fake.batches) == 1)
        fake.permits.release(2)
        assert w.wait_idle(5.0)
    finally:
        w.stop(5.0)
    assert fake.batches == [["fast"], ["slow"], ["fast"]]


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def feed(w: InferenceWorker, camera: str, hz: float, seconds: float, snapshots: list) -> None:
    for i in range(int(hz * seconds)):
        w.submit((camera, i), camera)
        if i % 5 == 0:
            snapshots.append(w.snapshot())
        time.sleep(1.0 / hz)


@pytest.mark.parametrize("max_batch", [1, 2])
def test_a_5_hz_camera_is_not_starved_by_a_30_hz_camera(max_batch):
    """30 Hz + 5 Hz into a worker that takes 60 ms per batch (can serve at most ~17 batches/s).
    With one frame per batch the fast camera loses frames, the slow one (nearly) none: its
    frame waits at most a batch or two, never until the next one replaces it."""
    fake = BatchRecorder(delay=0.06)
    w = InferenceWorker(fake, batched=True, max_batch=max_batch, cameras=("fast", "slow"))
    w.start()
    snapshots: list = []
    feeders = [threading.Thread(target=feed, args=(w, cam, hz, 2.0, snapshots))
               for cam, hz in (("fast", 30.0), ("slow", 5.0))]
    try:
        for t in feeders:
            t.start()
        for t in feeders:
            t.join()
        assert w.wait_idle(5.0)
        s = w.snapshot()
    finally:
        w.stop(5.0)
    fast, slow = s.cameras["fast"], s.cameras["slow"]
    assert (fast.received, slow.received) == (60, 10)
    assert slow.processed >= 9 and slow.dropped <= 1, slow  # one stall of the machine allowed
    assert fast.processed >= 15 and fast.dropped > 0, fast
    for snap in snapshots + [s]:  # per camera and in total, at every moment
        assert snap.balanced and all(c.balanced for c in snap.cameras.values()), snap
    if max_batch == 2:  # both cameras share forward passes
        assert any(sorted(b) == ["fast", "slow"] for b in fake.batches)
    assert all(len(b) <= max_batch and len(set(b)) == len(b) for b in fake.batches)


def test_a_broken_camera_never_stops_the_others():
    errors = []
    fake = BatchRecorder(delay=0.005)
    w = InferenceWorker(fake, batched=True, max_batch=3, cameras=("front", "broken", "left"),
                        on_done=lambda item, r, exc, s: exc and errors.append((item, s.failed)))
    w.start()
    try:
        for i in range(20):
            for camera in ("front", "broken", "left"):
                w.submit((camera, i), camera)
            assert w.wait_idle(5.0)
        s = w.snapshot()
    finally:
        w.stop(5.0)
    assert s.cameras["broken"].failed == 20 and s.cameras["broken"].processed == 0
    assert "bad frame of broken" in s.cameras["broken"].last_error
    for camera in ("front", "left"):
        c = s.cameras[camera]
        assert (c.received, c.processed, c.failed, c.last_error) == (20, 20, 0, "")
    assert [n for _, n in errors] == list(range(1, 21))  # "N failed so far", per camera
    assert s.failed == 20 and s.processed == 40 and s.balanced


def test_a_failing_forward_pass_fails_its_batch_and_the_worker_goes_on():
    calls = []

    def process(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("CUDA error: out of memory")
        return [SimpleNamespace(timings={"infer_ms": 3.0}) for _ in items]

    w = InferenceWorker(process, batched=True, max_batch=2, cameras=("a", "b"))
    w.start()
    try:
        w.submit("x", "a")
        w.submit("y", "b")
        assert wait_for(lambda: w.snapshot().failed + w.snapshot().processed == 2)
        w.submit("z", "a")
        assert w.wait_idle(5.0)
        s = w.snapshot()
    finally:
        w.stop(5.0)
    assert s.failed == calls[0] and s.processed == 3 - calls[0] and s.balanced
    assert "out of memory" in s.last_error and w.snapshot("a").latency["infer_ms"].last == 3.0


# ------------------------------------------------------- two stages: forward pass | finish
class TwoStages:
    """A fake pipeline split like the node's: `infer(items)` (the forward pass) and
    `finish(outcome)` (outputs), each logging when it starts and ends; `finish` of a frame
    whose item is "late" waits until the forward pass of "next" has started."""

    def __init__(self):
        self.log: list[tuple[str, object]] = []
        self.next_infer_started = threading.Event()

    def infer(self, items):
        if "next" in items:
            self.next_infer_started.set()
        self.log.append(("infer", [item for item in items]))
        return [ValueError("undecodable") if item == "bad" else None if item == "skip"
                else item for item in items]

    def finish(self, item):
        if item == "late":
            assert self.next_infer_started.wait(10.0)
        if item == "broken-outputs":
            raise RuntimeError("outputs failed")
        self.log.append(("finish", item))
        return SimpleNamespace(item=item, timings={"infer_ms": 10.0, "post_ms": 2.0})


def test_the_next_forward_pass_runs_while_a_batch_is_finished():
    stages, delivered = TwoStages(), []
    w = InferenceWorker(stages.infer, finish=stages.finish, overlap=True, batched=True,
                        max_batch=1,
                        on_done=lambda item, result, exc, snap: delivered.append(item))
    w.start()
    try:
        w.submit("late")
        assert wait_for(lambda: ("infer", ["late"]) in stages.log)
        w.submit("next")  # its forward pass must not wait for "late" to be finished
        assert w.wait_idle(10.0)
        s = w.snapshot()
    finally:
        assert w.stop(5.0)
    assert stages.log.index(("infer", ["next"])) < stages.log.index(("finish", "late"))
    assert delivered == ["late", "next"]  # each camera's results in order
    assert s.processed == 2 and s.balanced and s.in_flight == 0


@pytest.mark.parametrize("overlap", [False, True], ids=["finish-inline", "finish-overlapped"])
def test_two_stage_failures_and_skips_are_counted_and_the_worker_goes_on(overlap):
    stages, errors = TwoStages(), []

    def on_done(item, result, exc, snap):
        errors.append(None if exc is None else str(exc))

    w = InferenceWorker(stages.infer, finish=stages.finish, overlap=overlap, batched=True,
                        max_batch=4, on_done=on_done, cameras=("a", "b", "c", "d"))
    w.start()
    assert (w._finisher is not None) == overlap  # inline: finished on the inference thread
    try:
        for camera, item in zip("abcd", ("bad", "skip", "broken-outputs", "fine")):
            w.submit(item, camera)
        assert w.wait_idle(10.0)
        w.submit("again", "c")
        assert w.wait_idle(10.0)
        s = w.snapshot()
    finally:
        assert w.stop(5.0)
    assert (s.processed, s.failed, s.skipped) == (2, 2, 1) and s.balanced
    assert sorted(e for e in errors if e) == ["outputs failed", "undecodable"]
    assert w.snapshot("c").processed == 1 and "outputs failed" in w.snapshot("c").last_error


def test_two_stage_flood_stays_bounded_and_stop_delivers_what_was_taken():
    stages, delivered = TwoStages(), []
    w = InferenceWorker(stages.infer, finish=stages.finish, overlap=True, batched=True,
                        max_batch=2, cameras=("a", "b"),
                        on_done=lambda item, result, exc, snap: delivered.append(item))
    w.start()
    snapshots = []
    for i in range(400):
        w.submit(("a", i), "a")
        w.submit(("b", i), "b")
        if i % 20 == 0:
            snapshots.append(w.snapshot())
    assert w.stop(10.0)
    s = w.snapshot()
    assert s.received == 800 and s.balanced and s.in_flight == 0
    assert s.processed == len(delivered) and s.dropped == 800 - s.processed
    for camera in "ab":
        mine = [i for c, i in delivered if c == camera]
        assert mine == sorted(mine)
    for snap in snapshots:  # per camera: 1 waiting + 1 in the forward pass + 1 finishing
        assert snap.balanced and snap.pending <= 2 and snap.in_flight <= 6
        assert all(c.in_flight <= 3 for c in snap.cameras.values())


# ------------------------------------------------------------ lanes: independent forwards
def test_lanes_run_forward_passes_at_once_without_a_barrier():
    """Two lanes: one lane's forward pass runs while the other's is still running, and a lane
    that is done takes the next frames at once instead of waiting for the other."""
    both_running, slow_release = threading.Barrier(2, timeout=10.0), threading.Event()
    calls: list[list] = []

    def infer(items):
        calls.append(list(items))
        if len(calls) <= 2:
            both_running.wait()  # fails unless the first two passes overlap
        if "slow" in [i for _, i in items]:
            assert slow_release.wait(10.0)
        return list(items)

    delivered = []
    w = InferenceWorker(infer, finish=lambda item: SimpleNamespace(item=item, timings={}),
                        overlap=True, batched=True, max_batch=4, lanes=2,
                        cameras=("a", "b", "c", "d"),
                        on_done=lambda item, result, exc, snap: delivered.append(item))
    w.start()
    try:
        for camera, item in zip("abcd", ("slow", "x", "x", "x")):
            w.submit((camera, item), camera)
        assert wait_for(lambda: len(calls) >= 2)
        assert all(len(batch) <= 2 for batch in calls)  # ceil(max_batch / lanes) per lane
        for camera in "bcd":  # the fast lane goes on while the slow one is still busy
            w.submit((camera, "y"), camera)
        assert wait_for(lambda: any(("b", "y") in batch or ("c", "y") in batch
                                    or ("d", "y") in batch for batch in calls[2:]))
        slow_release.set()
        assert w.wait_idle(10.0)
        s = w.snapshot()
    finally:
        slow_release.set()
        assert w.stop(5.0)
    assert s.processed == 7 and s.balanced and s.in_flight == 0
    assert ("a", "slow") in delivered


def test_lanes_keep_each_cameras_results_in_order_and_bounded_under_a_flood():
    stages, delivered = TwoStages(), []
    w = InferenceWorker(stages.infer, finish=stages.finish, overlap=True, batched=True,
                        max_batch=4, lanes=2, cameras=("a", "b", "c", "d"),
                        on_done=lambda item, result, exc, snap: delivered.append(item))
    w.start()
    snapshots = []
    for i in range(300):
        for camera in "abcd":
            w.submit((camera, i), camera)
        if i % 15 == 0:
            snapshots.append(w.snapshot())
    assert wait_for(lambda: w.snapshot().pending == 0, 10.0)
    assert w.stop(10.0)
    s = w.snapshot()
    assert s.received == 1200 and s.balanced and s.in_flight == 0
    assert s.processed == len(delivered) and s.dropped == 1200 - s.processed
    for camera in "abcd":
        mine = [i for c, i in delivered if c == camera]
        assert mine == sorted(mine) and mine  # delivered in order, none starved
    for snap in snapshots:  # per camera: 1 waiting, 1 in a lane, up to 1 per lane handed
        # over (the handoff queue holds a batch per lane), 1 finishing
        assert snap.balanced and all(c.in_flight <= 3 + 2 for c in snap.cameras.values())


def test_lanes_need_the_delivery_thread():
    w = InferenceWorker(lambda items: list(items), batched=True, max_batch=4, lanes=2)
    w.start()
    try:
        assert len(w._lane_threads) == 1  # finishing inline: one lane keeps results in order
    finally:
        assert w.stop(5.0)
