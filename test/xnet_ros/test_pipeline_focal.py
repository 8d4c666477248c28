"""A camera-aware model in the frame path: each camera's fx reaches the Predictor, a camera
without one is warned about once, and single-camera models see no change."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import torch

from xnet_model import Predictor, build_model
from xnet_model.metadata import ModelMetadata
from xnet_ros.geometry import Intrinsics
from xnet_ros.outputs import DEPTH
from xnet_ros.pipeline import FrameInput, FramePipeline, FrameSettings

META = ModelMetadata(name="fake", tasks=("depth",), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     min_depth=0.1, max_depth=10.0)
AWARE = dataclasses.replace(META, canonical_focal=80.0)


class RecordingPredictor:
    """2 m everywhere; records the fx each forward pass was given ('absent': no fx keyword)."""

    def __init__(self, meta):
        self.meta = meta
        self.fx = []

    def network_size(self, height, width):
        return (4, 6)

    def predict_batch(self, images, **kwargs):
        self.fx.append(kwargs.get("fx", "absent"))
        return [SimpleNamespace(depth=np.full(im.shape[:2], 2.0, np.float32), labels=None,
                                timings={}) for im in images]


def image_msg(h=4, w=6, frame_id="cam"):
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id=frame_id)
    data = np.zeros((h, w, 3), np.uint8).tobytes()
    return SimpleNamespace(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                           step=w * 3, data=data)


def depth_of(result, h, w):
    return np.frombuffer(result.outputs.fields[DEPTH]["data"], "<f4").reshape(h, w)


def test_each_camera_gives_its_own_focal_and_one_warning_without_one():
    warnings = []
    predictor = RecordingPredictor(AWARE)
    pipe = FramePipeline(predictor, wanted=lambda camera: frozenset({DEPTH}),
                         on_warning=lambda key, message: warnings.append((key, message)))
    # camera_info for 12x8 images; the frames are 6x4: fx scales with the image (50 -> 25)
    pipe.set_camera_info(SimpleNamespace(width=12, height=8, k=[50.0, 0, 5.5, 0, 50.0, 3.5, 0,
                                                                0, 1], d=[],
                                         distortion_model="plumb_bob"), "front")
    for _ in range(2):
        pipe.run_batch([FrameInput(image_msg(), camera="front"),
                        FrameInput(image_msg(), camera="left")])
    assert predictor.fx == [[25.0, None], [25.0, None]]
    assert [key for key, _ in warnings] == ["no_focal"]  # once, for "left" only
    assert "left" in warnings[0][1] and "canonical fx 80 px" in warnings[0][1]


def test_the_fallback_fx_parameter_is_a_focal_too():
    predictor = RecordingPredictor(AWARE)
    pipe = FramePipeline(predictor, FrameSettings(fallback_intrinsics=(30.0, 30.0, 0.0, 0.0)))
    pipe.run(FrameInput(image_msg()))
    assert predictor.fx == [[30.0]]


def test_a_single_camera_model_is_called_as_before():
    warnings = []
    predictor = RecordingPredictor(META)
    pipe = FramePipeline(predictor, on_warning=lambda key, message: warnings.append(key))
    pipe.camera_info = Intrinsics(50.0, 50.0, 2.5, 1.5, 6, 4)
    pipe.run(FrameInput(image_msg()))
    pipe.camera_info = None
    pipe.run(FrameInput(image_msg()))
    assert predictor.fx == ["absent", "absent"] and "no_focal" not in warnings


def test_camera_info_fx_gives_metric_depth_end_to_end():
    """A real Predictor whose depth head says 7.5 canonical metres everywhere (canonical fx
    80 px at its 120x160 input). A 240x320 camera with fx 320 px has fx 160 px at the input:
    7.5 x 160 / 80 = 15 m in the published depth image; without camera_info 7.5 m."""
    torch.manual_seed(0)
    model = build_model({"encoder": {"name": "test_convnext"},
                         "decoder": {"name": "test_convnext"}, "depth": {"max_depth": 10.0},
                         "data": {"input_size": [120, 160], "canonical_focal": 80.0}}).eval()
    with torch.no_grad():
        model.heads.depth.weight.zero_()
        model.heads.depth.bias.fill_(math.log(3.0))  # sigmoid(ln 3) x 10 m = 7.5 m
    pipe = FramePipeline(Predictor(model), wanted=lambda camera: frozenset({DEPTH}))
    assert np.allclose(depth_of(pipe.run(FrameInput(image_msg(240, 320))), 240, 320), 7.5,
                       rtol=1e-5)
    pipe.camera_info = Intrinsics(320.0, 320.0, 159.5, 119.5, 320, 240)
    assert np.allclose(depth_of(pipe.run(FrameInput(image_msg(240, 320))), 240, 320), 15.0,
                       rtol=1e-5)
