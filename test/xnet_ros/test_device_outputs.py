"""The torch post-processing (device_outputs) against the numpy path, on CPU tensors here and
on CUDA where there is one; the Predictor's raw hand-over of the network's outputs."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from xnet_ros.colorize import default_palette
from xnet_ros.device_outputs import build_outputs_torch, linear_taps
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
)

PALETTE = np.random.default_rng(3).integers(0, 256, (10, 3), dtype=np.uint8)


def frame(src, size, seed=0, classes=12):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.6, 9.0, src).astype(np.float32)
    depth[rng.random(src) < 0.1] = 0.2  # below min_depth 0.5: NaN
    labels = rng.integers(0, classes, src).astype(np.int32)  # the graph's argmax dtype
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    intr = Intrinsics(0.8 * size[1], 0.8 * size[1], (size[1] - 1) / 2, (size[0] - 1) / 2,
                      size[1], size[0])
    return rgb, depth, labels, intr


def assert_same_outputs(a, b):
    """Equal fields; depth and xyz within 1-2 float32 ulps (NaN at the same places); labels,
    colours and the cloud's colour and label bits identical."""
    assert set(a.fields) == set(b.fields)
    for name, x in a.fields.items():
        y = b.fields[name]
        if name == POINTS:
            for f in ("height", "width", "fields", "point_step", "row_step", "is_dense"):
                assert getattr(x, f) == getattr(y, f), f
            cx = unpack_pointcloud(x.data, x.fields, x.point_step, x.height, x.width)
            cy = unpack_pointcloud(y.data, y.fields, y.point_step, y.height, y.width)
            for f in cx:
                if f in "xyz":
                    np.testing.assert_allclose(cx[f], cy[f], rtol=1e-6, equal_nan=True)
                    np.testing.assert_array_equal(np.isnan(cx[f]), np.isnan(cy[f]))
                else:
                    np.testing.assert_array_equal(cx[f].view(np.uint32) if f == "rgb" else cx[f],
                                                  cy[f].view(np.uint32) if f == "rgb" else cy[f])
        elif name == DEPTH:
            assert {k: v for k, v in x.items() if k != "data"} == \
                {k: v for k, v in y.items() if k != "data"}
            dx, dy = (np.frombuffer(f["data"], np.float32) for f in (x, y))
            np.testing.assert_allclose(dx, dy, rtol=1e-6, equal_nan=True)
            np.testing.assert_array_equal(np.isnan(dx), np.isnan(dy))
        elif name == DEPTH_INFO:
            assert x == y
        else:
            assert {k: v for k, v in x.items() if k != "data"} == \
                {k: v for k, v in y.items() if k != "data"}
            assert bytes(x["data"]) == bytes(y["data"]), name


CASES = [  # (network size, image size, output size, stride, organized, max range, resolution)
    ((120, 160), (480, 640), None, 2, True, None, "output"),
    ((120, 160), (1080, 1920), None, 2, True, None, "output"),
    ((120, 160), (720, 1280), None, 3, False, 5.0, "output"),
    ((120, 160), (480, 640), (240, 320), 1, True, None, "output"),
    ((120, 160), (480, 640), (120, 160), 2, True, 4.0, "output"),
    ((480, 640), (480, 640), (361, 500), 2, True, None, "output"),
    ((120, 160), (480, 640), None, 2, True, None, "network"),
    ((96, 128), (100, 130), None, 1, False, None, "network"),
]


def _compare(device, src, size, out_size, stride, organized, max_range, resolution):
    rgb, depth, labels, intr = frame(src, size)
    opts = OutputOptions(output_size=out_size, min_depth=0.5, points_stride=stride,
                         points_organized=organized, points_max_range=max_range,
                         palette=PALETTE, num_classes=10, points_resolution=resolution)
    expected = build_outputs(rgb, depth, labels, intr, opts)
    got = build_outputs(rgb, torch.from_numpy(depth).to(device),
                        torch.from_numpy(labels).to(device), intr, opts, buffers=BufferPool())
    assert set(got.fields) == set(ALL_OUTPUTS)
    assert_same_outputs(expected, got)


@pytest.mark.parametrize("src, size, out_size, stride, organized, max_range, resolution", CASES)
def test_torch_on_cpu_tensors_matches_the_numpy_path(src, size, out_size, stride, organized,
                                                     max_range, resolution):
    _compare("cpu", src, size, out_size, stride, organized, max_range, resolution)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("src, size, out_size, stride, organized, max_range, resolution", CASES)
def test_torch_on_cuda_matches_the_numpy_path(src, size, out_size, stride, organized, max_range,
                                              resolution):
    _compare("cuda", src, size, out_size, stride, organized, max_range, resolution)


