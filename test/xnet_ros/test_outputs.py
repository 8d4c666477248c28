"""build_outputs: the same bytes as before issue 11, written once into reusable buffers.

`reference_outputs` is the algorithm of the code before the hot-path rewrite written plainly
(the Predictor's cv2 resize to the image size, then the output size, `np.where` masking, a
palette lookup per output pixel, a structured-array point cloud): the tests require every
output to be byte-identical to it, for predictions at the network's resolution (the node's
path now) and at the image's (the old contract).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from xnet_ros.geometry import Intrinsics, unpack_pointcloud
from xnet_ros.outputs import (
    ALL_OUTPUTS,
    COLOR,
    DEPTH,
    DEPTH_INFO,
    LABELS,
    POINTS,
    BufferPool,
    OutputOptions,
    build_outputs,
    nearest_indices,
    nearest_maps,
    raw_predictions,
    resize_steps,
)


# ------------------------------------------------------------------------------ reference
def reference_outputs(rgb, depth_net, labels_net, intr, opts, label_dtype=np.uint8):
    """{name: bytes or (cloud fields..., bytes)} as the code before issue 11 computed them."""
    h, w = rgb.shape[:2]
    depth = np.asarray(depth_net, np.float32)
    labels = labels_net.astype(label_dtype)
    if depth.shape != (h, w):  # Predictor.postprocess
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
    if labels.shape != (h, w):
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    size = opts.output_size or (h, w)
    if size != (h, w):  # build_outputs
        depth = cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    depth = np.where(depth > opts.min_depth, depth, np.float32(np.nan))
    k = len(opts.palette)
    lut = np.zeros((max(k, int(labels.max()) + 1), 3), np.uint8)
    lut[:k] = opts.palette
    out = {DEPTH: depth.tobytes(), LABELS: labels.tobytes(), COLOR: lut[labels].tobytes()}
    intr = intr.scaled(size[1], size[0])
    s = opts.points_stride
    z = depth[::s, ::s]
    valid = (z > 0) & (z < np.inf)
    if opts.points_max_range is not None:
        valid &= z <= opts.points_max_range
    u = np.arange(0, intr.width, s, dtype=np.float32)
    v = np.arange(0, intr.height, s, dtype=np.float32)
    nan = np.float32(np.nan)
    cloud = np.zeros(z.shape, np.dtype({"names": ["x", "y", "z", "rgb", "label"],
                                        "formats": ["<f4", "<f4", "<f4", "<u4", "<u4"]}))
    cloud["x"] = np.where(valid, z * ((u - np.float32(intr.cx)) / np.float32(intr.fx)), nan)
    cloud["y"] = np.where(valid, z * ((v - np.float32(intr.cy)) / np.float32(intr.fy))[:, None],
                          nan)
    cloud["z"] = np.where(valid, z, nan)
    c = rgb[::s, ::s].astype(np.uint32)
    cloud["rgb"] = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    cloud["label"] = labels[::s, ::s]
    if not opts.points_organized:
        cloud = cloud[valid][None]
    out[POINTS] = (cloud.shape, bool(valid.all()) or not opts.points_organized,
                   cloud.tobytes())
    return out


def frame(src, size, seed=0, invalid=0.1, classes=12, label_dtype=np.uint8):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.6, 9.0, src).astype(np.float32)
    depth[rng.random(src) < invalid] = 0.2  # below min_depth 0.5
    labels = rng.integers(0, classes, src).astype(label_dtype)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    intr = Intrinsics(0.8 * size[1], 0.75 * size[1], (size[1] - 1) / 2 + 3, (size[0] - 1) / 2 - 2,
                      size[1], size[0])
    return rgb, depth, labels, intr


PALETTE = np.random.default_rng(7).integers(0, 256, (10, 3), dtype=np.uint8)  # ids 10, 11: black

CASES = [  # (network size, image size, output size, stride, organized, max range)
    ((120, 160), (480, 640), None, 2, True, None),
    ((120, 160), (480, 640), None, 1, True, None),
    ((120, 160), (720, 1280), None, 2, True, 5.0),
    ((120, 160), (1080, 1920), None, 2, True, None),
    ((120, 160), (375, 1242), None, 3, False, 6.0),
    ((120, 160), (480, 640), (240, 320), 2, True, None),
    ((120, 160), (480, 640), (120, 160), 1, False, None),  # up to the image size and back
    ((480, 640), (480, 640), None, 2, True, None),  # prediction at the image's size
    ((480, 640), (480, 640), (361, 500), 1, True, 4.0),
    ((96, 128), (100, 130), None, 1, True, None),
]


@pytest.mark.parametrize("headroom", [False, True], ids=["buffers", "buffers-with-room"])
@pytest.mark.parametrize("src, size, out_size, stride, organized, max_range", CASES)
def test_every_output_is_byte_identical_to_the_previous_algorithm(
        src, size, out_size, stride, organized, max_range, headroom, kernels):
    rgb, depth, labels, intr = frame(src, size)
    opts = OutputOptions(output_size=out_size, min_depth=0.5, points_stride=stride,
                         points_organized=organized, points_max_range=max_range,
                         palette=PALETTE, num_classes=10)
    ref = reference_outputs(rgb, depth, labels, intr, opts)
    out = build_outputs(rgb, depth, labels, intr, opts, buffers=BufferPool(headroom=headroom))
    assert set(out.fields) == set(ALL_OUTPUTS)
    for name in (DEPTH, LABELS, COLOR):
        assert bytes(out.fields[name]["data"]) == ref[name], name
    oh, ow = out_size or size
    assert (out.fields[DEPTH]["height"], out.fields[DEPTH]["width"]) == (oh, ow)
    assert out.fields[DEPTH]["step"] == 4 * ow and out.fields[COLOR]["step"] == 3 * ow
    assert out.fields[LABELS]["encoding"] == "mono8"
    pc = out.fields[POINTS]
    shape, dense, data = ref[POINTS]
    assert ((pc.height, pc.width), pc.is_dense, bytes(pc.data)) == (shape, dense, data)
    assert pc.point_step == 20 and pc.row_step == 20 * pc.width
    assert out.fields[DEPTH_INFO] == intr.scaled(ow, oh).to_camera_info_fields()


def test_uint16_labels_with_many_classes_and_the_default_palette(kernels):
    """300 classes: int32 network labels become uint16 (mono16), as the Predictor made them;
    the cloud's label holds the uint16 and two zero bytes."""
    rgb, depth, labels, intr = frame((60, 80), (240, 320), classes=300, label_dtype=np.int32)
    opts = OutputOptions(min_depth=0.5, points_stride=2, num_classes=300)
    out = build_outputs(rgb, depth, labels, intr, opts)
    from xnet_ros.colorize import default_palette

    ref = reference_outputs(rgb, depth, labels, intr,
                            OutputOptions(min_depth=0.5, points_stride=2,
                                          palette=default_palette(300)), np.uint16)
    assert out.fields[LABELS]["encoding"] == "mono16" and out.fields[LABELS]["step"] == 640
    for name in (DEPTH, LABELS, COLOR):
        assert bytes(out.fields[name]["data"]) == ref[name], name
    assert bytes(out.fields[POINTS].data) == ref[POINTS][2]


