"""The one frame path without ROS: decode -> intrinsics -> predict -> build_outputs -> timings."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from xnet_model.metadata import ModelMetadata
from xnet_ros.conversions import ImageConversionError
from xnet_ros.geometry import Intrinsics
from xnet_ros.outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from xnet_ros.params import NodeParams
from xnet_ros.pipeline import (
    FrameInput,
    FramePipeline,
    FrameSettings,
    ModelLoadError,
    fit_intrinsics,
    load_predictor,
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
    pipe = FramePipeline(predictor, wanted=lambda: wanted["now"])
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
