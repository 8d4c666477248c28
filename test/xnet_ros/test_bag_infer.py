"""`xnet bag infer` on the KITTI MCAP fixture and on sqlite3/MCAP bags written here."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from xnet_model import Predictor
from xnet_ros.bag.cli import main
from xnet_ros.bag.infer import CameraInfoIndex
from xnet_ros.bag.io import BagReader, BagReadError
from xnet_ros.conversions import image_to_array
from xnet_ros.geometry import Intrinsics

KITTI = "rosbag/kitti_tiny_ros2_mcap"
KITTI_IMAGE = "/kitti/camera_color_left/image_raw"
KITTI_FRAME = "kitti_camera_color_left"
TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
BAG_OFFSET_NS = 5_000_000  # synthetic bags: bag time = header stamp + 5 ms, to tell them apart


def header(stamp_ns: int, frame_id: str = "cam"):
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                    frame_id=frame_id)


def camera_info(stamp_ns: int, fx: float, width: int = 64, height: int = 48):
    k = np.array([fx, 0, width / 2, 0, fx, height / 2, 0, 0, 1], dtype=np.float64)
    p = np.array([fx, 0, width / 2, 0, 0, fx, height / 2, 0, 0, 0, 1, 0], dtype=np.float64)
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi)


def frame_rgb(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def stamp_of(i: int) -> int:
    return 1_000_000_000_000 + i * 100_000_000


def write_bag(path: Path, n: int, *, storage: str = "sqlite3", camera_infos: list | None = None,
              compressed: bool = False, size: tuple[int, int] = (48, 64),
              empty_topics: bool = False) -> Path:
    """/cam/image_raw (rgb8), /cam/camera_info (one per frame unless given as (stamp, fx)
    pairs or []), and /cam/image_raw/compressed (PNG) when `compressed`."""
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    height, width = size
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        image = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        info = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo",
                                     typestore=TS)
        comp = (writer.add_connection("/cam/image_raw/compressed",
                                      "sensor_msgs/msg/CompressedImage", typestore=TS)
                if compressed else None)
        if empty_topics:
            return path
        infos = ([(stamp_of(i), 50.0) for i in range(n)] if camera_infos is None
                 else camera_infos)
        for stamp, fx in infos:
            msg = camera_info(stamp, fx, width, height)
            writer.write(info, stamp + BAG_OFFSET_NS, TS.serialize_cdr(msg, msg.__msgtype__))
        for i in range(n):
            rgb, stamp = frame_rgb(i, height, width), stamp_of(i)
            msg = T["sensor_msgs/msg/Image"](header=header(stamp), height=height, width=width,
                                             encoding="rgb8", is_bigendian=0, step=width * 3,
                                             data=rgb.reshape(-1))
            writer.write(image, stamp + BAG_OFFSET_NS, TS.serialize_cdr(msg, msg.__msgtype__))
            if comp is not None:
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                msg = T["sensor_msgs/msg/CompressedImage"](header=header(stamp), format="png",
                                                           data=png.reshape(-1))
                writer.write(comp, stamp + BAG_OFFSET_NS, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag timestamp, message)] with rosbags."""
    out: dict[str, list] = {}
    with BagReader(path) as bag:
        for topic, timestamp, raw in bag.messages():
            out.setdefault(topic, []).append(
                (timestamp, bag.deserialize(raw, bag.topics[topic].msgtype)))
    return out


def stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def image_array(msg) -> np.ndarray:
    return image_to_array(msg)


def expected_depth(predictor: Predictor, rgb: np.ndarray) -> np.ndarray:
    """What the node publishes: the prediction, NaN at or below the model's min_depth."""
    depth = predictor.predict(rgb).depth
    return np.where(depth > predictor.cfg.depth.min_depth, depth, np.nan).astype(np.float32)