def test_min_depth_mask_is_applied_when_the_source_touches_it(kernels):
    """The masking pass is skipped only when every (finite) source value is above min_depth;
    otherwise every output value not above it, or NaN, is NaN."""
    rgb = np.zeros((8, 8, 3), np.uint8)
    opts = OutputOptions(min_depth=0.5)

    def published(depth):
        fields = build_outputs(rgb, depth, None, None, opts, {DEPTH}).fields[DEPTH]
        return np.frombuffer(fields["data"], np.float32).reshape(8, 8)

    depth = np.full((4, 4), 2.0, np.float32)
    depth[1, 1] = 0.5  # == min_depth
    # bilinear x2 with half-pixel centres: output (2, 2) samples source (0.75, 0.75), 9/16 of
    # it from (1, 1): 0.5 * 9/16 + 2 * 7/16 = 1.15625 (by hand), above min_depth
    assert published(depth)[2, 2] == pytest.approx(1.15625)
    assert not np.isnan(published(depth)).any()
    depth[1, 1] = np.nan  # a NaN reaches every output pixel that blends it
    out = published(depth)
    assert np.isnan(out[1:4, 1:4]).all() and not np.isnan(out[5:, 5:]).any()
    same = np.full((8, 8), 0.5, np.float32)
    same[0, 0] = 3.0  # at the image size: values at min_depth become NaN, 3.0 stays
    out = published(same)
    assert out[0, 0] == 3.0 and np.isnan(out.reshape(-1)[1:]).all()


