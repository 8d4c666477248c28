"""Timing of the per-frame CPU work around the network: point clouds and image conversions.

Run from the repository root: ``python -m benchmarks.bench_pointcloud [--tune-malloc]``.

With glibc defaults the multi-MB per-frame buffers are returned to the OS (heap trimming) and
faulted in again every frame; on a small VM that costs more than the packing itself.
``--tune-malloc`` raises the trim/mmap thresholds first, as a long-running node can.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from xnet_ros.conversions import array_to_image_fields, image_to_array, to_rgb
from xnet_ros.geometry import Intrinsics, backproject, pack_pointcloud
from xnet_ros.outputs import tune_malloc

HEIGHT, WIDTH = 480, 640
REPEATS = 50
WARMUP = 5


def time_call(name: str, fn: Callable[[], object], repeats: int = REPEATS) -> dict:
    for _ in range(WARMUP):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return {
        "name": name,
        "median_ms": float(np.median(samples)),
        "p90_ms": float(np.percentile(samples, 90)),
    }


def synthetic_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (metres, ~5 % invalid), RGB and 150-class labels at 640x480."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 15.0, (HEIGHT, WIDTH)).astype(np.float32)
    depth[rng.random((HEIGHT, WIDTH)) < 0.05] = np.nan
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    labels = rng.integers(0, 150, (HEIGHT, WIDTH)).astype(np.int64)
    return depth, rgb, labels


def run(repeats: int = REPEATS) -> list[dict]:
    depth, rgb, labels = synthetic_frame()
    intr = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=WIDTH, height=HEIGHT)
    image_msg = SimpleNamespace(**array_to_image_fields(rgb[..., ::-1], "bgr8"))
    depth_msg = SimpleNamespace(**array_to_image_fields(depth, "32FC1"))
    size = f"{WIDTH}x{HEIGHT}"

    def organized_cloud() -> None:
        points = backproject(depth, intr)
        pack_pointcloud(points, rgb, labels, organized=True, max_range=10.0)

    def dense_cloud() -> None:
        points = backproject(depth, intr)
        pack_pointcloud(points, rgb, labels, organized=False, max_range=10.0)

    cases: list[tuple[str, Callable[[], object]]] = [
        (f"backproject {size}", lambda: backproject(depth, intr)),
        (f"backproject+pack organized rgb+labels {size}", organized_cloud),
        (f"backproject+pack dense rgb+labels {size}", dense_cloud),
        (f"image_to_array bgr8 {size}", lambda: image_to_array(image_msg)),
        (f"image_to_array+to_rgb bgr8 {size}", lambda: to_rgb(image_to_array(image_msg), "bgr8")),
        (f"image_to_array 32FC1 {size}", lambda: image_to_array(depth_msg)),
        (f"array_to_image_fields rgb8 {size}", lambda: array_to_image_fields(rgb, "rgb8")),
        (f"array_to_image_fields 32FC1 {size}", lambda: array_to_image_fields(depth, "32FC1")),
    ]
    return [time_call(name, fn, repeats) for name, fn in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune-malloc", action="store_true",
                        help="raise glibc trim/mmap thresholds before timing")
    args = parser.parse_args()
    if args.tune_malloc:
        print(f"glibc malloc tuned: {tune_malloc()}")
    rows = run()
    width = max(len(row["name"]) for row in rows)
    print(f"{'case':<{width}}  median_ms  p90_ms")
    for row in rows:
        print(f"{row['name']:<{width}}  {row['median_ms']:9.3f}  {row['p90_ms']:6.3f}")


if __name__ == "__main__":
    main()