def test_many_classes_default_palette_and_wanted_subsets():
    rgb, depth, labels, intr = frame((60, 80), (240, 320), classes=300)
    opts = OutputOptions(min_depth=0.5, points_stride=2, num_classes=300)
    for wanted in (set(ALL_OUTPUTS), {COLOR}, {POINTS}, {LABELS, DEPTH_INFO}):
        a = build_outputs(rgb, depth, labels, intr, opts, wanted)
        b = build_outputs_torch(rgb, torch.from_numpy(depth), torch.from_numpy(labels), intr,
                                opts, wanted)
        assert set(b.fields) == wanted
        assert_same_outputs(a, b)
    mono16 = b.fields[LABELS]
    assert mono16["encoding"] == "mono16"
    got = np.frombuffer(mono16["data"], np.uint16).reshape(240, 320)
    assert got.max() >= 256  # ids above 255 survive (int16 holds the uint16 bits)
    lut = default_palette(300)
    color = build_outputs_torch(rgb, torch.from_numpy(depth), torch.from_numpy(labels), intr,
                                opts, {COLOR}).fields[COLOR]
    np.testing.assert_array_equal(
        np.frombuffer(color["data"], np.uint8).reshape(240, 320, 3), lut[got])


@pytest.mark.parametrize("src, dst", [(160, 640), (160, 1920), (120, 1080), (640, 500),
                                      (160, 1242), (5, 3)])
def test_linear_taps_reproduce_cv2_within_float_rounding(src, dst):
    """cv2 works out the coordinate in double: its taps, rows blended first in float32, give
    cv2's image up to float rounding (cv2 fuses multiply-adds: ~4e-7 relative here; torch's
    own `interpolate`, coordinate in float32, is up to 8e-5 off at 1920). Images of one row
    take another cv2 code path; the node's never have one."""
    image = np.random.default_rng(src).uniform(0.5, 9.0, (src, src)).astype(np.float32)
    x0, x1, w0, w1 = linear_taps(src, dst)
    rows = image[:, x0] * w0 + image[:, x1] * w1
    ours = rows[x0] * w0[:, None] + rows[x1] * w1[:, None]
    ref = cv2.resize(image, (dst, dst), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert (w0 + w1 == 1).all() and x0.min() >= 0 and x1.max() <= src - 1


class FakeDeviceBackend:
    """A backend whose outputs 'stay on the device' (CPU tensors here): depth 2 m + row index,
    labels = column index mod 10, at the network size of the input batch."""

    device = SimpleNamespace(type="cuda")

    def __init__(self):
        self.uploads = 0

    def upload(self, batch):
        self.uploads += 1
        return torch.from_numpy(batch)

    def run(self, x):
        n, _, h, w = x.shape
        depth = 2.0 + torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        labels = (torch.arange(w, dtype=torch.int32) % 10)[None].expand(h, w)
        return depth[None, None].repeat(n, 1, 1, 1), labels[None].repeat(n, 1, 1)

    def infer(self, batch):
        raise AssertionError("raw predictions on a CUDA backend must not be downloaded")


def test_predictor_hands_over_device_tensors_at_the_network_size(predictor, monkeypatch):
    """raw=True on a 'CUDA' backend: tensors at the network size, straight from `run` (no
    download), the device synchronised once for honest infer_ms; build_outputs finishes them
    like numpy predictions."""
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(predictor, "backend", FakeDeviceBackend())
    images = [np.zeros((64, 128, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    preds = predictor.predict_batch(images, raw=True)
    assert len(synced) == 1 and predictor.backend.uploads == 1
    for pred in preds:
        assert isinstance(pred.depth, torch.Tensor) and tuple(pred.depth.shape) == (32, 64)
        assert isinstance(pred.labels, torch.Tensor) and tuple(pred.labels.shape) == (32, 64)
    rgb = images[0]
    opts = OutputOptions.for_model(predictor.meta)
    on_device = build_outputs(rgb, preds[0].depth, preds[0].labels, None, opts, {DEPTH, LABELS})
    on_host = build_outputs(rgb, preds[0].depth.numpy(), preds[0].labels.numpy(), None, opts,
                            {DEPTH, LABELS})
    assert_same_outputs(on_host, on_device)
    depth = np.frombuffer(on_device.fields[DEPTH]["data"], np.float32).reshape(64, 128)
    assert depth[0, 0] == 2.0 and depth[-1, -1] == 2.0 + 31  # rows 2 m + index, stretched x2


def test_predictor_raw_on_cpu_returns_numpy_at_the_network_size(predictor):
    image = np.random.default_rng(0).integers(0, 256, (64, 100, 3), dtype=np.uint8)
    raw = predictor.predict(image, raw=True)
    full = predictor.predict(image)
    h, w = predictor.network_size(64, 100)
    assert raw.depth.shape == raw.labels.shape == (h, w) == (32, 64)
    assert isinstance(raw.depth, np.ndarray) and full.depth.shape == (64, 100)
    # the old contract is the raw outputs resized with cv2 (what build_outputs now does)
    np.testing.assert_array_equal(
        full.depth, cv2.resize(raw.depth, (100, 64), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(
        full.labels, cv2.resize(raw.labels, (100, 64), interpolation=cv2.INTER_NEAREST))