def test_only_wanted_outputs_are_built(kernels):
    rgb, depth, labels, intr = frame((120, 160), (480, 640))
    opts = OutputOptions(min_depth=0.5, points_stride=2, palette=PALETTE, num_classes=10)
    ref = reference_outputs(rgb, depth, labels, intr, opts)
    only_points = build_outputs(rgb, depth, labels, intr, opts, {POINTS})
    assert set(only_points.fields) == {POINTS}
    assert bytes(only_points.fields[POINTS].data) == ref[POINTS][2]  # labels/depth internal
    only_color = build_outputs(rgb, depth, labels, intr, opts, {COLOR})
    assert set(only_color.fields) == {COLOR}
    assert bytes(only_color.fields[COLOR]["data"]) == ref[COLOR]
    no_intrinsics = build_outputs(rgb, depth, labels, None, opts)
    assert set(no_intrinsics.fields) == {DEPTH, LABELS, COLOR}


def test_points_from_the_network_resolution(kernels):
    """points_resolution 'network': the cloud is the network's grid, intrinsics scaled to it,
    z the network's depth itself (NaN at or below min_depth), colours the image resized to it
    with cv2 (as the network's input), labels the network's."""
    rgb, depth, labels, intr = frame((60, 80), (480, 640))
    opts = OutputOptions(min_depth=0.5, points_stride=2, palette=PALETTE, num_classes=10,
                         points_resolution="network")
    pc = build_outputs(rgb, depth, labels, intr, opts, {POINTS}).fields[POINTS]
    assert (pc.height, pc.width) == (30, 40)
    cloud = unpack_pointcloud(pc.data, pc.fields, pc.point_step, pc.height, pc.width)
    z = depth[::2, ::2]
    valid = z > 0.5
    np.testing.assert_array_equal(cloud["z"][valid], z[valid])
    assert np.isnan(cloud["z"][~valid]).all() and not pc.is_dense
    small = intr.scaled(80, 60)  # the network's camera: fx * 80/640
    assert small.fx == pytest.approx(0.8 * 640 / 8)
    v, u = 4, 6  # grid (4, 6) = network pixel (8, 12)
    assert cloud["x"][v, u] == pytest.approx(z[v, u] * (12 - small.cx) / small.fx, rel=1e-6)
    assert cloud["y"][v, u] == pytest.approx(z[v, u] * (8 - small.cy) / small.fy, rel=1e-6)
    np.testing.assert_array_equal(cloud["label"], labels[::2, ::2])
    expect = cv2.resize(rgb, (80, 60), interpolation=cv2.INTER_LINEAR)[8, 12].astype(np.uint32)
    packed = cloud["rgb"].view(np.uint32)[v, u]
    assert packed == (expect[0] << 16) | (expect[1] << 8) | expect[2]


@pytest.mark.parametrize("src, dst", [(120, 480), (160, 640), (120, 1080), (160, 1920),
                                      (160, 1242), (375, 100), (640, 500), (7, 3), (3, 7)])
