"""One N-camera `xnet_node` against N single-camera nodes (issue 14): throughput, latency, RSS.

    python -m benchmarks.bench_multicam [--cameras 1,2,4] [--seconds 20] [--warmup 8]
        [--rate 10] [--size 640x480] [--param device:=cuda ...] [--repeat 1]
        [--multi-param NAME:=VALUE ...] [--separate-param NAME:=VALUE ...]
        [--separate-env NAME=VALUE ...] [--env NAME=VALUE ...] [--outputs depth|all]
        [--append docs/benchmarks.md]

For each N both configurations run back to back (which goes first alternates with N), each with
fresh node processes (`python -m xnet_ros.main`, the packaged demo model, torch on CPU, `lazy`,
`log_period` 0), loopback DDS:

* multi:    one node in /bench with `cameras: [cam0, ..]`;
* separate: N nodes, node i in /bench/cam<i> (no `cameras`).

`--param` goes to every node, `--multi-param` / `--separate-param` to one configuration only,
and `--separate-env` into the environment of the single-camera nodes (e.g. OMP_NUM_THREADS=1:
N single-threaded processes rather than N processes with a thread per core each), so each
configuration can be compared at its best.

Both read the same topics, /bench/cam<i>/image: this process publishes N synthetic rgb8 cameras
at `rate` Hz each (phases spread evenly over the period, header stamp = publication time) and
subscribes to every camera's `depth` (so each processed frame builds and publishes a 32FC1
image; raw subscriptions, nothing deserialised) and to the nodes' ~/stats. `--outputs all`
subscribes to every output of every camera instead (depth, depth/camera_info, labels, colours,
points; the nodes get fallback intrinsics `fx`/`fy` 0.8 x width unless `--param` sets them), so
the cameras' deliveries share the native kernels' helper thread; `--env` goes to every node
(e.g. XNET_NATIVE_THREADS=1 for the A/B). Measured over
`seconds` after `warmup`: processed frames/s of all cameras (~/stats messages of frames
published in the window), the median end-to-end latency per camera (InferenceStats.total_ms:
header stamp -> outputs published), the total RSS of the node processes at the end (VmRSS;
their peak VmHWM too) and their CPU time per processed frame (utime + stime over the window:
the least load-sensitive number on a shared machine). `--repeat R` runs every pair R times
(the order alternating) and judges the targets on the medians: on a shared VM one pair can
differ from the next by 10 %.
"""

from __future__ import annotations

import argparse
import array
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xnet_ros.loopback import apply_loopback_dds

CAMERAS, SECONDS, WARMUP, RATE, SIZE = (1, 2, 4), 20.0, 8.0, 10.0, (640, 480)
START_TIMEOUT_S = 240.0
CONFIGS = ("multi", "separate")
OUTPUTS = {"depth": ("depth",),
           "all": ("depth", "depth/camera_info", "semantic/labels", "semantic/color", "points")}


