"""Large kernel calls in two halves, the second on the library's helper thread: the same bytes
from any number of calling threads, after a fork, and with the helper turned off."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from xnet_ros import native
from xnet_ros.geometry import Intrinsics, depth_to_cloud
from xnet_ros.outputs import COLOR, LABELS, POINTS, OutputOptions, build_outputs

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not native.available(), reason=native.status())


def frame(rng: np.random.Generator, size: tuple[int, int] = (96, 128)):
    labels = rng.integers(0, 40, (24, 32)).astype(np.uint8)
    depth = rng.uniform(0.6, 9.0, (24, 32)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    intr = Intrinsics(0.8 * size[1], 0.8 * size[1], size[1] / 2, size[0] / 2, size[1], size[0])
    return rgb, depth, labels, intr


def output_bytes(out) -> dict[str, bytes]:
    return {name: bytes(f.data if name == POINTS else f["data"])
            for name, f in out.fields.items() if name in (LABELS, COLOR, POINTS)}


def test_set_split_returns_the_previous_setting():
    with native.splitting(1, 0):
        assert native.set_split(2, 0) == 1
        assert native.set_split(1) == 2


def test_small_calls_stay_on_the_callers_thread():
    rgb, depth, labels, intr = frame(np.random.default_rng(3))
    opts = OutputOptions(num_classes=40, points_stride=1)
    for threads, min_bytes, split_calls in ((2, 0, 2), (2, native.SPLIT_MIN_BYTES, 0),
                                             (1, 0, 0)):
        with native.splitting(threads, min_bytes):
            calls = native.split_calls()
            build_outputs(rgb, depth, labels, intr, opts)
            assert native.split_calls() - calls == split_calls, (threads, min_bytes)


def test_halves_from_many_threads_at_once_are_the_one_thread_bytes():
    """Callers that find the helper taken run both halves themselves; nothing is mixed up."""
    rng = np.random.default_rng(5)
    frames = [frame(rng) for _ in range(4)]
    opts = OutputOptions(num_classes=40, points_stride=1)
    with native.splitting(1, 0):
        expected = [output_bytes(build_outputs(*f, opts)) for f in frames]
    mismatches, errors = [], []

    def run(k: int) -> None:
        try:
            for i in range(30):
                got = output_bytes(build_outputs(*frames[(k + i) % 4], opts))
                if got != expected[(k + i) % 4]:
                    mismatches.append((k, i))
        except Exception as exc:  # reported below
            errors.append(exc)

    with native.splitting(2, 0):
        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors and not mismatches


def test_the_helper_is_no_python_thread():
    """The node's shutdown lists the Python threads it did not join; the helper is the
    library's (like OpenMP's and OpenCV's)."""
    before = set(threading.enumerate())
    with native.splitting(2, 0):
        rgb, depth, labels, intr = frame(np.random.default_rng(1))
        build_outputs(rgb, depth, labels, intr, OutputOptions(num_classes=40))
    assert set(threading.enumerate()) == before


def _cloud_in_child(queue) -> None:
    rgb, depth, labels, intr = frame(np.random.default_rng(2))
    native.set_split(2, 0)
    full = np.full((96, 128), np.float32(2.5))
    queue.put(bytes(depth_to_cloud(full, intr, rgb, None).data))


def test_a_forked_child_gets_a_helper_of_its_own():
    """After fork the child has no helper thread (only the forking thread survives); it must
    start one, not wait forever for the parent's."""
    with native.splitting(2, 0):  # the parent's helper is running
        rgb, _, _, intr = frame(np.random.default_rng(2))
        full = np.full((96, 128), np.float32(2.5))
        expected = bytes(depth_to_cloud(full, intr, rgb, None).data)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_cloud_in_child, args=(queue,))
        child.start()
        try:
            got = queue.get(timeout=60)
        finally:
            child.join(60)
            if child.is_alive():
                child.kill()
    assert child.exitcode == 0 and got == expected


def test_one_thread_per_call_when_asked():
    code = ("from xnet_ros import native\nprint(native.status())\n"
            "print(native.set_split(1))\n")
    env = {**os.environ, "XNET_NATIVE_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0].endswith("one thread per call (XNET_NATIVE_THREADS=1))") and out[1] == "1"


@pytest.mark.parametrize("organized", [True, False])
def test_full_hd_outputs_by_default_are_the_numpy_bytes(organized):
    """At 1920x1080 the default threshold splits both kernels (labels + colours, points); a
    dense cloud (points beyond `points_max_range`, 6 m, dropped) included."""
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 150, (120, 160)).astype(np.uint8)
    depth = rng.uniform(0.6, 9.0, (120, 160)).astype(np.float32)
    rgb = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    intr = Intrinsics(1500.0, 1500.0, 959.5, 539.5, 1920, 1080)
    opts = OutputOptions(num_classes=150, points_stride=2, points_organized=organized,
                         points_max_range=6.0)
    with native.splitting(2):  # the default on more than one core
        calls = native.split_calls()
        got = output_bytes(build_outputs(rgb, depth, labels, intr, opts))
        assert native.split_calls() - calls == 2
    with native.disabled():
        expected = output_bytes(build_outputs(rgb, depth, labels, intr, opts))
    assert got == expected
