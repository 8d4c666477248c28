"""Throughput of `xnet bag infer` end to end against the model alone on the same frames.

Run from the repository root: ``python -m benchmarks.bench_bag [--frames N] [--rounds R]
[--model DIR]``. The bag cycles the KITTI fixture's frames (1242x375 rgb8 + camera_info) when
../shared/fixtures is there, else random 1242x375 images. The model is the packaged demo model,
else a random-weight atto model at 96x320. Modes alternate round by round and the best round
of each is reported (least disturbed by other load on a shared machine) with the median; the
ratio to the model alone is taken per round, from back-to-back runs.
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
from xnet_ros.outputs import tune_malloc

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("XNET_FIXTURES", REPO.parent / "shared" / "fixtures"))
KITTI = FIXTURES / "rosbag" / "kitti_tiny_ros2_mcap"
KITTI_TOPICS = ("/kitti/camera_color_left/image_raw", "/kitti/camera_color_left/camera_info")
IMAGE_TOPIC, INFO_TOPIC = "/camera/image_raw", "/camera/camera_info"
DEMO_MODEL = REPO / "xnet_model" / "assets" / "demo_model"
FRAMES, ROUNDS = 96, 3  # enough frames that per-run costs (opening, metadata) fade


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


class CachedPredictor:
    """The model's first prediction, returned for every frame: times the bag pipeline alone."""

    def __init__(self, predictor: Predictor):
        self.cfg, self.num_classes = predictor.cfg, predictor.num_classes
        self._predictor, self._prediction = predictor, None

    def predict(self, image: np.ndarray):
        if self._prediction is None:
            self._prediction = self._predictor.predict(image)
        return self._prediction


def run(frames: int = FRAMES, rounds: int = ROUNDS, model: str | None = None) -> list[dict]:
    """One row per mode. Each round times the model alone, then each bag mode, back to back, so
    `ratio_to_model` (median over rounds of the per-round FPS ratios) compares runs under the
    same background load; `model_share` is the part of a bag run spent in Predictor.predict.
    The last row replays one cached prediction: the throughput of reading + outputs + writing."""
    tune_malloc()  # as `xnet bag` and the node do
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
        pipeline_only = "bag infer, no model (pipeline ceiling)"
        names = ["model only", *modes, pipeline_only]
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        share: dict[str, list[float]] = {name: [] for name in modes}
        cached = CachedPredictor(predictor)
        for _ in range(rounds):
            for name in names:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "model only":
                    for rgb in rgbs:
                        predictor.predict(rgb)
                elif name == pipeline_only:
                    run_infer(bag, out, cached, modes[next(iter(modes))])
                else:
                    summary = run_infer(bag, out, predictor, modes[name])
                    share[name].append(summary.model_seconds / summary.seconds)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        common = {"frames": frames, "input": f"{source} {rgbs[0].shape[1]}x{rgbs[0].shape[0]}",
                  "model": f"{predictor.cfg.name} ({model_kind})",
                  "backend": predictor.backend.describe()}
        rows = []
        for name in names:
            row = {"name": name, **common, "seconds": [round(t, 3) for t in wall[name]],
                   "fps": frames / min(wall[name]),
                   "median_fps": frames / float(np.median(wall[name])),
                   "cpu_ms_per_frame": 1e3 * float(np.median(cpu[name])) / frames}
            if name in modes:
                ratios = [m / b for m, b in zip(wall["model only"], wall[name])]
                cpu_ratios = [m / b for m, b in zip(cpu["model only"], cpu[name])]
                row.update(ratio_to_model=float(np.median(ratios)),
                           ratios=[round(r, 3) for r in ratios],
                           cpu_ratio_to_model=float(np.median(cpu_ratios)),
                           model_share=float(np.median(share[name])))
            rows.append(row)
        return rows


def _pct(row: dict, key: str, width: int) -> str:
    return f"{row[key]:{width}.1%}" if key in row else " " * (width - 1) + "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--model", default=None, help="saved model directory")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    rows = run(args.frames, args.rounds, args.model)
    print(f"input: {rows[0]['input']}; model: {rows[0]['model']}; {rows[0]['backend']}")
    width = max(len(row["name"]) for row in rows)
    print(f"{'mode':<{width}}  frames  best_fps  median_fps  vs_model  model_share  "
          "cpu_ms/frame  cpu_vs_model")
    for row in rows:
        print(f"{row['name']:<{width}}  {row['frames']:6d}  {row['fps']:8.2f}  "
              f"{row['median_fps']:10.2f}  {_pct(row, 'ratio_to_model', 8)}  "
              f"{_pct(row, 'model_share', 11)}  {row['cpu_ms_per_frame']:12.1f}  "
              f"{_pct(row, 'cpu_ratio_to_model', 12)}")
    print("vs_model: median over rounds of model-only time / bag time (back-to-back runs); "
          "model_share: time in Predictor.predict / bag time; cpu_vs_model: the same ratio for "
          "process CPU time (all threads)")

if __name__ == "__main__":
    main()