# ------------------------------------------------------------------------------- processes
def proc_memory(pid: int) -> dict[str, float]:
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


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (seconds; its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_nodes(config: str, n: int, log_dir: Path, params: dict[str, str] | None = None,
                env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    cams = [f"cam{i}" for i in range(n)]
    if config == "multi":
        argv = [["-r", "__ns:=/bench", "-p", f"cameras:=[{','.join(cams)}]"]]
    else:
        argv = [["-r", f"__ns:=/bench/{cam}"] for cam in cams]
    procs = []
    for i, extra in enumerate(argv):
        log = (log_dir / f"{config}{n}_{i}.log").open("w")
        settings = [a for k, v in {"log_period": "0.0", **(params or {})}.items()
                    for a in ("-p", f"{k}:={v}")]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "xnet_ros.main", "--ros-args", *extra, *settings],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})}))
    return procs


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- this process
class Cameras:
    """N cameras publishing, every depth and ~/stats subscribed."""

    def __init__(self, rclpy: Any, context: Any, config: str, n: int, frames: list[Any],
                 outputs: tuple[str, ...] = OUTPUTS["depth"]):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from xnet_ros.msg import InferenceStats

        self.node = rclpy.create_node(f"bench_cameras_{config}{n}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.cams = [f"cam{i}" for i in range(n)]
        self.frames = frames
        self.image_pubs = [self.node.create_publisher(Image, f"/bench/{c}/image", reliable)
                           for c in self.cams]
        self.depth = dict.fromkeys(self.cams, 0)  # messages of any subscribed output
        types = {"depth/camera_info": CameraInfo, "points": PointCloud2}
        self.subs = [self.node.create_subscription(types.get(t, Image), f"/bench/{c}/{t}",
                                                   self._count(c), reliable, raw=True)
                     for c in self.cams for t in outputs]
        stats_topics = (["/bench/xnet_node/stats"] if config == "multi"
                        else [f"/bench/{c}/xnet_node/stats" for c in self.cams])
        self.stats: list[tuple[str, int, float]] = []  # (camera, stamp ns, total_ms)
        self.parts: list[tuple[float, float, float]] = []  # pre, infer, post ms
        for i, topic in enumerate(stats_topics):
            self.subs.append(self.node.create_subscription(
                InferenceStats, topic, self._on_stats(None if config == "multi" else
                                                      self.cams[i]), QoSProfile(depth=50)))

    def _count(self, camera: str) -> Any:
        def count(_: bytes) -> None:
            self.depth[camera] += 1
        return count

    def _on_stats(self, camera: str | None) -> Any:
        def record(msg: Any) -> None:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            self.stats.append((camera or msg.camera, stamp, float(msg.total_ms)))
            self.parts.append((msg.preprocess_ms, msg.infer_ms, msg.postprocess_ms))
        return record

    def connected(self) -> bool:
        return (all(p.get_subscription_count() > 0 for p in self.image_pubs)
                and all(s.get_publisher_count() > 0 for s in self.subs))

    def spin_until(self, done: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
            if done():
                return True
        return False

    def stream(self, seconds: float, rate: float) -> tuple[int, int]:
        """Publish every camera at `rate` Hz for `seconds` (phases spread over the period);
        the (first, last) header stamps in ns."""
        period, n = 1.0 / rate, len(self.cams)
        start = time.monotonic()
        due = [start + i * period / n for i in range(n)]
        sent, first, last = 0, None, 0
        while time.monotonic() < start + seconds:
            now = time.monotonic()
            for i in range(n):
                if now >= due[i]:
                    msg = self.frames[sent % len(self.frames)]
                    msg.header.stamp = self.node.get_clock().now().to_msg()
                    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                    first, last = first or stamp, stamp
                    self.image_pubs[i].publish(msg)
                    sent += 1
                    due[i] += period
            self.executor.spin_once(timeout_sec=max(0.0, min(min(due) - time.monotonic(),
                                                              0.005)))
        return first or 0, last

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def frame_messages(width: int, height: int, count: int = 4) -> list[Any]:
    from sensor_msgs.msg import Image

    from xnet_model.runtime.images import synthetic_rgb

    out = []
    for seed in range(count):
        rgb = synthetic_rgb(seed, height, width)
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width,
                    data=array.array("B", rgb.tobytes()))
        msg.header.frame_id = "camera_optical"
        out.append(msg)
    return out


def measure(rclpy: Any, config: str, n: int, seconds: float, warmup: float, rate: float,
            size: tuple[int, int], log_dir: Path, params: dict[str, str] | None = None,
            log=print, env: dict[str, str] | None = None,
            outputs: tuple[str, ...] = OUTPUTS["depth"]) -> dict[str, Any]:
    """One configuration: start, connect, warm up, measure, stop."""
    from rclpy.context import Context

    load_before = os.getloadavg()[0]
    procs = start_nodes(config, n, log_dir, params, env)
    context = Context()
    rclpy.init(args=[], context=context)  # not our command line: it has NAME:=VALUE too
    try:
        cams = Cameras(rclpy, context, config, n, frame_messages(*size), outputs)
        if not cams.spin_until(lambda: cams.connected() or any(p.poll() is not None
                                                               for p in procs),
                               START_TIMEOUT_S) or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{config} x{n}: the node(s) did not come up; logs in {log_dir}")
        cams.stream(warmup, rate)
        cpu0 = sum(proc_cpu_s(p.pid) for p in procs)
        first, last = cams.stream(seconds, rate)
        cpu = sum(proc_cpu_s(p.pid) for p in procs) - cpu0
        memory = [proc_memory(p.pid) for p in procs]
        cams.spin_until(lambda: False, 2.0)  # the last frames' stats
        window = [s for s in cams.stats if first <= s[1] <= last]
        per_camera = {c: [t for cam, _, t in window if cam == c] for c in cams.cams}
        parts = [statistics.median(v) if v else float("nan") for v in zip(*cams.parts)]
        cams.close()
    finally:
        stop_nodes(procs)
        rclpy.try_shutdown(context=context)
    row = {
        "name": f"{config} x{n}", "config": config, "cameras": n,
        "offered_fps": n * rate,
        "fps": len(window) / seconds,
        "latency_ms": {c: statistics.median(v) if v else float("nan")
                       for c, v in per_camera.items()},
        "rss_mb": sum(m.get("VmRSS", float("nan")) for m in memory),
        "peak_rss_mb": sum(m.get("VmHWM", float("nan")) for m in memory),
        "cpu_ms_per_frame": 1e3 * cpu / len(window) if window else float("nan"),
        "pre_infer_post_ms": "/".join(f"{v:.1f}" for v in parts),
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    log(f"{row['name']}: {row['fps']:.1f} of {row['offered_fps']:.0f} frames/s, latency ms "
        + ", ".join(f"{c} {v:.0f}" for c, v in row["latency_ms"].items())
        + f"; pre/infer/post ms {row['pre_infer_post_ms']}"
        + f"; RSS {row['rss_mb']:.0f} MB; CPU {row['cpu_ms_per_frame']:.0f} ms/frame; load "
        f"{row['load_before']:.1f} -> {row['load_after']:.1f}")
    return row


def run(cameras=CAMERAS, seconds: float = SECONDS, warmup: float = WARMUP, rate: float = RATE,
        size: tuple[int, int] = SIZE, params: dict[str, str] | None = None,
        log=print, repeat: int = 1, config_params: dict[str, dict[str, str]] | None = None,
        config_env: dict[str, dict[str, str]] | None = None, outputs: str = "depth",
        configs: tuple[str, ...] = CONFIGS) -> list[dict]:
    """Rows for `configs` of every N, `repeat` rounds (the order alternates).
    `config_params` / `config_env`: per configuration ('multi', 'separate'), parameters on
    top of `params` and environment variables of its nodes. `outputs`: a key of OUTPUTS."""
    config_params, config_env = config_params or {}, config_env or {}
    topics = OUTPUTS[outputs]
    if "points" in topics:
        focal = str(0.8 * size[0])
        params = {"fx": focal, "fy": focal, **(params or {})}
    apply_loopback_dds()  # before rclpy starts; the nodes inherit it
    import rclpy

    log_dir = Path(tempfile.mkdtemp(prefix="xnet_bench_multicam_"))
    rows = []
    for r in range(repeat):
        for k, n in enumerate(cameras):
            order = configs if (k + r) % 2 == 0 else configs[::-1]
            for config in order:
                row = measure(rclpy, config, n, seconds, warmup, rate, size, log_dir,
                              {**(params or {}), **config_params.get(config, {})}, log,
                              config_env.get(config), topics)
                rows.append({**row, "round": r + 1})
    return [{**r, "latency_ms": _latencies(r)} for r in rows]


def medians(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (configuration, cameras): the median frames/s, RSS and CPU over the rounds, and
    every round's frames/s."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["cameras"]), []).append(r)
    return {key: {"fps": statistics.median(r["fps"] for r in rs),
                  "rss_mb": statistics.median(r["rss_mb"] for r in rs),
                  "cpu_ms_per_frame": statistics.median(r["cpu_ms_per_frame"] for r in rs),
                  "fps_rounds": [round(r["fps"], 1) for r in rs]}
            for key, rs in groups.items()}


def _latencies(row: dict) -> str:
    return " / ".join(f"{v:.0f}" for v in row["latency_ms"].values())


def markdown(rows: list[dict]) -> str:
    rounds = max(r.get("round", 1) for r in rows) > 1
    lines = ["| cameras | configuration | " + ("round | " if rounds else "")
             + "processed frames/s (offered) | median latency ms per "
             "camera | total RSS MB (peak) | node CPU ms per frame | load before → after |",
             "|---:|---|" + ("---:|" if rounds else "") + "---:|---|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["cameras"], r["config"], r.get("round", 1))):
        what = ("one node, `cameras` x" + str(r["cameras"]) if r["config"] == "multi"
                else f"{r['cameras']} single-camera node{'s' if r['cameras'] > 1 else ''}")
        what += f" | {r.get('round', 1)}" if rounds else ""
        lines.append(f"| {r['cameras']} | {what} | {r['fps']:.1f} ({r['offered_fps']:.0f}) | "
                     f"{r['latency_ms']} | {r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) | "
                     f"{r['cpu_ms_per_frame']:.0f} | {r['load_before']:.1f} → "
                     f"{r['load_after']:.1f} |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
    """The issue's targets, from the rows (4 cameras against one single-camera node; medians
    over the rounds)."""
    by = medians(rows)
    one, multi, separate = by.get(("separate", 1)), by.get(("multi", 4)), by.get(("separate", 4))
    if not (multi and separate):
        return ""
    rounds = (f" (medians of {len(multi['fps_rounds'])} rounds: {multi['fps_rounds']} vs "
              f"{separate['fps_rounds']})" if len(multi["fps_rounds"]) > 1 else "")
    memory = (f"RSS {multi['rss_mb']:.0f} MB = {multi['rss_mb'] / one['rss_mb']:.2f}x one "
              f"single-camera node (target <= 1.3x; four nodes: "
              f"{separate['rss_mb'] / one['rss_mb']:.2f}x); " if one else
              f"RSS {multi['rss_mb']:.0f} MB against {separate['rss_mb']:.0f} MB for four "
              "nodes; ")
    return (f"4 cameras: {memory}throughput {multi['fps']:.1f} vs {separate['fps']:.1f} "
            f"frames/s for four nodes{rounds} (target >=: "
            f"{'met' if multi['fps'] >= separate['fps'] else 'missed'}).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default=",".join(map(str, CAMERAS)),
                        help="comma-separated camera counts")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured window")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="untimed streaming first")
    parser.add_argument("--rate", type=float, default=RATE, help="frames/s per camera")
    parser.add_argument("--size", default="x".join(map(str, SIZE)), help="WIDTHxHEIGHT")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a parameter of every node (repeatable), e.g. device:=cuda")
    for config in CONFIGS:
        parser.add_argument(f"--{config}-param", action="append", default=[],
                            metavar="NAME:=VALUE",
                            help=f"a parameter of the {config} configuration's nodes only")
    parser.add_argument("--separate-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of the single-camera nodes only")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable of every node")
    parser.add_argument("--outputs", choices=sorted(OUTPUTS), default="depth",
                        help="the outputs subscribed on every camera")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated configurations to run (multi, separate)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every pair; the verdict uses the medians")
    parser.add_argument("--append", help="append the table to this Markdown report")
    args = parser.parse_args(argv)
    width, _, height = args.size.lower().partition("x")
    params = dict(p.split(":=", 1) for p in args.param)
    config_params = {c: dict(p.split(":=", 1) for p in getattr(args, f"{c}_param"))
                     for c in CONFIGS}
    every = dict(e.split("=", 1) for e in args.env)
    config_env = {"multi": every,
                  "separate": {**every, **dict(e.split("=", 1) for e in args.separate_env)}}
    configs = tuple(c for c in args.configs.split(",") if c)
    unknown = set(configs) - set(CONFIGS)
    if unknown or not configs:
        parser.error(f"--configs: {','.join(sorted(unknown)) or 'none'}; choose from "
                     + ", ".join(CONFIGS))
    rows = run([int(n) for n in args.cameras.split(",")], args.seconds, args.warmup,
               args.rate, (int(width), int(height)), params, repeat=max(1, args.repeat),
               config_params=config_params, config_env=config_env, outputs=args.outputs,
               configs=configs)
    table, summary = markdown(rows), verdict(rows)
    print(table + ("\n\n" + summary if summary else ""))
    if args.append:
        from xnet_model.runtime.bench import append_report, report_section

        notes = (f"{args.size} rgb8 at {args.rate:g} Hz per camera for {args.seconds:g} s "
                 f"after {args.warmup:g} s of warm-up; "
                 f"{'every output' if args.outputs == 'all' else 'depth'} of every camera "
                 "and ~/stats subscribed. " + summary)
        command = "python -m benchmarks.bench_multicam " + " ".join(argv or sys.argv[1:])
        section = report_section("One multi-camera node vs one node per camera", table,
                                 command, notes)
        print(f"appended to {append_report(args.append, section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
