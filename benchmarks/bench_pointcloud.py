"""Timing of the per-frame CPU work around the network: point clouds and image conversions.

Run from the repository root:
``python -m benchmarks.bench_pointcloud [--tune-malloc] [--sensor-msgs-py PATH]``.

``--sensor-msgs-py`` (or $XNET_SENSOR_MSGS_PY) names ``sensor_msgs_py/point_cloud2.py`` of
ros2/common_interfaces (one pure-Python file; not installable here): then the node's cloud
(`geometry.depth_to_cloud` + `ros_messages.pointcloud_msg`) is timed side by side, interleaved,
with the same points built the sensor_msgs_py way (numpy back-projection into a structured
array + ``create_cloud``), both including the PointCloud2 message, after checking that both
hold the same bytes. Without the file those rows are skipped. Rows marked "numpy kernels" run
with the native post-processing kernels off (`xnet_ros.native.disabled()`): the fallback
the node uses where `libxnet_ros_postprocess.so` is not built.

With glibc defaults the multi-MB per-frame buffers are returned to the OS (heap trimming) and
faulted in again every frame; on a small VM that costs more than the packing itself.
``--tune-malloc`` raises the trim/mmap thresholds first, as a long-running node can.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from xnet_ros import native
from xnet_ros.conversions import array_to_image_fields, image_to_array, to_rgb
from xnet_ros.geometry import Intrinsics, backproject, depth_to_cloud, pack_pointcloud
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


def load_point_cloud2(path: str | None):
    """sensor_msgs_py.point_cloud2 loaded from its file (None: no path or no such file)."""
    if not path or not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location("sensor_msgs_py_point_cloud2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def structured_cloud(pc2, header, depth, rgb, labels, intr: Intrinsics):
    """The same organized cloud the sensor_msgs_py way: numpy back-projection into a
    structured array, then `create_cloud` (memoryview -> array.array)."""
    from sensor_msgs.msg import PointField

    fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in (
        ("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32),
        ("z", 8, PointField.FLOAT32), ("rgb", 12, PointField.FLOAT32),
        ("label", 16, PointField.UINT16))]
    cloud = np.zeros(depth.shape, pc2.dtype_from_fields(fields, 20))
    valid = (depth > 0) & (depth < np.inf)
    z = np.where(valid, depth, np.float32(np.nan))
    u = np.arange(intr.width, dtype=np.float32)
    v = np.arange(intr.height, dtype=np.float32)
    cloud["x"] = z * ((u - np.float32(intr.cx)) / np.float32(intr.fx))
    cloud["y"] = z * ((v - np.float32(intr.cy)) / np.float32(intr.fy))[:, None]
    cloud["z"] = z
    c = rgb.astype(np.uint32)
    cloud["rgb"] = ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(np.float32)
    cloud["label"] = labels
    return pc2.create_cloud(header, fields, cloud.reshape(-1), point_step=20)


def interleaved(cases: list[tuple[str, Callable[[], object]]], repeats: int) -> list[dict]:
    """Median/p90 per case, the cases timed in turn (load hits them alike)."""
    samples: dict[str, list[float]] = {name: [] for name, _ in cases}
    for i in range(WARMUP + repeats):
        for name, fn in cases:
            start = time.perf_counter()
            fn()
            if i >= WARMUP:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return [{"name": name, "median_ms": float(np.median(s)),
             "p90_ms": float(np.percentile(s, 90))} for name, s in samples.items()]


def on_numpy(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` with the native kernels off: the numpy path they replace (the fallback)."""
    def run() -> object:
        with native.disabled():
            return fn()
    return run


def cloud_vs_sensor_msgs_py(pc2, repeats: int) -> list[dict]:
    """Ours vs the sensor_msgs_py path, 640x480 organized xyz + rgb + label with the message."""
    from std_msgs.msg import Header

    from xnet_ros.outputs import BufferPool, Lender
    from xnet_ros.rcl_publish import frame_output
    from xnet_ros.ros_messages import pointcloud_msg

    depth, rgb, labels = synthetic_frame()
    labels = labels.astype(np.uint8)
    intr = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=WIDTH, height=HEIGHT)
    header, pool = Header(frame_id="camera"), BufferPool()

    def ours(new_buffer=None):
        return pointcloud_msg(header, depth_to_cloud(depth, intr, rgb, labels,
                                                     new_buffer=new_buffer))

    def ours_pooled():  # as in the node: the buffer of an earlier, published frame
        buffer = pool.take(("points",), HEIGHT * WIDTH * 20)
        msg = ours(lambda n: buffer)
        pool.give_back(("points",), buffer)
        return msg

    framing_pool = BufferPool(headroom=True)

    def ours_in_place():  # the node's default: the serialized message around the data
        lend = Lender(framing_pool)
        framed = frame_output("points", header, depth_to_cloud(depth, intr, rgb, labels,
                                                               new_buffer=lambda n: lend(
                                                                   ("points",), n)))
        for key, buffer in lend.leases:
            framing_pool.give_back(key, buffer)
        return framed

    reference = structured_cloud(pc2, header, depth, rgb, labels, intr)
    if bytes(ours().data) != bytes(reference.data):
        raise AssertionError("the sensor_msgs_py cloud and ours differ: not comparable")
    framed = ours_in_place()
    if ctypes.string_at(framed.address + framed.length - 1 - len(reference.data),
                        len(reference.data)) != bytes(reference.data):
        raise AssertionError("the cloud serialized in place differs from sensor_msgs_py's")
    size = f"{WIDTH}x{HEIGHT}"
    rows = interleaved([
        (f"cloud+msg ours {size}", ours),
        (f"cloud+msg ours, reused buffer (node) {size}", ours_pooled),
        (f"cloud serialized in place, ours (node default) {size}", ours_in_place),
        (f"cloud serialized in place, ours, numpy kernels {size}", on_numpy(ours_in_place)),
        (f"cloud+msg sensor_msgs_py structured {size}",
         lambda: structured_cloud(pc2, header, depth, rgb, labels, intr)),
    ], repeats)
    base = rows[-1]["median_ms"]
    for row in rows:
        row["vs_sensor_msgs_py"] = row["median_ms"] / base
    return rows


