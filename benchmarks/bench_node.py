"""Node overhead at camera resolutions: the real `xnet_node` in a child process (loopback DDS),
the packaged demo model, every output subscribed, rgb8 frames + camera_info.

    python -m benchmarks.bench_node [--sizes 640x480,1280x720,1920x1080] [--frames 40]
        [--param points_stride:=1 ...] [--node-source DIR] [--append docs/benchmarks.md]

Frames are sent one at a time: the next one leaves when the node's `~/stats` for the previous
one and every output message have arrived, so the node never drops a frame and this process is
idle while the node works. Per size: `--warmup` untimed frames, then the medians over `--frames`
frames of the `~/stats` timings (pre = decode + resize/normalise; post = everything after the
network, including building and publishing the messages), and the node's RSS (VmRSS after the
size, VmHWM = its peak so far). `--node-source DIR` runs the node from another source tree
(e.g. `git archive HEAD | tar -x -C DIR`) for before/after comparisons in the same conditions.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xnet_ros.loopback import apply_loopback_dds

SIZES = ((640, 480), (1280, 720), (1920, 1080))
FRAMES, WARMUP = 40, 5
OUTPUT_TOPICS = ("depth", "depth/camera_info", "semantic/labels", "semantic/color", "points")
STATS = "/xnet_node/stats"
START_TIMEOUT_S, FRAME_TIMEOUT_S, RETRIES = 180.0, 20.0, 3


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of a process in MB (empty if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def start_node(params: dict[str, str], source: str | None, log: Path,
               node_env: dict[str, str] | None = None) -> subprocess.Popen:
    env, cwd = {**os.environ, **(node_env or {})}, None
    if source:  # `-m` puts the working directory first on sys.path
        cwd = str(Path(source).resolve())
        env["PYTHONPATH"] = os.pathsep.join([cwd, env.get("PYTHONPATH", "")])
    args = [sys.executable, "-m", "xnet_ros.main", "--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Bench:
    """The camera and the subscribers, in this process."""

    def __init__(self, rclpy: Any, context: Any):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from xnet_ros.msg import InferenceStats

        self.node = rclpy.create_node("xnet_bench_camera", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.image_pub = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info",
                                                   qos_profile_sensor_data)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.received = dict.fromkeys(OUTPUT_TOPICS, 0)
        types = {"depth/camera_info": CameraInfo, "points": PointCloud2}
        self.subs = [self.node.create_subscription(types.get(t, Image), t, self._counter(t),
                                                   reliable, raw=True) for t in OUTPUT_TOPICS]
        self.stats: dict[tuple[int, int], Any] = {}
        self.subs.append(self.node.create_subscription(
            InferenceStats, STATS, self._on_stats, QoSProfile(depth=10)))

    def _counter(self, topic: str) -> Any:
        def count(_: bytes) -> None:
            self.received[topic] += 1
        return count

    def _on_stats(self, msg: Any) -> None:
        self.stats[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def spin_until(self, done: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
            if done():
                return True
        return False

    def connected(self) -> bool:
        return (self.image_pub.get_subscription_count() > 0
                and self.info_pub.get_subscription_count() > 0
                and all(s.get_publisher_count() > 0 for s in self.subs))

    def send(self, image: Any, info: Any) -> Any:
        """Publish camera_info + image; the node's stats for that frame (None on timeout)."""
        for _ in range(RETRIES):
            stamp = self.node.get_clock().now().to_msg()
            info.header.stamp = image.header.stamp = stamp
            expected = {t: n + 1 for t, n in self.received.items()}
            self.info_pub.publish(info)
            self.spin_until(lambda: False, 0.02)
            self.image_pub.publish(image)
            key = (stamp.sec, stamp.nanosec)
            if self.spin_until(lambda k=key: k in self.stats, FRAME_TIMEOUT_S):
                self.spin_until(lambda e=expected: all(self.received[t] >= n
                                                       for t, n in e.items()), 2.0)
                return self.stats.pop(key)
        return None