def test_nearest_indices_reproduce_cv2(src, dst):
    """The gathers use cv2's own nearest-neighbour choice, for 1- and 3-channel uint8 and uint16
    images alike."""
    idx = nearest_indices(src, dst)
    assert idx.shape == (dst,) and idx.min() >= 0 and idx.max() < src
    rng = np.random.default_rng(src * dst)
    for img in (rng.integers(0, 256, (src, src), dtype=np.uint8),
                rng.integers(0, 256, (src, src, 3), dtype=np.uint8),
                rng.integers(0, 65536, (src, src), dtype=np.uint16)):
        ref = cv2.resize(img, (dst, dst), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(img[idx][:, idx], ref)


def test_resize_steps_compose_like_the_predictor_and_the_outputs():
    assert resize_steps((120, 160), (480, 640), (480, 640)) == ((480, 640),)
    assert resize_steps((480, 640), (480, 640), (240, 320)) == ((240, 320),)
    assert resize_steps((120, 160), (480, 640), (120, 160)) == ((480, 640), (120, 160))
    assert resize_steps((480, 640), (480, 640), (480, 640)) == ()
    rows, cols = nearest_maps((2, 3), ((4, 6), (2, 3)))  # up x2 then down x2: 0, 1 (by hand)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1, 2]


# -------------------------------------------------------------------------------- buffers
def test_buffers_are_reused_only_after_release():
    rgb, depth, labels, intr = frame((30, 40), (60, 80))
    opts = OutputOptions(min_depth=0.5, palette=PALETTE, num_classes=10)
    pool = BufferPool()
    first = build_outputs(rgb, depth, labels, intr, opts, buffers=pool)
    data = {n: first.fields[n]["data"] for n in (DEPTH, LABELS, COLOR)}
    cloud = first.fields[POINTS].data
    second = build_outputs(rgb, depth, labels, intr, opts, buffers=pool)  # first not released
    assert all(second.fields[n]["data"] is not data[n] for n in data)
    expected = bytes(first.fields[DEPTH]["data"])
    first.release()
    assert first.fields == {}  # nothing can read memory another frame writes
    third = build_outputs(rgb, depth, labels, intr, opts, buffers=pool)
    assert all(third.fields[n]["data"] is data[n] for n in data)  # the same memory ...
    assert third.fields[POINTS].data is cloud
    assert bytes(third.fields[DEPTH]["data"]) == expected  # ... rewritten
    no_pool = build_outputs(rgb, depth, labels, intr, opts)
    no_pool.release()  # without a pool: nothing to give back
    assert build_outputs(rgb, depth, labels, intr, opts).fields[DEPTH]["data"] is not \
        data[DEPTH]


def test_pool_keeps_few_buffers_per_size():
    pool = BufferPool(keep=2, max_keys=2)
    a, b, c = (pool.take(("x",), 8) for _ in range(3))
    for buf in (a, b, c):
        pool.give_back(("x",), buf)
    assert {id(pool.take(("x",), 8)) for _ in range(2)} == {id(a), id(b)}  # c was dropped
    pool.give_back(("y",), pool.take(("y",), 4))
    pool.give_back(("z",), pool.take(("z",), 4))
    pool.give_back(("w",), pool.take(("w",), 4))  # the oldest size is forgotten
    assert len(pool._free) == 2


def test_raw_predictions_only_for_predictors_that_take_it():
    class Raw:
        def predict_batch(self, images, bgr=False, raw=False):
            return []

    class Plain:
        def predict_batch(self, images):
            return []

    assert raw_predictions(Raw()) == {"raw": True}
    assert raw_predictions(Plain()) == {} and raw_predictions(SimpleNamespace()) == {}


@pytest.mark.ros
def test_rclpy_publish_copies_the_data_so_buffers_can_be_reused():
    """What BufferPool relies on: the message holds the buffer itself (no copy), and once
    `publish` returns rclpy no longer reads it (it was converted into a C message):
    overwriting it does not change what a subscriber receives."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from xnet_ros.outputs import new_buffer
    from xnet_ros.ros_messages import image_msg

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("xnet_buffer_test", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        got = []
        node.create_subscription(Image, "buffer_test", got.append, qos)
        pub = node.create_publisher(Image, "buffer_test", qos)
        deadline = time.monotonic() + 20.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        data = new_buffer(64 * 48)
        msg = image_msg(Image().header, {"height": 48, "width": 64, "encoding": "mono8",
                                         "is_bigendian": 0, "step": 64, "data": data})
        assert msg.data is data  # taken as is, not copied
        from xnet_ros.geometry import PointCloudData
        from xnet_ros.ros_messages import pointcloud_msg

        cloud = PointCloudData(1, 2, [("x", 0, 7, 1)], 12, 24, True, new_buffer(24))
        assert pointcloud_msg(msg.header, cloud).data is cloud.data
        for value in (1, 2):
            data[:] = type(data)("B", bytes([value])) * len(data)
            pub.publish(msg)
        data[:] = type(data)("B", bytes([9])) * len(data)  # after publish: must not show
        while len(got) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert [set(bytes(m.data)) for m in got] == [{1}, {2}]
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_points_resolution_parameter_reaches_the_outputs():
    from xnet_ros.params import NodeParams
    from xnet_ros.pipeline import FramePipeline, FrameSettings

    assert NodeParams().points_resolution == "output"
    errors = NodeParams(points_resolution="grid").validate()
    assert [e.name for e in errors] == ["points_resolution"]
    settings = FrameSettings.from_params(NodeParams(points_resolution="network"))
    meta = SimpleNamespace(num_classes=0, min_depth=0.1, palette_array=lambda: None)
    pipe = FramePipeline(SimpleNamespace(meta=meta), settings)
    assert pipe.output_options().points_resolution == "network"