def node_outputs(repeats: int) -> list[dict]:
    """Everything the node does with a frame between the network and rcl_publish: the demo
    model's 120x160 outputs -> every output at the image size (points_stride 2), then the
    rclpy messages (`publish_serialized: false`) or the messages serialized in place (the
    default; camera_info as an rclpy message), buffers given back as after publishing."""
    from std_msgs.msg import Header

    from xnet_ros.outputs import BufferPool, OutputOptions, build_outputs
    from xnet_ros.rcl_publish import frame_output
    from xnet_ros.ros_messages import output_msg

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 9.0, (120, 160)).astype(np.float32)
    labels = rng.integers(0, 10, (120, 160)).astype(np.uint8)
    opts = OutputOptions(points_stride=2, palette=rng.integers(0, 256, (10, 3), np.uint8),
                         num_classes=10)
    header, pool = Header(frame_id="camera"), BufferPool()
    framing_pool = BufferPool(headroom=True)
    cases = []
    for height, width in ((480, 640), (720, 1280), (1080, 1920)):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        intr = Intrinsics(0.8 * width, 0.8 * width, width / 2, height / 2, width, height)

        def frame(rgb=rgb, intr=intr) -> None:
            out = build_outputs(rgb, depth, labels, intr, opts, buffers=pool)
            for name, fields in out.fields.items():
                output_msg(name, header, fields)
            out.release()

        def framed(rgb=rgb, intr=intr) -> None:
            out = build_outputs(rgb, depth, labels, intr, opts, buffers=framing_pool)
            for name, fields in out.fields.items():
                if frame_output(name, header, fields) is None:
                    output_msg(name, header, fields)
            out.release()

        cases.append((f"node outputs + messages, stride 2, {width}x{height}", frame))
        cases.append((f"node outputs serialized in place, stride 2, {width}x{height}", framed))
        cases.append((f"node outputs serialized in place, numpy kernels, stride 2, "
                      f"{width}x{height}", on_numpy(framed)))
    return interleaved(cases, repeats)


def run(repeats: int = REPEATS, sensor_msgs_py: str | None = None) -> list[dict]:
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
    rows = [time_call(name, fn, repeats) for name, fn in cases]
    rows += node_outputs(repeats)
    pc2 = load_point_cloud2(sensor_msgs_py or os.environ.get("XNET_SENSOR_MSGS_PY"))
    if pc2 is not None:
        rows += cloud_vs_sensor_msgs_py(pc2, repeats)
    else:
        print("sensor_msgs_py point_cloud2.py not given (--sensor-msgs-py / "
              "$XNET_SENSOR_MSGS_PY): skipping the comparison with it")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune-malloc", action="store_true",
                        help="raise glibc trim/mmap thresholds before timing")
    parser.add_argument("--sensor-msgs-py", metavar="PATH",
                        help="sensor_msgs_py/point_cloud2.py, for the comparison with it")
    args = parser.parse_args()
    if args.tune_malloc:
        print(f"glibc malloc tuned: {tune_malloc()}")
    print(f"post-processing: {native.status()}")
    rows = run(sensor_msgs_py=args.sensor_msgs_py)
    width = max(len(row["name"]) for row in rows)
    print(f"{'case':<{width}}  median_ms  p90_ms  vs sensor_msgs_py")
    for row in rows:
        ratio = f"{row['vs_sensor_msgs_py']:.2f}x" if "vs_sensor_msgs_py" in row else ""
        print(f"{row['name']:<{width}}  {row['median_ms']:9.3f}  {row['p90_ms']:6.3f}  {ratio}")


if __name__ == "__main__":
    main()
