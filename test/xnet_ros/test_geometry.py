"""Intrinsics, backprojection and PointCloud2 packing (no rclpy needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from xnet_ros.geometry import (
    FLOAT32,
    UINT16,
    Intrinsics,
    backproject,
    depth_to_cloud,
    pack_pointcloud,
    rgb_words,
    unpack_pointcloud,
    unpack_rgb,
)

KITTI_DRIVE = Path("kitti/KITTI_tiny/2011_09_26/2011_09_26_drive_0023_sync")
KITTI_INTR = Intrinsics(721.5377, 721.5377, 609.5593, 172.854, 1242, 375)


def camera_info(**fields) -> SimpleNamespace:
    base = dict(width=640, height=480, k=[500.0, 0, 320.0, 0, 510.0, 240.0, 0, 0, 1])
    base.update(fields)
    return SimpleNamespace(**base)


def test_from_camera_info_ros2_k() -> None:
    intr = Intrinsics.from_camera_info(camera_info())
    assert intr == Intrinsics(500.0, 510.0, 320.0, 240.0, 640, 480)


def test_from_camera_info_ros1_upper_k_and_numpy() -> None:
    msg = SimpleNamespace(width=1242, height=375,
                          K=np.array([721.5377, 0, 609.5593, 0, 721.5377, 172.854, 0, 0, 1]))
    assert Intrinsics.from_camera_info(msg) == KITTI_INTR


def test_from_camera_info_rclpy_message() -> None:
    msgs = pytest.importorskip("sensor_msgs.msg")
    msg = msgs.CameraInfo(width=1242, height=375, k=[721.5377, 0.0, 609.5593, 0.0, 721.5377,
                                                     172.854, 0.0, 0.0, 1.0])
    assert Intrinsics.from_camera_info(msg) == KITTI_INTR


def test_from_camera_info_uncalibrated_and_malformed() -> None:
    with pytest.raises(ValueError, match="uncalibrated"):
        Intrinsics.from_camera_info(camera_info(k=[0.0] * 9))
    with pytest.raises(ValueError, match="9"):
        Intrinsics.from_camera_info(camera_info(k=[1.0] * 4))
    with pytest.raises(ValueError, match="image size"):
        Intrinsics.from_camera_info(camera_info(width=0))
    with pytest.raises(ValueError, match="'k' or 'K'"):
        Intrinsics.from_camera_info(SimpleNamespace(width=1, height=1))


def test_scaled_exact_values() -> None:
    intr = Intrinsics(fx=100.0, fy=200.0, cx=319.5, cy=239.5, width=640, height=480)
    half = intr.scaled(320, 240)
    assert half == Intrinsics(50.0, 100.0, 159.5, 119.5, 320, 240)
    # Non-uniform scaling; centre convention cx' = (cx + 0.5) * sx - 0.5.
    net = KITTI_INTR.scaled(621, 250)
    assert net.fx == pytest.approx(721.5377 * 0.5)
    assert net.fy == pytest.approx(721.5377 * 250 / 375)
    assert net.cx == pytest.approx(304.52965)
    assert net.cy == pytest.approx((172.854 + 0.5) * 250 / 375 - 0.5)
    assert (net.width, net.height) == (621, 250)


def test_scaled_keeps_image_edges() -> None:
    intr = Intrinsics(300.0, 300.0, 100.0, 50.0, 200, 100)
    up = intr.scaled(600, 300)
    # A ray through the left image edge (u = -0.5) goes through the new left edge too.
    assert (-0.5 - intr.cx) / intr.fx == pytest.approx((-0.5 - up.cx) / up.fx)
    assert (99.5 - intr.cy) / intr.fy == pytest.approx((299.5 - up.cy) / up.fy)


def test_to_camera_info_fields() -> None:
    fields = Intrinsics(500.0, 510.0, 320.0, 240.0, 640, 480).to_camera_info_fields()
    assert fields["k"] == [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    assert fields["p"] == [500.0, 0.0, 320.0, 0.0, 0.0, 510.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert fields["r"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert fields["d"] == [] and fields["distortion_model"] == "plumb_bob"
    assert Intrinsics.from_camera_info(SimpleNamespace(**fields)) == Intrinsics(
        500.0, 510.0, 320.0, 240.0, 640, 480)


def test_to_camera_info_fields_fill_rclpy_message() -> None:
    msgs = pytest.importorskip("sensor_msgs.msg")
    msg = msgs.CameraInfo(**KITTI_INTR.to_camera_info_fields())
    assert Intrinsics.from_camera_info(msg) == KITTI_INTR


def test_backproject_hand_computed() -> None:
    intr = Intrinsics(fx=2.0, fy=4.0, cx=1.0, cy=0.5, width=3, height=2)
    depth = np.array([[1.0, 2.0, 4.0], [0.5, 8.0, 3.0]], np.float32)
    points = backproject(depth, intr)
    assert points.shape == (2, 3, 3) and points.dtype == np.float32
    # u = 2, v = 1, z = 3: x = (2 - 1) * 3 / 2, y = (1 - 0.5) * 3 / 4.
    np.testing.assert_allclose(points[1, 2], [1.5, 0.375, 3.0])
    # u = 0, v = 0, z = 1: x = -1 / 2, y = -0.5 / 4.
    np.testing.assert_allclose(points[0, 0], [-0.5, -0.125, 1.0])
    for v in range(2):
        for u in range(3):
            z = depth[v, u]
            np.testing.assert_allclose(points[v, u], [(u - 1.0) * z / 2, (v - 0.5) * z / 4, z],
                                       rtol=1e-6)


def test_backproject_invalid_depth_gives_nan() -> None:
    intr = Intrinsics(1.0, 1.0, 0.0, 0.0, 5, 1)
    depth = np.array([[np.nan, 0.0, -1.0, np.inf, 2.0]], np.float32)
    points = backproject(depth, intr)
    assert np.isnan(points[0, :4]).all()
    np.testing.assert_allclose(points[0, 4], [8.0, 0.0, 2.0])


def test_backproject_stride_uses_grid_pixels() -> None:
    intr = Intrinsics(10.0, 10.0, 2.0, 1.0, 5, 3)
    depth = np.arange(1, 16, dtype=np.float32).reshape(3, 5)
    points = backproject(depth, intr, stride=2)
    assert points.shape == (2, 3, 3)
    full = backproject(depth, intr)
    np.testing.assert_array_equal(points, full[::2, ::2])
    np.testing.assert_allclose(points[1, 2], [(4 - 2) * 15 / 10, (2 - 1) * 15 / 10, 15.0])


def test_backproject_rejects_mismatched_shape() -> None:
    with pytest.raises(ValueError, match="scaled"):
        backproject(np.ones((4, 4), np.float32), Intrinsics(1, 1, 0, 0, 8, 8))
    with pytest.raises(ValueError, match="stride"):
        backproject(np.ones((4, 4), np.float32), Intrinsics(1, 1, 0, 0, 4, 4), stride=0)
    with pytest.raises(ValueError, match="metres"):
        backproject(np.ones((4, 4), np.uint16), Intrinsics(1, 1, 0, 0, 4, 4))


def test_backproject_float64_depth() -> None:
    depth = np.full((2, 2), 2.0)
    points = backproject(depth, Intrinsics(1.0, 1.0, 0.0, 0.0, 2, 2))
    assert points.dtype == np.float32
    np.testing.assert_array_equal(points[1, 1], [2.0, 2.0, 2.0])


def synthetic_cloud(height: int = 4, width: int = 5):
    rng = np.random.default_rng(7)
    xyz = rng.uniform(-5, 5, (height, width, 3)).astype(np.float32)
    xyz[..., 2] = rng.uniform(0.5, 10, (height, width))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, 65536, (height, width)).astype(np.int64)
    return xyz, rgb, labels


def test_pack_organized_round_trip() -> None:
    xyz, rgb, labels = synthetic_cloud()
    cloud = pack_pointcloud(xyz, rgb, labels, organized=True)
    assert cloud.fields == [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1),
                            ("rgb", 12, FLOAT32, 1), ("label", 16, UINT16, 1)]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (4, 5, 20, 100)
    assert cloud.is_dense and not cloud.is_bigendian
    assert isinstance(cloud.data, bytes) and len(cloud.data) == 4 * 100
    out = unpack_pointcloud(cloud.data, cloud.fields, cloud.point_step, 4, 5)
    np.testing.assert_array_equal(np.stack([out["x"], out["y"], out["z"]], -1), xyz)
    np.testing.assert_array_equal(unpack_rgb(out["rgb"]), rgb)
    np.testing.assert_array_equal(out["label"], labels)


def test_rgb_field_holds_0x00rrggbb_bits() -> None:
    xyz = np.ones((1, 1, 3), np.float32)
    rgb = np.array([[[0x12, 0x34, 0x56]]], np.uint8)
    cloud = pack_pointcloud(xyz, rgb, np.array([[513]]), organized=True)
    assert cloud.data[12:16] == (0x00123456).to_bytes(4, "little")
    assert cloud.data[16:20] == (513).to_bytes(2, "little") + b"\x00\x00"  # zero padding


def test_pack_optional_fields_layout() -> None:
    xyz, rgb, labels = synthetic_cloud()
    no_labels = pack_pointcloud(xyz, rgb, organized=True)
    assert no_labels.point_step == 16 and [f[0] for f in no_labels.fields] == ["x", "y", "z",
                                                                                "rgb"]
    xyz_only = pack_pointcloud(xyz, organized=True)
    assert xyz_only.point_step == 12 and len(xyz_only.data) == 4 * 5 * 12
    out = unpack_pointcloud(xyz_only.data, xyz_only.fields, 12, 4, 5)
    np.testing.assert_array_equal(out["z"], xyz[..., 2])
    labels_only = pack_pointcloud(xyz, labels=labels.astype(np.uint16), organized=True)
    assert labels_only.fields[-1] == ("label", 12, UINT16, 1) and labels_only.point_step == 16
    out = unpack_pointcloud(labels_only.data, labels_only.fields, 16, 4, 5)
    np.testing.assert_array_equal(out["label"], labels)


def invalid_cloud():
    xyz, rgb, labels = synthetic_cloud()
    xyz[0, 0] = np.nan
    xyz[1, 2, 0] = np.inf  # only x invalid
    xyz[2, 3, 2] = 25.0  # beyond max_range
    xyz[3, 4, 2] = 12.0  # z exactly at max_range stays
    return xyz, rgb, labels


def test_organized_keeps_invalid_as_nan() -> None:
    xyz, rgb, labels = invalid_cloud()
    cloud = pack_pointcloud(xyz, rgb, labels, organized=True, max_range=12.0)
    assert (cloud.height, cloud.width) == (4, 5) and not cloud.is_dense
    out = unpack_pointcloud(cloud.data, cloud.fields, cloud.point_step, 4, 5)
    points = np.stack([out["x"], out["y"], out["z"]], -1)
    invalid = np.zeros((4, 5), bool)
    invalid[0, 0] = invalid[1, 2] = invalid[2, 3] = True
    assert np.isnan(points[invalid]).all()
    np.testing.assert_array_equal(points[~invalid], xyz[~invalid])
    np.testing.assert_array_equal(unpack_rgb(out["rgb"]), rgb)  # colour and label kept
    np.testing.assert_array_equal(out["label"], labels)


def test_dense_drops_invalid_points() -> None:
    xyz, rgb, labels = invalid_cloud()
    cloud = pack_pointcloud(xyz, rgb, labels, organized=False, max_range=12.0)
    assert (cloud.height, cloud.width) == (1, 17) and cloud.is_dense
    assert cloud.row_step == 17 * 20 and len(cloud.data) == 17 * 20
    out = unpack_pointcloud(cloud.data, cloud.fields, cloud.point_step, 1, 17)
    keep = np.ones((4, 5), bool)
    keep[0, 0] = keep[1, 2] = keep[2, 3] = False
    np.testing.assert_array_equal(np.stack([out["x"], out["y"], out["z"]], -1)[0], xyz[keep])
    np.testing.assert_array_equal(unpack_rgb(out["rgb"])[0], rgb[keep])
    np.testing.assert_array_equal(out["label"][0], labels[keep])
    without_range = pack_pointcloud(xyz, rgb, labels, organized=False)
    assert without_range.width == 18


def test_successive_calls_do_not_share_data() -> None:
    xyz, rgb, labels = synthetic_cloud()
    first = pack_pointcloud(xyz, rgb, labels, organized=True)
    snapshot = bytes(first.data)
    pack_pointcloud(xyz + 1, rgb, labels, organized=True)
    pack_pointcloud(xyz[:2], rgb[:2], labels[:2], organized=True)
    assert first.data == snapshot
    out = unpack_pointcloud(first.data, first.fields, first.point_step, 4, 5)
    np.testing.assert_array_equal(out["x"], xyz[..., 0])


def test_dense_with_no_valid_points_is_empty() -> None:
    xyz = np.full((2, 2, 3), np.nan, np.float32)
    cloud = pack_pointcloud(xyz, organized=False)
    assert (cloud.height, cloud.width, cloud.row_step, cloud.data) == (1, 0, 0, b"")


@pytest.mark.parametrize("stride, organized, max_range, with_rgb, label_dtype", [
    (1, True, None, True, np.uint8),
    (2, True, 6.0, True, np.uint8),
    (3, False, 6.0, True, np.uint16),
    (2, False, None, False, np.int64),
    (1, True, None, False, None),
    (2, True, 5.0, True, None),
])
def test_depth_to_cloud_equals_backproject_then_pack(stride, organized, max_range, with_rgb,
                                                     label_dtype, kernels) -> None:
    """The one-pass cloud is byte for byte the two-step one (NaN bits included)."""
    rng = np.random.default_rng(stride)
    depth = rng.uniform(0.3, 9.0, (31, 45)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    depth[0, :3] = (0.0, -1.0, np.inf)
    rgb = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8) if with_rgb else None
    labels = None if label_dtype is None else rng.integers(0, 300 if label_dtype != np.uint8
                                                           else 256, (31, 45)).astype(label_dtype)
    intr = Intrinsics(40.0, 42.0, 21.5, 14.0, 45, 31)
    sizes = []
    cloud = depth_to_cloud(depth, intr, rgb, labels, stride=stride, organized=organized,
                           max_range=max_range,
                           new_buffer=lambda n: sizes.append(n) or bytearray(n))
    ref = pack_pointcloud(backproject(depth, intr, stride),
                          None if rgb is None else rgb[::stride, ::stride],
                          None if labels is None else labels[::stride, ::stride],
                          organized=organized, max_range=max_range)
    assert bytes(cloud.data) == ref.data and sizes[-1] == len(ref.data)
    for f in ("height", "width", "fields", "point_step", "row_step", "is_dense"):
        assert getattr(cloud, f) == getattr(ref, f), f


def test_depth_to_cloud_hand_computed_and_bad_inputs(kernels) -> None:
    intr = Intrinsics(fx=2.0, fy=4.0, cx=1.0, cy=0.5, width=3, height=2)
    depth = np.array([[1.0, 2.0, 4.0], [0.5, 8.0, 3.0]], np.float32)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[1, 2] = (0x12, 0x34, 0x56)
    labels = np.array([[0, 1, 2], [3, 4, 65535]], np.uint16)
    cloud = depth_to_cloud(depth, intr, rgb, labels)
    assert cloud.is_dense and (cloud.height, cloud.width, cloud.point_step) == (2, 3, 20)
    out = unpack_pointcloud(cloud.data, cloud.fields, 20, 2, 3)
    # u = 2, v = 1, z = 3: x = (2 - 1) * 3 / 2, y = (1 - 0.5) * 3 / 4 (as backproject's test)
    assert (out["x"][1, 2], out["y"][1, 2], out["z"][1, 2]) == (1.5, 0.375, 3.0)
    assert out["rgb"].view(np.uint32)[1, 2] == 0x00123456 and out["label"][1, 2] == 65535
    raw = np.frombuffer(cloud.data, np.uint8).reshape(2, 3, 20)
    assert (raw[..., 15] == 0).all() and (raw[..., 18:] == 0).all()  # alpha, label padding
    with pytest.raises(ValueError, match="does not match intrinsics"):
        depth_to_cloud(depth[:, :2], intr)
    with pytest.raises(ValueError, match="rgb must be"):
        depth_to_cloud(depth, intr, rgb[:, :2])
    with pytest.raises(ValueError, match="labels must lie in"):
        depth_to_cloud(depth, intr, labels=np.full((2, 3), 70000, np.int32))
    with pytest.raises(ValueError, match="stride"):
        depth_to_cloud(depth, intr, stride=0)
    empty = depth_to_cloud(np.full((2, 3), np.nan, np.float32), intr, organized=False)
    assert (empty.height, empty.width, empty.row_step, bytes(empty.data)) == (1, 0, 0, b"")


def test_rgb_words_are_0x00rrggbb() -> None:
    rgb = np.array([[[1, 2, 3], [255, 254, 253]], [[16, 32, 64], [0, 0, 0]]], np.uint8)
    assert rgb_words(rgb).tolist() == [[0x010203, 0xFFFEFD], [0x102040, 0]]
    assert rgb_words(rgb, 2).tolist() == [[0x010203]]


def test_pack_rejects_bad_inputs() -> None:
    xyz, rgb, labels = synthetic_cloud()
    with pytest.raises(ValueError, match="xyz"):
        pack_pointcloud(xyz[..., :2], organized=True)
    with pytest.raises(ValueError, match="rgb"):
        pack_pointcloud(xyz, rgb.astype(np.float32), organized=True)
    with pytest.raises(ValueError, match=r"\[0, 65535\]"):
        pack_pointcloud(xyz, rgb, np.full((4, 5), -1), organized=True)
    with pytest.raises(ValueError, match=r"\[0, 65535\]"):
        pack_pointcloud(xyz, rgb, np.full((4, 5), 65536), organized=True)
    with pytest.raises(ValueError, match="integers"):
        pack_pointcloud(xyz, rgb, labels.astype(np.float32), organized=True)
    with pytest.raises(ValueError, match="labels"):
        pack_pointcloud(xyz, rgb, labels[:2], organized=True)


def test_unpack_accepts_pointfield_objects_and_array_data() -> None:
    xyz, rgb, labels = synthetic_cloud()
    cloud = pack_pointcloud(xyz, rgb, labels, organized=True)
    fields = [SimpleNamespace(name=n, offset=o, datatype=d, count=c)
              for n, o, d, c in cloud.fields]
    data = np.frombuffer(cloud.data, np.uint8)
    out = unpack_pointcloud(data, fields, cloud.point_step, 4, 5)
    np.testing.assert_array_equal(out["label"], labels)
    with pytest.raises(ValueError, match="bytes"):
        unpack_pointcloud(cloud.data[:-1], cloud.fields, cloud.point_step, 4, 5)


def test_rclpy_pointcloud2_message() -> None:
    msgs = pytest.importorskip("sensor_msgs.msg")
    xyz, rgb, labels = synthetic_cloud()
    cloud = pack_pointcloud(xyz, rgb, labels, organized=True)
    msg = msgs.PointCloud2(
        height=cloud.height, width=cloud.width, point_step=cloud.point_step,
        row_step=cloud.row_step, is_dense=cloud.is_dense, is_bigendian=cloud.is_bigendian,
        fields=[msgs.PointField(name=n, offset=o, datatype=d, count=c)
                for n, o, d, c in cloud.fields],
        data=cloud.data,
    )
    out = unpack_pointcloud(msg.data, msg.fields, msg.point_step, msg.height, msg.width)
    np.testing.assert_array_equal(out["z"], xyz[..., 2])


def test_kitti_lidar_depth_cloud(fixtures_dir: Path) -> None:
    """Real KITTI frame: sparse LiDAR depth + RGB image -> organized and dense clouds."""
    image = cv2.imread(str(fixtures_dir / KITTI_DRIVE / "image_02/data/0000000000.png"))
    depth_png = fixtures_dir / KITTI_DRIVE / "proj_depth/velodyne_raw/image_02/0000000000.png"
    raw = cv2.imread(str(depth_png), cv2.IMREAD_UNCHANGED)
    if raw is None:
        pytest.skip(f"KITTI LiDAR depth not found at {depth_png}")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    depth = raw.astype(np.float32) / 256.0
    assert rgb.shape == (375, 1242, 3) and depth.shape == (375, 1242)

    points = backproject(depth, KITTI_INTR)
    valid = depth > 0
    v, u = np.nonzero(valid)
    np.testing.assert_allclose(points[v, u, 0], (u - 609.5593) * depth[v, u] / 721.5377,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(points[v, u, 1], (v - 172.854) * depth[v, u] / 721.5377,
                               rtol=1e-5, atol=1e-5)
    # The camera is ~1.65 m above a road: most LiDAR points in the bottom rows lie below it.
    bottom = points[300:][valid[300:]]
    assert np.median(bottom[:, 1]) == pytest.approx(1.65, abs=0.3)

    organized = pack_pointcloud(points, rgb, organized=True, max_range=80.0)
    assert (organized.height, organized.width) == (375, 1242) and not organized.is_dense
    dense = pack_pointcloud(points, rgb, organized=False, max_range=80.0)
    expected = int((valid & (depth <= 80.0)).sum())
    assert dense.width == expected and dense.height == 1
    out = unpack_pointcloud(dense.data, dense.fields, dense.point_step, 1, dense.width)
    np.testing.assert_array_equal(unpack_rgb(out["rgb"])[0], rgb[valid & (depth <= 80.0)])
