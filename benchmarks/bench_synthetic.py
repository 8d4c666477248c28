"""Frames/s of the procedural RGB-D + semantic renderer (xnet_model.data.synthetic), 1 process.

Run from the repository root: ``python -m benchmarks.bench_synthetic [--frames N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from xnet_model.data.synthetic import SyntheticCamera, render_scene

FRAMES = 100
WARMUP = 5


def time_frames(name: str, fn: Callable[[int], object], frames: int = FRAMES) -> dict:
    for i in range(WARMUP):
        fn(i)
    samples = []
    start = time.perf_counter()
    for i in range(frames):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1e3)
    total = time.perf_counter() - start
    return {
        "name": name,
        "fps": frames / total,
        "median_ms": float(np.median(samples)),
        "p90_ms": float(np.percentile(samples, 90)),
    }


def run(frames: int = FRAMES) -> list[dict]:
    camera = SyntheticCamera(240, 320, seed=0)
    return [
        time_frames("render_scene 320x240 (new random scene per frame)",
                    lambda i: render_scene(i, 240, 320), frames),
        time_frames("SyntheticCamera 320x240 (walk)", camera.frame, frames),
        time_frames("render_scene 640x480", lambda i: render_scene(i, 480, 640), frames // 4),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=FRAMES)
    args = parser.parse_args()
    for row in run(args.frames):
        print(f"{row['name']:52s} {row['fps']:7.1f} frames/s  "
              f"median {row['median_ms']:6.2f} ms  p90 {row['p90_ms']:6.2f} ms")


if __name__ == "__main__":
    main()