# Pascal VOC colours of ids 1..10 = the default palette of classes 0..9 (10-class test model)
VOC_PALETTE_10 = np.array([[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
                           [0, 128, 128], [128, 128, 128], [64, 0, 0], [192, 0, 0],
                           [64, 128, 0]], np.uint8)
POINT_FIELD_DTYPES = {2: "u1", 4: "u2", 6: "u4", 7: "f4", 8: "f8"}  # sensor_msgs/PointField


def decode_points(msg) -> np.ndarray:
    """A PointCloud2's data as an (height, width) structured array, from its fields/offsets."""
    assert not msg.is_bigendian
    dtype = np.dtype({"names": [f.name for f in msg.fields],
                      "formats": ["<" + POINT_FIELD_DTYPES[f.datatype] for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    assert msg.row_step == msg.width * msg.point_step
    data = np.frombuffer(bytes(msg.data), dtype)
    return data.reshape(msg.height, msg.width)


def infer(*args: str) -> int:
    return main(["infer", *map(str, args), "--quiet"])


# ---------------------------------------------------------------------------------------------
# KITTI MCAP fixture


@pytest.fixture(scope="module")
def kitti_out(fixtures_dir, model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kitti") / "out"
    assert infer(fixtures_dir / KITTI, "--model", model_dir, "--image-topic", KITTI_IMAGE,
                 "--out", out) == 0
    return out


def test_kitti_outputs_match_node_topics_stamps_and_predictor(fixtures_dir, kitti_out,
                                                              predictor):
    inputs = read_bag(fixtures_dir / KITTI)
    out = read_bag(kitti_out)
    assert set(out) == {"/xnet/depth", "/xnet/depth/camera_info", "/xnet/semantic/labels",
                        "/xnet/semantic/color", "/xnet/points", "/xnet/semantic/class_table"}
    assert {t: len(v) for t, v in out.items()} == {
        **dict.fromkeys(set(out), 3), "/xnet/semantic/class_table": 1}
    images = inputs[KITTI_IMAGE]
    infos = inputs["/kitti/camera_color_left/camera_info"]
    for i, (bag_time, image) in enumerate(images):
        rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(375, 1242, 3)
        for topic in ("/xnet/depth", "/xnet/depth/camera_info", "/xnet/semantic/labels",
                      "/xnet/semantic/color", "/xnet/points"):
            out_time, msg = out[topic][i]
            assert out_time == bag_time
            assert stamp(msg) == stamp(image)
            assert msg.header.frame_id == KITTI_FRAME
        depth = out["/xnet/depth"][i][1]
        assert (depth.encoding, depth.height, depth.width, depth.step) == ("32FC1", 375, 1242,
                                                                           1242 * 4)
        np.testing.assert_allclose(image_array(depth), expected_depth(predictor, rgb),
                                   rtol=1e-6, atol=1e-6, equal_nan=True)
        labels = out["/xnet/semantic/labels"][i][1]
        assert (labels.encoding, labels.height, labels.width) == ("mono8", 375, 1242)
        np.testing.assert_array_equal(image_array(labels), predictor.predict(rgb).labels)
        color = out["/xnet/semantic/color"][i][1]
        assert (color.encoding, color.height, color.width) == ("rgb8", 375, 1242)
        info = out["/xnet/depth/camera_info"][i][1]
        assert (info.width, info.height) == (1242, 375)
        np.testing.assert_allclose(info.k, infos[i][1].k)
        np.testing.assert_array_equal(image_array(color), VOC_PALETTE_10[image_array(labels)])
        points = out["/xnet/points"][i][1]
        assert (points.height, points.width, points.point_step) == (188, 621, 20)  # stride 2
        assert [f.name for f in points.fields] == ["x", "y", "z", "rgb", "label"]
        cloud = decode_points(points)
        # the hand back-projection of every 2nd pixel of the published depth, with the input
        # camera_info's K: x = (u - cx) z / fx, y = (v - cy) z / fy
        fx, _, cx, _, fy, cy = infos[i][1].k[:6]
        z = image_array(depth)[::2, ::2].astype(np.float64)
        v, u = np.mgrid[0:375:2, 0:1242:2]
        np.testing.assert_allclose(cloud["z"], z, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(cloud["x"], (u - cx) * z / fx, rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        np.testing.assert_allclose(cloud["y"], (v - cy) * z / fy, rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        assert points.is_dense == bool(np.isfinite(z).all())
        # rgb: the float32 field holds the bits 0x00RRGGBB of the input pixel
        bits = cloud["rgb"].view(np.uint32)
        np.testing.assert_array_equal(
            np.stack([bits >> 16, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1), rgb[::2, ::2])
        assert not (bits >> 24).any()
        np.testing.assert_array_equal(cloud["label"], image_array(labels)[::2, ::2])
    table = out["/xnet/semantic/class_table"][0][1]
    assert [c.id for c in table.classes] == list(range(10))
    assert stamp(table) == stamp(images[0][1])


def test_kitti_mcap_output_decodes_with_mcap_ros2(kitti_out):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    counts: dict[str, int] = {}
    with open(next(kitti_out.glob("*.mcap")), "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            assert schema.encoding == "ros2msg"
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/xnet/depth":
                assert msg.encoding == "32FC1" and len(msg.data) == 375 * 1242 * 4
                assert msg.header.frame_id == KITTI_FRAME
                assert message.log_time == stamp(msg)  # KITTI: header stamp == bag time
            if channel.topic == "/xnet/semantic/class_table":
                assert [c.id for c in msg.classes] == list(range(10))
    assert counts["/xnet/depth"] == counts["/xnet/points"] == 3
    assert counts["/xnet/semantic/class_table"] == 1


def test_truncated_kitti_mcap_keeps_the_frames_before_the_damage(fixtures_dir, model_dir,
                                                                 tmp_path, capsys):
    source = next((fixtures_dir / KITTI).glob("*.mcap"))
    cut = tmp_path / "cut.mcap"
    data = source.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.75)])
    out = tmp_path / "out"
    assert infer(cut, "--model", model_dir, "--image-topic", KITTI_IMAGE, "--out", out) == 3
    assert "results for the frames read before" in capsys.readouterr().err
    depth = read_bag(out)["/xnet/depth"]
    full = read_bag(fixtures_dir / KITTI)[KITTI_IMAGE]
    assert 1 <= len(depth) < 3
    assert [t for t, _ in depth] == [t for t, _ in full[: len(depth)]]
    assert "xnet.incomplete" in (out / "metadata.yaml").read_text()


# ---------------------------------------------------------------------------------------------
# Synthetic bags


def test_every_2_and_sqlite3_output(tmp_path, model_dir, predictor):
    bag = write_bag(tmp_path / "in", 5)
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out,
                 "--every", "2", "--storage", "sqlite3") == 0
    assert list(out.glob("*.db3"))
    msgs = read_bag(out)
    assert [stamp(m) for _, m in msgs["/xnet/depth"]] == [stamp_of(i) for i in (0, 2, 4)]
    assert [t for t, _ in msgs["/xnet/depth"]] == [stamp_of(i) + BAG_OFFSET_NS for i in (0, 2, 4)]
    assert len(msgs["/xnet/points"]) == 3
    np.testing.assert_allclose(image_array(msgs["/xnet/depth"][1][1]),
                               expected_depth(predictor, frame_rgb(2)), rtol=1e-6, atol=1e-6,
                               equal_nan=True)


def test_compressed_images_and_explicit_camera_info(tmp_path, model_dir, predictor):
    bag = write_bag(tmp_path / "in", 2, compressed=True)
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw/compressed",
                 "--camera-info-topic", "/cam/camera_info", "--out", out) == 0
    msgs = read_bag(out)
    assert len(msgs["/xnet/points"]) == 2  # intrinsics found although not the sibling topic
    for i, (_, depth) in enumerate(msgs["/xnet/depth"]):
        np.testing.assert_allclose(image_array(depth), expected_depth(predictor, frame_rgb(i)),
                                   rtol=1e-6, atol=1e-6, equal_nan=True)


def test_copy_input_is_raw_and_namespace_is_applied(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 2, storage="mcap")
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out,
                 "--copy-input", "--out-namespace", "/foo/", "--no-points", "--no-color") == 0

    def raw(path):
        with Reader(path) as reader:
            return {(c.topic, t): bytes(d) for c, t, d in reader.messages()}

    copied, original = raw(out), raw(bag)
    with Reader(out) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert [(q.depth, q.durability.name) for q in qos["/foo/semantic/class_table"]] == [
        (1, "TRANSIENT_LOCAL")]
    assert [(q.depth, q.reliability.name) for q in qos["/foo/depth"]] == [(5, "RELIABLE")]
    assert {k: v for k, v in copied.items() if k in original} == original
    topics = {topic for topic, _ in copied}
    assert topics - {t for t, _ in original} == {
        "/foo/depth", "/foo/depth/camera_info", "/foo/semantic/labels",
        "/foo/semantic/class_table"}


def test_camera_info_latest_at_or_before_else_nearest(tmp_path, model_dir):
    index = CameraInfoIndex()
    for when, fx in ((200, 2.0), (100, 1.0), (300, 3.0)):
        index.add(when, Intrinsics(fx, fx, 0, 0, 10, 10))
    assert [index.lookup(t).fx for t in (50, 100, 150, 299, 300, 999)] == [1, 1, 1, 2, 3, 3]
    # In a bag: the camera changes fx before frame 2; frame 0 has none before it -> nearest.
    infos = [(stamp_of(0) + 1, 40.0), (stamp_of(2), 80.0)]
    bag = write_bag(tmp_path / "in", 3, camera_infos=infos)
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out) == 0
    fx = [m.k[0] for _, m in read_bag(out)["/xnet/depth/camera_info"]]
    assert fx == [40.0, 40.0, 80.0]


def test_output_size_scales_images_and_intrinsics(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out,
                 "--output-size", "24x32", "--points-stride", "2") == 0
    msgs = read_bag(out)
    depth, info, points = (msgs[t][0][1] for t in ("/xnet/depth", "/xnet/depth/camera_info",
                                                   "/xnet/points"))
    assert (depth.height, depth.width, info.height, info.width) == (24, 32, 24, 32)
    assert info.k[0] == pytest.approx(25.0)
    assert (points.height, points.width) == (12, 16)


def test_fallback_intrinsics_frame_id_and_scaled_camera_info(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 1, camera_infos=[])
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out,
                 "--fx", 30, "--frame-id", "optical") == 0
    msgs = read_bag(out)
    info = msgs["/xnet/depth/camera_info"][0][1]
    assert list(info.k) == [30.0, 0.0, 31.5, 0.0, 30.0, 23.5, 0.0, 0.0, 1.0]
    assert {m.header.frame_id for v in msgs.values() for _, m in v if hasattr(m, "height")} == \
        {"optical"}
    # camera_info at twice the image resolution (same aspect ratio) is scaled to it
    bag = tmp_path / "in2"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        image = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        conn = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo",
                                     typestore=TS)
        msg = camera_info(stamp_of(0), 100.0, width=128, height=96)
        writer.write(conn, stamp_of(0), TS.serialize_cdr(msg, msg.__msgtype__))
        msg = T["sensor_msgs/msg/Image"](header=header(stamp_of(0)), height=48, width=64,
                                         encoding="rgb8", is_bigendian=0, step=192,
                                         data=frame_rgb(0).reshape(-1))
        writer.write(image, stamp_of(0), TS.serialize_cdr(msg, msg.__msgtype__))
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out",
                 tmp_path / "out2") == 0
    info = read_bag(tmp_path / "out2")["/xnet/depth/camera_info"][0][1]
    assert info.k[0] == pytest.approx(50.0) and (info.width, info.height) == (64, 48)


