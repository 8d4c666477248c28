"""The node's output building at camera sizes: native kernels on one thread against two halves.

`build_outputs` as the node calls it: every output (32FC1 depth, its camera_info, labels,
colours, an organized xyz+rgb+label cloud at `points_stride` 2) from a network-resolution
prediction (160x120 depth and 150-class labels, the model's palette built once as the node's
options do) into reused message buffers with room for the in-place serialization. Each frame
is preceded by a pass over 32 MB that evicts the caches, as the forward pass does in the node.
The two settings of `native.set_split` alternate frame by frame (one thread per call; outputs
from `native.SPLIT_MIN_BYTES` in two halves, the default on more than one core), so both see
the same machine. No middleware: the node's publishing and Python glue come on top
(`bench_node`).

Run from the repository root: ``python -m benchmarks.bench_outputs [--frames N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from xnet_ros import native
from xnet_ros.colorize import default_palette
from xnet_ros.geometry import Intrinsics
from xnet_ros.outputs import BufferPool, OutputOptions, build_outputs, tune_malloc

SIZES = ((640, 480), (1280, 720), (1920, 1080))
FRAMES = 60
WARMUP = 5
NETWORK = (120, 160)


def prediction(width: int, height: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.4, 12.0, NETWORK).astype(np.float32)
    labels = rng.integers(0, 150, NETWORK).astype(np.uint8)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    intr = Intrinsics(0.8 * width, 0.8 * width, (width - 1) / 2, (height - 1) / 2, width, height)
    return rgb, depth, labels, intr


def run(sizes=SIZES, frames: int = FRAMES, log=print) -> list[dict]:
    if not native.available():
        log(f"bench_outputs skipped: {native.status()}")
        return []
    tune_malloc()
    evict = np.ones(4 << 20)  # 32 MB
    opts = OutputOptions(num_classes=150, palette=default_palette(150), points_stride=2)
    rows = []
    for width, height in sizes:
        rgb, depth, labels, intr = prediction(width, height)
        pool = BufferPool(headroom=True)
        samples: dict[int, list[float]] = {1: [], 2: []}
        for i in range(WARMUP + frames):
            for threads in (1, 2) if i % 2 else (2, 1):
                with native.splitting(threads):
                    evict.sum()
                    start = time.perf_counter()
                    out = build_outputs(rgb, depth, labels, intr, opts, buffers=pool)
                    elapsed = (time.perf_counter() - start) * 1e3
                out.release()
                if i >= WARMUP:
                    samples[threads].append(elapsed)
        one, halves = statistics.median(samples[1]), statistics.median(samples[2])
        rows.append({"name": f"build_outputs {width}x{height}", "one_thread_ms": one,
                     "halves_ms": halves, "halves_vs_one": halves / one})
        log(f"build_outputs {width}x{height}: one thread {one:.2f} ms, halves {halves:.2f} ms "
            f"({halves / one:.2f}x)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    args = parser.parse_args(argv)
    print(f"post-processing: {native.status()}")
    run(frames=args.frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
