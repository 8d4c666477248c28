"""`make demo`: the real xnet_node on a synthetic camera, recorded to an MCAP bag, with previews.

    python -m xnet_ros.demo --out demo_out [--frames 30] [--rate 10] [--model DIR]

One process, one executor, three nodes: a synthetic camera (`demo_camera`: `image` +
`camera_info` from xnet_model.data.synthetic at a fixed rate), the real lifecycle node
`xnet_node` (inference on its worker thread) and a recorder (`demo_recorder`) that writes every
input and output topic, serialized by rclpy, into `<out>/xnet_demo` (rosbag2, MCAP). Afterwards
it writes preview PNGs (input, depth, labels, point cloud, a mosaic), `summary.json`, and prints
frames, FPS, latencies and the accuracy against the synthetic ground truth (`demo_report`).
DDS stays on loopback (`xnet_ros.loopback`, applied before rclpy starts).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xnet_model.memory import tune_malloc

from .launch_config import DEMO_FRAME_ID
from .loopback import apply_loopback_dds
from .main import prefer_async_publication, spin_once

BAG_NAME = "xnet_demo"
PREVIEWS = ("input.png", "depth.png", "labels.png", "points.png", "preview.png")


def resolve_model(arg: str | None, workdir: Path) -> tuple[Path, str]:
    """(model dir, note). The packaged demo model unless --model; if it is not there (not
    trained yet), a random-weight model so the pipeline still runs."""
    from .params import ModelPathError, resolve_model_path

    if arg:
        return resolve_model_path(arg), "from --model"
    try:
        return resolve_model_path(""), "packaged demo model"
    except ModelPathError as exc:
        from xnet_model import build_model

        path = workdir / "random_model"
        build_model("atto_x_atto_multitask", data={"input_size": [120, 160]}).save(path)
        return path, f"RANDOM WEIGHTS, outputs are noise: {exc}"


def spin_until(executor: Any, done: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        spin_once(executor, timeout_sec=0.05)
        if done():
            return True
    return False


def run_demo(out: Path, frames: int = 30, rate: float = 10.0, width: int = 640,
             height: int = 480, model: str | None = None, seed: int = 0,
             timeout: float = 120.0, log: Callable[[str], Any] = print) -> Any:
    apply_loopback_dds()  # before rclpy starts
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from .demo_camera import CameraPublisher, synthetic_frames
    from .demo_recorder import Recorder
    from .demo_report import DemoResult
    from .node import XnetNode

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    bag_path = out / BAG_NAME
    if bag_path.exists():  # a previous demo's bag (rosbags never overwrites)
        shutil.rmtree(bag_path)
    result = DemoResult(bag=str(bag_path))
    workdir = Path(tempfile.mkdtemp(prefix="xnet_demo_"))
    model_dir, result.model_note = resolve_model(model, workdir)
    result.model = str(model_dir)
    log(f"model: {model_dir} ({result.model_note})")
    t0 = time.perf_counter()
    cam_frames = synthetic_frames(frames, height, width, seed)
    log(f"camera: {len(cam_frames)} synthetic {width}x{height} frames rendered in "
        f"{time.perf_counter() - t0:.1f} s, publishing at {rate:g} Hz in frame "
        f"'{DEMO_FRAME_ID}'")

    tune_malloc()  # as the node's main() does
    prefer_async_publication()
    ctx = Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    nodes: list[Any] = []
    recorder = None
    try:
        t0 = time.perf_counter()
        xnet = XnetNode(context=ctx, parameter_overrides=[
            Parameter("model", value=str(model_dir)), Parameter("log_period", value=0.0)])
        nodes.append(xnet)
        if not xnet.autostart():  # configure (model) + activate, as xnet_ros.main does
            raise RuntimeError(f"xnet_node did not start: {xnet.diagnostic_status().message}")
        result.timings["model_load_s"] = time.perf_counter() - t0
        result.backend = xnet.diagnostic_status().hardware_id
        log(f"xnet_node: active, {xnet.meta.name} on {result.backend} "
            f"(configure {result.timings['model_load_s']:.1f} s)")
        nodes.append(rclpy.create_node("xnet_demo_recorder", context=ctx))
        recorder = Recorder(nodes[-1], bag_path)
        if "/xnet_node/stats" not in recorder.topics:
            log("warning: xnet_ros/msg not importable or its definitions not found: "
                "the node's stats and class table are not recorded")
        nodes.append(rclpy.create_node("synthetic_camera", context=ctx))
        camera = CameraPublisher(nodes[-1], cam_frames, DEMO_FRAME_ID)
        for n in nodes:
            executor.add_node(n)
        _stream(executor, xnet, camera, recorder, rate, timeout)
        result.frames_published = camera.next
        _summarize(result, xnet, camera, recorder, rate, out, log)
    finally:
        for n in nodes:
            executor.remove_node(n)
            n.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown(context=ctx)
        if recorder is not None:
            recorder.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if recorder is not None:
        result.bag_counts = recorder.counts()
    result.timings["total_s"] = time.perf_counter() - t_start
    result.save(out)
    return result


def _stream(executor: Any, xnet: Any, camera: Any, recorder: Any, rate: float,
            timeout: float) -> None:
    """Discovery, then the frames at `rate`, then wait until every output is recorded."""
    from .demo_recorder import OUTPUT_TOPICS, STATS_TOPIC
    from .params import ALL_OUTPUTS

    def discovered() -> bool:  # the node and the recorder see the camera, and every output
        counts = xnet.output_subscription_counts()
        return (camera.image_pub.get_subscription_count() >= 2
                and camera.info_pub.get_subscription_count() >= 2
                and all(counts.get(t, 0) >= 1 for t in ALL_OUTPUTS))

    if not spin_until(executor, discovered, 20.0):
        raise RuntimeError(f"discovery timed out (loopback DDS): "
                           f"{xnet.output_subscription_counts()}")

    def intrinsics() -> str:
        return {kv.key: kv.value for kv in xnet.diagnostic_status().values}["intrinsics"]

    # camera_info of frame 0 first, so that every frame (the first too) has intrinsics
    camera.publish_info()
    spin_until(executor, lambda: intrinsics() == "camera_info", 10.0)
    camera.publish_image()
    timer = camera.node.create_timer(1.0 / rate, camera.publish_next)
    deadline = time.monotonic() + timeout
    spin_until(executor, lambda: camera.done, timeout)
    camera.node.destroy_timer(timer)
    # drain: the node idle and quiet, the recorder holding every output of every processed
    # frame (the node's input is best effort: a frame lost in DDS is never received)
    waited = [*OUTPUT_TOPICS, *([STATS_TOPIC] if STATS_TOPIC in recorder.topics else [])]
    state = {"received": -1, "since": time.monotonic()}

    def drained() -> bool:
        s = xnet.worker_snapshot()
        if s.received != state["received"] or s.in_flight:
            state.update(received=s.received, since=time.monotonic())
            return False
        complete = all(recorder.count(t) >= s.processed for t in waited)
        return complete and time.monotonic() - state["since"] > 0.5

    spin_until(executor, drained, max(deadline - time.monotonic(), 0.0))
    camera.t_end = time.perf_counter()
    for _ in range(20):  # let the last stats/diagnostics through
        spin_once(executor, timeout_sec=0.01)


def _summarize(result: Any, xnet: Any, camera: Any, recorder: Any, rate: float, out: Path,
               log: Callable[[str], Any]) -> None:
    from .demo_previews import write_previews
    from .demo_recorder import IMAGE_TOPIC, STATS_TOPIC
    from .demo_report import accuracy, latencies
    from .outputs import COLOR, DEPTH, LABELS, POINTS
    from .pipeline import stamp_ns

    snap = xnet.worker_snapshot()
    result.counters = {"received": snap.received, "processed": snap.processed,
                       "dropped": snap.dropped, "skipped": snap.skipped, "failed": snap.failed,
                       "in_flight": snap.in_flight}
    depth = recorder.messages("/" + DEPTH)
    stats = [m for _, m in recorder.messages(STATS_TOPIC)] if STATS_TOPIC in recorder.topics \
        else []
    lat = latencies(stats, depth, snap)
    span = max(camera.t_end - camera.t_first, 1e-9)
    busy_ms = sum(lat[k]["mean"] for k in ("pre_ms", "infer_ms", "post_ms"))
    result.timings.update({
        "node_capacity_fps": 1000.0 / busy_ms if busy_ms > 0 else float("nan"),
        "wall_s": span, "fps": snap.processed / span, "camera_rate_hz": rate,
        "node_rate_hz": snap.rate_hz, **lat})
    labels = [m for _, m in recorder.messages("/" + LABELS)]
    result.accuracy = accuracy([m for _, m in depth], labels, camera.frames, camera.index_of,
                               xnet.meta)
    # previews from the last frame that has every output
    by_stamp = {topic: {stamp_ns(m.header.stamp): m for _, m in recorder.messages(topic)}
                for topic in (IMAGE_TOPIC, "/" + DEPTH, "/" + COLOR, "/" + POINTS)}
    common = set.intersection(*(set(v) for v in by_stamp.values()))
    if not common:
        log("warning: no frame with every output was recorded; no previews")
        return
    last = max(common)
    frame = {"image": by_stamp[IMAGE_TOPIC][last], DEPTH: by_stamp["/" + DEPTH][last],
             COLOR: by_stamp["/" + COLOR][last], POINTS: by_stamp["/" + POINTS][last]}
    result.previews = write_previews(out, frame, xnet.meta.max_depth or 10.0)


def main(argv: list[str] | None = None) -> int:
    from .demo_report import format_report

    ap = argparse.ArgumentParser(prog="python -m xnet_ros.demo", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory")
    ap.add_argument("--frames", type=int, default=30, help="frames the camera publishes")
    ap.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--model", default=None,
                    help="model directory (default: the packaged demo model)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.rate <= 0 or args.width < 16 or args.height < 16:
        ap.error("need --frames >= 1, --rate > 0, --width/--height >= 16")
    try:
        result = run_demo(args.out, args.frames, args.rate, args.width, args.height,
                          args.model, args.seed, args.timeout)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_report(result, args.out))
    return 0 if result.counters.get("processed") else 1


if __name__ == "__main__":
    sys.exit(main())