def frame_messages(width: int, height: int, count: int = 4) -> list[tuple[Any, Any]]:
    """(Image rgb8, CameraInfo) pairs of synthetic rooms at this size."""
    from sensor_msgs.msg import CameraInfo, Image

    from xnet_model.runtime.images import synthetic_rgb

    f = 0.8 * width
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob",
                      k=[f, 0.0, (width - 1) / 2, 0.0, f, (height - 1) / 2, 0.0, 0.0, 1.0])
    info.header.frame_id = "camera_optical"
    out = []
    for seed in range(count):
        rgb = synthetic_rgb(seed, height, width)
        image = Image(height=height, width=width, encoding="rgb8", step=3 * width,
                      data=array.array("B", rgb.tobytes()))
        image.header.frame_id = "camera_optical"
        out.append((image, info))
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(sizes=SIZES, frames: int = FRAMES, warmup: int = WARMUP,
        params: dict[str, str] | None = None, source: str | None = None,
        node_env: dict[str, str] | None = None, log=print) -> list[dict]:
    """One row per input size: medians of the node's ~/stats and its memory."""
    apply_loopback_dds()  # before rclpy starts; the node inherits it
    import rclpy
    from rclpy.context import Context

    params = {"points_stride": "2", "log_period": "0.0", **(params or {})}
    node_log = Path(tempfile.mkdtemp(prefix="xnet_bench_node_")) / "node.log"
    proc = start_node(params, source, node_log, node_env)
    context = Context()
    rclpy.init(context=context)
    rows: list[dict] = []
    try:
        bench = Bench(rclpy, context)
        if not bench.spin_until(lambda: bench.connected() or proc.poll() is not None,
                                START_TIMEOUT_S) or proc.poll() is not None:
            raise RuntimeError(f"the node did not come up; its log: {node_log}")
        for width, height in sizes:
            messages = frame_messages(width, height)
            samples: list[Any] = []
            for i in range(warmup + frames):
                stats = bench.send(*messages[i % len(messages)])
                if stats is None:
                    raise RuntimeError(f"no ~/stats for a {width}x{height} frame within "
                                       f"{RETRIES} x {FRAME_TIMEOUT_S} s; node log: {node_log}")
                if i >= warmup:
                    samples.append(stats)
            mem = proc_status(proc.pid)
            row = {
                "name": f"node {width}x{height}",
                "pre_ms": median([s.preprocess_ms for s in samples]),
                "infer_ms": median([s.infer_ms for s in samples]),
                "post_ms": median([s.postprocess_ms for s in samples]),
                "pre_post_ms": median([s.preprocess_ms + s.postprocess_ms for s in samples]),
                "total_ms": median([s.total_ms for s in samples]),
                "rss_mb": mem.get("VmRSS", float("nan")),
                "peak_rss_mb": mem.get("VmHWM", float("nan")),
                "frames": len(samples),
            }
            rows.append(row)
            log(f"{row['name']}: pre {row['pre_ms']:.2f} infer {row['infer_ms']:.1f} post "
                f"{row['post_ms']:.2f} pre+post {row['pre_post_ms']:.2f} ms, RSS "
                f"{row['rss_mb']:.0f} MB (load {os.getloadavg()[0]:.2f})")
    finally:
        stop_node(proc)
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=context)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| input | pre ms | infer ms | post ms | pre + post ms | end-to-end ms | "
             "node RSS MB (peak) | frames |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name'].split()[-1]} | {r['pre_ms']:.2f} | {r['infer_ms']:.1f} | "
                     f"{r['post_ms']:.2f} | **{r['pre_post_ms']:.2f}** | {r['total_ms']:.1f} | "
                     f"{r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) | {r['frames']} |")
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES),
                        help="comma-separated WIDTHxHEIGHT input sizes")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter (repeatable), e.g. points_stride:=1")
    parser.add_argument("--node-source", help="run the node from this source tree")
    parser.add_argument("--node-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the node only (repeatable), e.g. "
                             "RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS")
    parser.add_argument("--label", default="", help="added to the report section's title")
    parser.add_argument("--append", help="append the table to this Markdown report")
    args = parser.parse_args(argv)
    params = dict(p.split(":=", 1) for p in args.param)
    node_env = dict(e.split("=", 1) for e in args.node_env)
    load = os.getloadavg()[0]
    rows = run([parse_size(s) for s in args.sizes.split(",")], args.frames, args.warmup,
               params, args.node_source, node_env)
    table = markdown(rows)
    print(table)
    if args.append:
        from xnet_model.runtime.bench import append_report, report_section

        settings = ", ".join([f"{k}={v}" for k, v in {"points_stride": "2", **params}.items()]
                             + [f"node environment {k}={v}" for k, v in node_env.items()])
        title = "xnet_node overhead per frame" + (f" ({args.label})" if args.label else "")
        notes = (f"Packaged demo model, torch on CPU, every output subscribed, rgb8 + "
                 f"camera_info, {settings}; medians of {args.frames} frames of ~/stats. Load "
                 f"average at the start: {load:.2f}.")
        command = "python -m benchmarks.bench_node " + shlex.join(argv or sys.argv[1:])
        section = report_section(title, table, command, notes)
        print(f"appended to {append_report(args.append, section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