def test_without_camera_info_no_points_and_one_warning(tmp_path, model_dir, caplog):
    bag = write_bag(tmp_path / "in", 3, camera_infos=[])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw",
                     "--out", out) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "/xnet/depth/camera_info and /xnet/points are not written" in warnings[0]
    msgs = read_bag(out)
    assert "/xnet/points" not in msgs and "/xnet/depth/camera_info" not in msgs
    assert len(msgs["/xnet/depth"]) == 3


def test_truncated_synthetic_mcap_is_salvaged(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 12, storage="mcap", size=(240, 320))
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])  # metadata.yaml still there, footer gone
    with BagReader(bag) as reader:
        assert reader.salvaged
        count = 0
        with pytest.raises(BagReadError):
            for _ in reader.messages(["/cam/image_raw"]):
                count += 1
    assert 0 < count < 12  # the messages before the damage are read, then the error
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out) == 3
    stamps = [stamp(m) for _, m in read_bag(out)["/xnet/depth"]]
    assert 0 < len(stamps) < 12 and stamps == [stamp_of(i) for i in range(len(stamps))]
    assert len(stamps) == count  # every frame that could be read was written


def test_corrupt_sqlite3_page_keeps_the_frames_before(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 12, size=(240, 320))
    db3 = next(bag.glob("*.db3"))
    data = bytearray(db3.read_bytes())
    start = int(len(data) * 0.6)
    data[start:start + 4096] = b"\x13" * 4096  # one page of garbage in the message table
    db3.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out) == 3
    assert "CorruptError" in capsys.readouterr().err
    stamps = [stamp(m) for _, m in read_bag(out)["/xnet/depth"]]
    assert 0 < len(stamps) < 12 and stamps == [stamp_of(i) for i in range(len(stamps))]


