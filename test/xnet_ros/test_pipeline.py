"""The one frame path without ROS: decode -> intrinsics -> predict -> build_outputs -> timings."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from xnet_model.metadata import ModelMetadata
from xnet_ros.conversions import ImageConversionError
from xnet_ros.geometry import Intrinsics
from xnet_ros.outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from xnet_ros.params import NodeParams
from xnet_ros.pipeline import (
    EVERYTHING,
    FrameInput,
    FramePipeline,
    FrameSettings,
    ModelLoadError,
    PredictedFrame,
    auto_cpu_streams,
    fit_intrinsics,
    inference_lanes,
    lanes_advice,
    load_predictor,
    overlaps_delivery,
    stamp_ns,
)

META = ModelMetadata(name="fake", tasks=("depth", "semantic"), mean=(0.5, 0.5, 0.5),
                     std=(0.5, 0.5, 0.5), min_depth=0.5, max_depth=10.0, num_classes=3,
                     class_names=("a", "b", "c"),
                     palette=((10, 20, 30), (40, 50, 60), (70, 80, 90)))


class FakePredictor:
    """Depth = 2 m everywhere except a 0.25 m column 0; labels = column index mod 3."""

    meta = META

    def __init__(self):
        self.seen = []

    def predict(self, rgb):
        self.seen.append(rgb.shape)
        h, w = rgb.shape[:2]
        depth = np.full((h, w), 2.0, np.float32)
        depth[:, 0] = 0.25
        labels = (np.arange(w, dtype=np.uint8) % 3)[None].repeat(h, 0)
        return SimpleNamespace(depth=depth, labels=labels,
                               timings={"pre_ms": 1.0, "infer_ms": 5.0, "post_ms": 2.0})


def image_msg(h=4, w=6, sec=10, frame_id="cam", encoding="rgb8"):
    rgb = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=5), frame_id=frame_id)
    return SimpleNamespace(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                           step=w * 3, data=rgb.tobytes()), rgb


def test_stamp_ns():
    assert stamp_ns(SimpleNamespace(sec=3, nanosec=7)) == 3_000_000_007


def test_fit_intrinsics_uses_scales_or_falls_back():
    info = Intrinsics(100.0, 110.0, 31.5, 23.5, 64, 48)
    assert fit_intrinsics(info, 48, 64) == (info, "")
    # half the resolution: fx/2, fy/2, (c + 0.5)/2 - 0.5 (by hand)
    assert fit_intrinsics(info, 24, 32) == (Intrinsics(50.0, 55.0, 15.5, 11.5, 32, 24), "")
    intr, problem = fit_intrinsics(info, 48, 48)  # another aspect ratio: not used
    assert intr is None and problem == ("camera_info is for 64x48 but the images are 48x48: "
                                        "not using it")
    intr, problem = fit_intrinsics(info, 48, 48, fallback=(80.0, 81.0, 0.0, 20.0))
    assert intr == Intrinsics(80.0, 81.0, 23.5, 20.0, 48, 48) and problem  # cx 0 = centre
    assert fit_intrinsics(None, 48, 64) == (None, "")


def test_run_builds_every_wanted_output_with_the_models_palette_and_min_depth():
    warnings = []
    pipe = FramePipeline(FakePredictor(), FrameSettings(fallback_intrinsics=(5.0, 5.0, 0, 0)),
                         on_warning=lambda key, message: warnings.append(key))
    msg, rgb = image_msg()
    result = pipe.run(FrameInput(msg))
    assert set(result.outputs.fields) == set(ALL_OUTPUTS)
    assert result.frame_id == "cam" and result.header is msg.header
    assert (result.input_size, result.output_size) == ((6, 4), (6, 4))
    depth = np.frombuffer(result.outputs.fields[DEPTH]["data"], "<f4").reshape(4, 6)
    assert np.isnan(depth[:, 0]).all() and (depth[:, 1:] == 2.0).all()  # <= min_depth 0.5: NaN
    color = np.frombuffer(result.outputs.fields[COLOR]["data"], np.uint8).reshape(4, 6, 3)
    assert color[0, :3].tolist() == [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    assert result.outputs.fields[DEPTH_INFO]["k"] == [5.0, 0.0, 2.5, 0.0, 5.0, 1.5, 0.0, 0.0, 1.0]
    t = result.timings
    assert t["infer_ms"] == 5.0 and t["pre_ms"] >= 1.0 and t["post_ms"] >= 2.0
    assert set(t) == {"pre_ms", "infer_ms", "post_ms", "total_ms"}
    assert warnings == []


def test_wanted_is_asked_after_decoding_and_nothing_wanted_skips_the_frame():
    predictor = FakePredictor()
    wanted = {"now": frozenset({LABELS})}
    pipe = FramePipeline(predictor, wanted=lambda camera: wanted["now"])
    msg, _ = image_msg()
    assert set(pipe.run(FrameInput(msg)).outputs.fields) == {LABELS}
    wanted["now"] = frozenset()
    assert pipe.run(FrameInput(msg)) is None
    assert len(predictor.seen) == 1  # the skipped frame never reached the model
    with pytest.raises(ImageConversionError):  # bad input raises (the worker counts it)
        pipe.run(FrameInput(image_msg(encoding="yuv9000")[0]))


def test_warnings_once_per_kind_until_reset():
    warnings = []
    pipe = FramePipeline(FakePredictor(), on_warning=lambda key, message: warnings.append(key))
    pipe.camera_info = Intrinsics(100.0, 100.0, 10.0, 10.0, 20, 20)  # square: wrong aspect
    msg, _ = image_msg(frame_id="")
    for _ in range(3):
        result = pipe.run(FrameInput(msg))
        assert POINTS not in result.outputs.fields and DEPTH in result.outputs.fields
    assert warnings == ["info_size", "no_intrinsics", "frame_id"]
    pipe.reset_warnings()
    pipe.run(FrameInput(msg))
    assert warnings.count("no_intrinsics") == 2


def test_settings_from_node_params_and_per_frame_replacement():
    p = NodeParams(output_width=3, output_height=2, fx=5.0, fy=6.0, frame_id="opt",
                   points_stride=1, points_max_range=0.0, min_depth=1.0)
    s = FrameSettings.from_params(p)
    assert s == FrameSettings(output_size=(2, 3), min_depth=1.0, points_stride=1,
                              points_max_range=None, points_organized=True,
                              fallback_intrinsics=(5.0, 6.0, 0.0, 0.0), frame_id="opt")
    assert FrameSettings.from_params(NodeParams()).fallback_intrinsics is None
    pipe = FramePipeline(FakePredictor(), s)
    result = pipe.run(FrameInput(image_msg()[0]))
    assert result.output_size == (3, 2) and result.frame_id == "opt"
    assert result.outputs.fields[DEPTH]["width"] == 3
    # min_depth 1.0 instead of the model's 0.5 still keeps 2 m, and 0 means the model's
    assert pipe.output_options().min_depth == 1.0
    pipe.settings = FrameSettings()
    assert pipe.output_options().min_depth == 0.5


def test_load_predictor_names_what_to_fix(tmp_path):
    with pytest.raises(ModelLoadError, match=r"^model: .* missing or corrupt"):
        load_predictor(tmp_path)  # a directory without config.json


def test_load_predictor_names_the_device_or_the_backend_by_the_error_type(model_dir):
    import torch

    with pytest.raises(ModelLoadError, match=r"^device: device 'gpu7' is not a device"):
        load_predictor(model_dir, device="gpu7")
    # a backend whose message mentions a device is still the backend's problem
    with pytest.raises(ModelLoadError, match=r"^backend: unknown backend 'device_x'"):
        load_predictor(model_dir, backend="device_x")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match=r"^device: .*CUDA is not available"):
            load_predictor(model_dir, device="cuda")


def test_load_predictor_names_cpu_streams(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XNET_ENGINE_CACHE", str(tmp_path / "engines"))
    import torch

    threads = torch.get_num_threads()
    try:
        assert load_predictor(model_dir, cpu_streams=2).cpu_streams == 2
        torch.set_num_threads(threads)
        with pytest.raises(ModelLoadError, match=r"^cpu_streams: -1 must be an integer >= 1"):
            load_predictor(model_dir, cpu_streams=-1)
        # 0 = automatic: one stream per frame of a batch, up to torch's threads, on the CPU
        assert load_predictor(model_dir, cpu_streams=0, batch=1).cpu_streams == 1
        torch.set_num_threads(2)
        assert load_predictor(model_dir, cpu_streams=0, device="cpu", batch=4).cpu_streams == 2
        # onnxruntime divides its own threads among the streams and leaves torch's alone
        torch.set_num_threads(2)
        ort = load_predictor(model_dir, "onnxruntime", "cpu", cpu_streams=0, batch=4)
        assert ort.cpu_streams == 2 and ort.backend.threads == 1
        assert torch.get_num_threads() == 2 and inference_lanes(ort, max_batch=4) == 2
        auto = load_predictor(model_dir, "auto", "cpu", cpu_streams=0, batch=4)
        assert auto.cpu_streams == 2 and auto.backend.inner.name == "onnxruntime"
        assert auto.backend.inner.threads == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_auto_cpu_streams_only_for_torch_and_onnxruntime_on_the_cpu_with_a_batch():
    import torch

    threads = torch.get_num_threads()
    assert auto_cpu_streams("torch", "cpu", 4) == min(4, threads)
    assert auto_cpu_streams("torch", "cpu", 1) == 1
    assert auto_cpu_streams("torch", "cuda:0", 4) == 1
    assert auto_cpu_streams("onnxruntime", "cpu", 4) == min(4, threads)
    assert auto_cpu_streams("onnxruntime", "cpu", 1) == 1
    assert auto_cpu_streams("tensorrt", "cpu", 4) == 1
    assert auto_cpu_streams("auto", "cpu", 4) == min(4, threads)  # onnxruntime -> torch
    assert auto_cpu_streams("onnxruntime,torch", "cpu", 4) == min(4, threads)
    assert auto_cpu_streams("tensorrt,torch", "cpu", 4) == 1
    assert auto_cpu_streams("torch", "no-such-device", 4) == 1  # the Predictor says why
    assert auto_cpu_streams("torch", None, 4) == (1 if torch.cuda.is_available()
                                                   else min(4, threads))


# ------------------------------------------------------------ several cameras, one forward pass
class BatchPredictor(FakePredictor):
    """FakePredictor with a fixed network size: `predict_batch` records each forward pass."""

    def __init__(self, fail_on=None):
        super().__init__()
        self.batches = []
        self.fail_on = fail_on

    def network_size(self, height, width):
        return (32, 48)

    def predict_batch(self, images):
        self.batches.append([im.shape[:2] for im in images])
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("forward pass failed")
        return [self.predict(im) for im in images]


def test_run_batch_one_forward_pass_for_cameras_of_different_sizes():
    predictor = BatchPredictor()
    pipe = FramePipeline(predictor)
    pipe.set_camera_info(SimpleNamespace(width=6, height=4, k=[5.0, 0, 2.5, 0, 5.0, 1.5, 0, 0, 1],
                                         d=[], distortion_model="plumb_bob"), "front")
    front, _ = image_msg(h=4, w=6, frame_id="front_optical")
    left, _ = image_msg(h=8, w=10, sec=11, frame_id="left_optical")
    results = pipe.run_batch([FrameInput(front, camera="front"), FrameInput(left, camera="left")])
    assert predictor.batches == [[(4, 6), (8, 10)]]  # one forward pass for both
    r_front, r_left = results
    assert (r_front.camera, r_front.frame_id, r_front.input_size) == ("front", "front_optical",
                                                                      (6, 4))
    assert (r_left.camera, r_left.frame_id, r_left.output_size) == ("left", "left_optical",
                                                                    (10, 8))
    assert r_left.outputs.fields[DEPTH]["width"] == 10  # outputs back at each camera's size
    # each camera has its own calibration: front has one, left none (no points)
    assert POINTS in r_front.outputs.fields and POINTS not in r_left.outputs.fields
    assert pipe.calibration("front").intrinsics.fx == 5.0 and pipe.calibration("left") is None


def test_run_batch_bad_frame_fails_alone_and_forward_failure_fails_the_batch():
    predictor = BatchPredictor(fail_on=2)
    wanted = {"front": frozenset({DEPTH}), "left": frozenset({LABELS}), "idle": frozenset()}
    pipe = FramePipeline(predictor, wanted=lambda camera: wanted[camera])
    good, _ = image_msg()
    bad, _ = image_msg(encoding="yuv9000")
    results = pipe.run_batch([FrameInput(bad, camera="front"), FrameInput(good, camera="left"),
                              FrameInput(good, camera="idle")])
    assert isinstance(results[0], ImageConversionError)
    assert set(results[1].outputs.fields) == {LABELS}  # left's wanted outputs only
    assert results[2] is None  # nothing wanted from "idle": skipped, not predicted
    assert predictor.batches == [[(4, 6)]]
    results = pipe.run_batch([FrameInput(good, camera="front"), FrameInput(good, camera="left")])
    assert [str(r) for r in results] == ["forward pass failed"] * 2


def test_infer_batch_then_finish_predicted_equals_run_batch():
    predictor = BatchPredictor()
    pipe = FramePipeline(predictor, wanted=lambda camera: {"": EVERYTHING, "idle": frozenset()}
                         .get(camera, EVERYTHING))
    good, _ = image_msg()
    bad, _ = image_msg(encoding="yuv9000")
    frames = [FrameInput(good), FrameInput(bad, camera="b"), FrameInput(good, camera="idle")]
    staged = pipe.infer_batch(frames)
    assert isinstance(staged[0], PredictedFrame) and staged[0].frame.camera == ""
    assert isinstance(staged[1], ImageConversionError) and staged[2] is None
    assert predictor.batches == [[(4, 6)]]  # the forward pass ran; no outputs built yet
    finished = pipe.finish_predicted(staged[0])
    whole = pipe.run_batch(frames)[0]
    for name, fields in whole.outputs.fields.items():
        for key, value in fields.items():
            mine = finished.outputs.fields[name][key]
            assert bytes(mine) == bytes(value) if key == "data" else mine == value, (name, key)
    broken = PredictedFrame(staged[0].frame, SimpleNamespace(depth="not an array", labels=None,
                                                             timings={}))
    assert isinstance(pipe.finish_predicted(broken), Exception)  # returned, not raised


def test_delivery_overlaps_the_forward_pass_where_it_leaves_the_cpu_free():
    def predictor(device, streams=1):
        return SimpleNamespace(backend=SimpleNamespace(device=SimpleNamespace(type=device)),
                               cpu_streams=streams)

    assert overlaps_delivery(predictor("cuda"))
    assert overlaps_delivery(predictor("cpu", streams=2))
    assert not overlaps_delivery(predictor("cpu"))  # one multi-threaded CPU forward pass
    assert not overlaps_delivery(FakePredictor())  # no backend: runs on the CPU


def test_lanes_for_independent_cpu_streams_and_one_forward_pass_per_lane(model_dir):
    def predictor(device, streams=1):
        return SimpleNamespace(backend=SimpleNamespace(device=SimpleNamespace(type=device)),
                               cpu_streams=streams)

    assert inference_lanes(predictor("cpu", streams=2), max_batch=4) == 2
    assert inference_lanes(predictor("cpu", streams=4), max_batch=2) == 2  # no idle lanes
    assert inference_lanes(predictor("cpu"), max_batch=4) == 1
    assert inference_lanes(predictor("cuda", streams=2), max_batch=4) == 1  # one GPU batch
    assert inference_lanes(FakePredictor(), max_batch=4) == 1
    real = load_predictor(model_dir, cpu_streams=1)
    threads = []
    real.backend.infer = lambda batch, infer=real.backend.infer: (
        threads.append((threading.current_thread().name, len(batch))), infer(batch))[1]
    real.cpu_streams = 2  # as if loaded with 2 streams: a batch of 2 splits into 2 threads
    pipe = FramePipeline(real)
    msg, _ = image_msg(h=32, w=48)
    pipe.run_batch([FrameInput(msg, camera="a"), FrameInput(msg, camera="b")])
    assert sorted(n for _, n in threads) == [1, 1] and len({t for t, _ in threads}) == 2
    threads.clear()
    pipe.split_batches = False  # the node's lanes: one pass per call, on the calling thread
    pipe.run_batch([FrameInput(msg, camera="a"), FrameInput(msg, camera="b")])
    assert threads == [(threading.current_thread().name, 2)]


def test_torch_lanes_point_to_onnxruntime(model_dir):
    import torch

    threads = torch.get_num_threads()
    try:
        assert "backend: onnxruntime" in lanes_advice(load_predictor(model_dir, cpu_streams=2))
    finally:
        torch.set_num_threads(threads)
    assert lanes_advice(load_predictor(model_dir, cpu_streams=1)) == ""
    assert lanes_advice(FakePredictor()) == ""


def test_warnings_once_per_kind_and_camera():
    messages = []
    pipe = FramePipeline(FakePredictor(), wanted=lambda camera: frozenset({POINTS}),
                         on_warning=lambda key, message: messages.append((key, message)))
    msg, _ = image_msg()
    for camera in ("front", "front", "left", ""):
        pipe.run(FrameInput(msg, camera=camera))
    assert [key for key, _ in messages] == ["no_intrinsics"] * 3
    assert messages[0][1].startswith("camera 'front': no camera_info received")
    assert messages[1][1].startswith("camera 'left': no camera_info received")
    assert messages[2][1].startswith("no camera_info received")  # the single camera: no name


# ------------------------------------------------------------------------------ rectification
class DepthFromGrey(FakePredictor):
    """A model that reads metric depth off the image: z = grey / 40 (m)."""

    def predict(self, rgb):
        prediction = super().predict(rgb)
        prediction.depth = rgb[..., 0].astype(np.float32) / 40.0
        return prediction


def distorted_plane_frame():
    from distorted_camera import H, W, raw_plane_depth

    grey = np.round(raw_plane_depth("plumb_bob") * 40.0).clip(0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="cam")
    return SimpleNamespace(header=header, height=H, width=W, encoding="rgb8", is_bigendian=0,
                           step=W * 3, data=rgb.tobytes())


def cloud_points(result) -> np.ndarray:
    from xnet_ros.geometry import unpack_pointcloud

    pc = result.outputs.fields[POINTS]
    cloud = unpack_pointcloud(pc.data, pc.fields, pc.point_step, pc.height, pc.width)
    xyz = np.stack([cloud[k] for k in "xyz"], -1).reshape(-1, 3).astype(np.float64)
    return xyz[np.isfinite(xyz).all(1)]


def test_distorted_camera_is_rectified_and_its_plane_stays_a_plane():
    from distorted_camera import CX, CY, FX, FY, PLANE, camera_info, plane_fit

    p = (0.9 * FX, 0.0, CX, 0.0, 0.0, 0.9 * FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0)
    pipe = FramePipeline(DepthFromGrey(), FrameSettings(points_stride=1, min_depth=0.1))
    pipe.set_camera_info(camera_info("plumb_bob", p=p))
    result = pipe.run(FrameInput(distorted_plane_frame()))
    coef, rms = plane_fit(cloud_points(result))
    # the depth image is quantised to 1/40 m: the fit is good to about that
    np.testing.assert_allclose(coef, PLANE, atol=0.02)
    assert rms < 0.02
    # outputs and depth/camera_info are in the rectified camera: P, no distortion
    info = result.outputs.fields[DEPTH_INFO]
    assert info["k"] == [0.9 * FX, 0.0, CX, 0.0, 0.9 * FY, CY, 0.0, 0.0, 1.0]
    assert info["d"] == [] and info["distortion_model"] == "plumb_bob"
    assert info["p"][:3] == [0.9 * FX, 0.0, CX]
    # rectify off: the same frame taken as a pinhole image is bent (one warning says so)
    warnings = []
    pipe.on_warning = lambda key, message: warnings.append(key)
    pipe.settings = FrameSettings(points_stride=1, min_depth=0.1, rectify="off")
    unrectified = pipe.run(FrameInput(distorted_plane_frame()))
    assert plane_fit(cloud_points(unrectified))[1] > 0.03
    assert unrectified.outputs.fields[DEPTH_INFO]["k"][0] == FX  # K, as received
    assert warnings == ["distortion_ignored"]


def test_camera_info_the_node_cannot_rectify_is_rejected_naming_the_model():
    from distorted_camera import camera_info

    pipe = FramePipeline(FakePredictor())
    pipe.set_camera_info(camera_info("plumb_bob"))
    with pytest.raises(ValueError, match="'fisheye_x' cannot be rectified"):
        pipe.set_camera_info(camera_info("fisheye_x", d=(0.1, 0.0, 0.0, 0.0)))
    assert pipe.calibration().distortion_model == "plumb_bob"  # the previous one stays
    pipe.settings = FrameSettings(rectify="off")  # used as a pinhole camera (K) instead
    assert pipe.set_camera_info(camera_info("fisheye_x", d=(0.1, 0.0, 0.0, 0.0))).distorted
