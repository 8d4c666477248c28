"""Throughput of `xnet bag infer` end to end against the model alone on the same frames.

Run from the repository root: ``python -m benchmarks.bench_bag [--frames N] [--rounds R]
[--model DIR]``. The bag cycles the KITTI fixture's frames (1242x375 rgb8 + camera_info) when
../shared/fixtures is there, else random 1242x375 images. The model is the packaged demo model,
else a random-weight atto model at 96x320. Modes alternate round by round and the best round
of each is reported (least disturbed by other load on a shared machine), with the median, and
the process CPU time per frame (all threads), which other load disturbs much less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from xnet_model import Predictor, build_model
from xnet_ros.bag.infer import InferOptions, run_infer
from xnet_ros.bag.io import CAMERA_INFO, IMAGE, BagReader, make_typestore
from xnet_ros.conversions import image_to_array

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("XNET_FIXTURES", REPO.parent / "shared" / "fixtures"))
KITTI = FIXTURES / "rosbag" / "kitti_tiny_ros2_mcap"
KITTI_TOPICS = ("/kitti/camera_color_left/image_raw", "/kitti/camera_color_left/camera_info")
IMAGE_TOPIC, INFO_TOPIC = "/camera/image_raw", "/camera/camera_info"
DEMO_MODEL = REPO / "xnet_model" / "assets" / "demo_model"
FRAMES, ROUNDS = 12, 3


def source_messages(typestore) -> tuple[list, list, str]:
    """(images, camera infos, description) to cycle through."""
    if KITTI.is_dir():
        found: dict[str, list] = {topic: [] for topic in KITTI_TOPICS}
        with BagReader(KITTI, typestore) as bag:
            for topic, _, raw in bag.messages(KITTI_TOPICS):
                found[topic].append(bag.deserialize(raw, bag.topics[topic].msgtype))
        return found[KITTI_TOPICS[0]], found[KITTI_TOPICS[1]], "KITTI fixture frames"
    types = typestore.types
    rng = np.random.default_rng(0)
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="camera")
    images = [types[IMAGE](header=header, height=375, width=1242, encoding="rgb8",
                           is_bigendian=0, step=1242 * 3,
                           data=rng.integers(0, 256, 375 * 1242 * 3, dtype=np.uint8))
              for _ in range(3)]
    return images, [], "random 1242x375 images, no camera_info"


def write_bench_bag(path: Path, frames: int) -> tuple[list[np.ndarray], str]:
    """An MCAP bag of `frames` images (+ camera info) at 10 Hz; returns their RGB arrays."""
    typestore = make_typestore()
    images, infos, description = source_messages(typestore)
    rgbs = []
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        image_conn = writer.add_connection(IMAGE_TOPIC, IMAGE, typestore=typestore)
        info_conn = writer.add_connection(INFO_TOPIC, CAMERA_INFO, typestore=typestore)
        for i in range(frames):
            stamp = 1_700_000_000_000_000_000 + i * 100_000_000
            sec, nanosec = divmod(stamp, 1_000_000_000)
            for conn, msgs in ((info_conn, infos), (image_conn, images)):
                if not msgs:
                    continue
                msg = msgs[i % len(msgs)]
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
                writer.write(conn, stamp, typestore.serialize_cdr(msg, msg.__msgtype__))
            rgbs.append(np.array(image_to_array(images[i % len(images)])))
    return rgbs, description


def model_path(work: Path, model: str | None) -> tuple[Path, str]:
    if model:
        return Path(model), "given"
    if (DEMO_MODEL / "config.json").is_file():
        return DEMO_MODEL, "demo model"
    path = work / "atto"
    build_model("atto_x_atto_multitask", data={"input_size": [96, 320]}).save(path)
    return path, "random-weight atto_x_atto_multitask 96x320 (demo model missing)"


def _row(name: str, frames: int, seconds: list[float], cpu_seconds: list[float],
         reference: dict | None) -> dict:
    best = min(seconds)
    row = {"name": name, "frames": frames, "seconds": [round(s, 3) for s in seconds],
           "best_s": best, "fps": frames / best,
           "median_fps": frames / float(np.median(seconds)),
           "cpu_ms_per_frame": 1e3 * min(cpu_seconds) / frames}
    if reference is not None:
        row["ratio_to_model"] = row["fps"] / reference["fps"]
        row["cpu_ratio_to_model"] = reference["cpu_ms_per_frame"] / row["cpu_ms_per_frame"]
    return row


def run(frames: int = FRAMES, rounds: int = ROUNDS, model: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench_bag_") as tmp:
        work = Path(tmp)
        bag = work / "bag"
        rgbs, source = write_bench_bag(bag, frames)
        path, model_kind = model_path(work, model)
        predictor = Predictor(path)
        modes = {
            "bag infer (read-ahead + write-behind)": InferOptions(IMAGE_TOPIC, quiet=True),
            "bag infer (sequential)": InferOptions(IMAGE_TOPIC, quiet=True, read_ahead=0,
                                                   write_behind=0),
        }
        for rgb in rgbs[:2]:  # warm-up: allocator, torch kernels
            predictor.predict(rgb)
        run_infer(bag, work / "warmup", predictor, modes[next(iter(modes))])  # CDR codegen
        names = ["model only", *modes]
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "model only":
                    for rgb in rgbs:
                        predictor.predict(rgb)
                else:
                    run_infer(bag, out, predictor, modes[name])
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        size = f"{rgbs[0].shape[1]}x{rgbs[0].shape[0]}"
        reference = _row("model only", frames, wall["model only"], cpu["model only"], None)
        rows = [reference] + [_row(name, frames, wall[name], cpu[name], reference)
                              for name in modes]
        for row in rows:
            row.update(input=f"{source} {size}", model=f"{predictor.cfg.name} ({model_kind})",
                       backend=predictor.backend.describe())
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--model", default=None, help="saved model directory")
    args = parser.parse_args()
    rows = run(args.frames, args.rounds, args.model)
    print(f"input: {rows[0]['input']}; model: {rows[0]['model']}; {rows[0]['backend']}")
    width = max(len(row["name"]) for row in rows)
    print(f"{'mode':<{width}}  frames  best_fps  median_fps  vs_model  cpu_ms/frame  "
          "cpu_vs_model")
    for row in rows:
        ratio = f"{row['ratio_to_model']:8.1%}" if "ratio_to_model" in row else "       -"
        cpu_ratio = (f"{row['cpu_ratio_to_model']:12.1%}" if "cpu_ratio_to_model" in row
                     else "           -")
        print(f"{row['name']:<{width}}  {row['frames']:6d}  {row['fps']:8.2f}  "
              f"{row['median_fps']:10.2f}  {ratio}  {row['cpu_ms_per_frame']:12.1f}  "
              f"{cpu_ratio}")


if __name__ == "__main__":
    main()