def test_bag_dir_without_metadata_reads_its_storage_file(tmp_path, model_dir):
    bag = write_bag(tmp_path / "in", 2)
    (bag / "metadata.yaml").unlink()  # as after a killed `ros2 bag record`
    out = tmp_path / "out"
    assert infer(bag, "--model", model_dir, "--image-topic", "/cam/image_raw", "--out", out) == 0
    assert len(read_bag(out)["/xnet/depth"]) == 2


# ---------------------------------------------------------------------------------------------
# Errors: exit status 1, a message, no traceback


def run_error(capsys, *args) -> str:
    assert infer(*args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_topic_lists_the_bags_topics(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 1)
    err = run_error(capsys, bag, "--model", model_dir, "--image-topic", "/nope", "--out",
                    tmp_path / "out")
    assert "'/nope' is not in bag" in err
    listing = {line.split()[0]: line.split()[1:] for line in err.splitlines()
               if line.startswith("  /")}
    assert listing == {"/cam/image_raw": ["sensor_msgs/msg/Image", "(1", "msgs)"],
                       "/cam/camera_info": ["sensor_msgs/msg/CameraInfo", "(1", "msgs)"]}
    assert not (tmp_path / "out").exists()


def test_wrong_message_type(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 1)
    err = run_error(capsys, bag, "--model", model_dir, "--image-topic", "/cam/camera_info",
                    "--out", tmp_path / "out")
    assert "has type sensor_msgs/msg/CameraInfo, expected sensor_msgs/msg/Image or " \
           "sensor_msgs/msg/CompressedImage" in err
    err = run_error(capsys, bag, "--model", model_dir, "--image-topic", "/cam/image_raw",
                    "--camera-info-topic", "/cam/image_raw", "--out", tmp_path / "out")
    assert "camera_info topic '/cam/image_raw' has type sensor_msgs/msg/Image" in err


def test_empty_bag_and_topic_without_messages(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 0, empty_topics=True)
    err = run_error(capsys, bag, "--model", model_dir, "--image-topic", "/cam/image_raw",
                    "--out", tmp_path / "out")
    assert "image topic '/cam/image_raw' has no messages" in err
    with Writer(tmp_path / "none", version=8):
        pass
    err = run_error(capsys, tmp_path / "none", "--model", model_dir, "--image-topic", "/x",
                    "--out", tmp_path / "out")
    assert "is empty: it has no topics" in err


def test_missing_or_corrupt_model_and_existing_output(tmp_path, model_dir, capsys):
    bag = write_bag(tmp_path / "in", 1)
    args = ("--image-topic", "/cam/image_raw", "--out", tmp_path / "out")
    err = run_error(capsys, bag, "--model", tmp_path / "no_model", *args)
    assert "model directory not found" in err
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "config.json").write_text("{not json")
    err = run_error(capsys, bag, "--model", broken, *args)
    assert "cannot load model from" in err
    err = run_error(capsys, tmp_path / "missing_bag", "--model", model_dir, *args)
    assert "bag not found" in err
    (tmp_path / "out").mkdir()
    err = run_error(capsys, bag, "--model", model_dir, *args)
    assert "exists already" in err
