"""Predictor on the real fixture images: shapes, dtypes, resolution, BGR, batches, errors."""

import math
import threading

import cv2
import numpy as np
import pytest
import torch
from tiny import TINY

from xnet_model import Predictor, build_model

NYU = "nyu/mmseg_pseudo_nyu/images/bookstore_0001d_00001.jpg"
KITTI = "kitti/KITTI_tiny/2011_09_26/2011_09_26_drive_0023_sync/image_02/data/0000000000.png"
ADE = "ade20k/images/validation/ADE_val_00000001.jpg"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    build_model(TINY, data={"input_size": [96, 128]}).save(d)
    return Predictor(d)


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize(("rel", "shape"), [(NYU, (120, 160)), (KITTI, (375, 1242)), (ADE, None)])
def test_real_images_come_back_at_input_resolution(predictor, fixtures_dir, rel, shape):
    image = read_rgb(fixtures_dir / rel)
    if shape is not None:
        assert image.shape[:2] == shape
    pred = predictor.predict(image)
    assert pred.depth.shape == image.shape[:2] and pred.depth.dtype == np.float32
    assert pred.labels.shape == image.shape[:2] and pred.labels.dtype == np.uint8
    assert np.isfinite(pred.depth).all()
    assert pred.depth.min() > 0 and pred.depth.max() <= 10.0
    assert pred.labels.max() < 5
    assert set(pred.timings) == {"pre_ms", "infer_ms", "post_ms"}


def test_network_resolution_output_equals_direct_model_call(predictor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pred = predictor.predict(image)
    x = (image.astype(np.float32) / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32)
    with torch.no_grad():
        out = predictor.backend.model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    np.testing.assert_allclose(pred.depth, out["depth"][0, 0].numpy(), atol=1e-5)
    assert (pred.labels == out["semantic"][0].argmax(0).numpy()).mean() > 0.999


def test_depth_is_sigmoid_of_the_head_conv_times_max_depth(fixtures_dir):
    """Depth from set head weights, recomputed with numpy from the features entering the heads
    (at the network size); with a zero weight it is sigmoid(bias) * max_depth everywhere, also
    after resizing back to a real image's size."""
    torch.manual_seed(0)
    model = build_model(TINY, data={"input_size": [96, 128]}).eval()
    channels = model.heads.depth.in_channels
    weight = np.linspace(-0.5, 0.5, channels)
    with torch.no_grad():
        model.heads.depth.weight.copy_(torch.from_numpy(weight).reshape(1, channels, 1, 1))
        model.heads.depth.bias.fill_(0.25)
    features = []
    model.heads.register_forward_pre_hook(lambda module, args: features.append(args[0]))
    image = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    depth = Predictor(model).predict(image).depth
    (f,) = features
    logit = np.einsum("c,chw->hw", weight, f[0].numpy().astype(np.float64)) + 0.25
    np.testing.assert_allclose(depth, 10.0 / (1.0 + np.exp(-logit)), rtol=1e-5, atol=1e-5)

    with torch.no_grad():
        model.heads.depth.weight.zero_()
        model.heads.depth.bias.fill_(math.log(3.0))  # sigmoid(ln 3) = 3 / (1 + 3) = 0.75
    depth = Predictor(model).predict(read_rgb(fixtures_dir / KITTI)).depth
    assert depth.shape == (375, 1242)
    np.testing.assert_allclose(depth, 7.5, rtol=1e-6)  # 0.75 * max_depth 10 m


def test_bgr_flag_equals_rgb_input(predictor):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    a = predictor.predict(rgb)
    b = predictor.predict(np.ascontiguousarray(rgb[..., ::-1]), bgr=True)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_preprocess_is_the_reference_normalisation_bit_for_bit(predictor):
    """Channels-first arithmetic (fast) gives exactly the bits of the straightforward form."""
    rng = np.random.default_rng(3)
    for shape in ((48, 64, 3), (37, 53, 3), (480, 640, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        h, w = predictor.network_size(*shape[:2])
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        mean = np.asarray(predictor.meta.mean, np.float32).reshape(1, 1, 3) * 255.0
        inv_std = 1.0 / (np.asarray(predictor.meta.std, np.float32).reshape(1, 1, 3) * 255.0)
        reference = np.ascontiguousarray(((small.astype(np.float32) - mean) * inv_std)
                                         .transpose(2, 0, 1))
        got = predictor.preprocess(image)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, reference)


def test_batch_equals_single_calls(predictor):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(96, 128, 3), (50, 70, 3)]]
    batch = predictor.predict_batch(images)
    for image, pred in zip(images, batch):
        single = predictor.predict(image)
        assert pred.depth.shape == image.shape[:2]
        np.testing.assert_allclose(pred.depth, single.depth, atol=1e-4)


def test_large_class_count_uses_uint16(tmp_path):
    build_model(TINY, semantic={"num_classes": 300}, data={"input_size": [64, 64]}).save(tmp_path)
    pred = Predictor(tmp_path).predict(np.zeros((40, 50, 3), np.uint8))
    assert pred.labels.dtype == np.uint16 and pred.labels.shape == (40, 50)


def test_without_input_size_rounds_to_the_stride(tmp_path):
    build_model(TINY, semantic=None).save(tmp_path)
    p = Predictor(tmp_path)
    assert p.network_size(375, 1242) == (384, 1248)
    pred = p.predict(np.zeros((37, 45, 3), np.uint8))
    assert pred.labels is None and pred.depth.shape == (37, 45)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((10, 10, 4), np.uint8)])
def test_bad_images_are_rejected(predictor, bad):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predictor.predict(bad)


def test_cpu_streams_split_a_batch_into_concurrent_forwards():
    """The same outputs as one forward, no thread left behind, clear errors for bad values."""
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    one = Predictor(model).predict_batch(images)
    before = set(threading.enumerate())
    try:
        two = Predictor(model, cpu_streams=2)
        assert two.cpu_streams == 2 and torch.get_num_threads() == max(1, threads // 2)
        seen = []
        infer = two.backend.infer
        two.backend.infer = lambda batch: seen.append(len(batch)) or infer(batch)
        split = two.predict_batch(images)
        assert sorted(seen) == [1, 2]  # 3 images: sub-batches of 2 and 1, run at once
        for a, b in zip(one, split):
            np.testing.assert_allclose(a.depth, b.depth, rtol=0, atol=1e-5)
            assert (a.labels != b.labels).mean() < 1e-3
        assert set(threading.enumerate()) == before
        assert Predictor(model, cpu_streams=2).predict(images[0]).depth.shape == (48, 64)
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="cpu_streams"):
                Predictor(model, cpu_streams=bad)
    finally:
        torch.set_num_threads(threads)


def test_cpu_streams_report_a_failing_sub_batch():
    threads = torch.get_num_threads()
    try:
        p = Predictor(build_model(TINY).eval(), cpu_streams=2)

        def infer(batch):
            raise RuntimeError("boom in a sub-batch")

        p.backend.infer = infer
        with pytest.raises(RuntimeError, match="boom in a sub-batch"):
            p.predict_batch([np.zeros((48, 64, 3), np.uint8)] * 2)
    finally:
        torch.set_num_threads(threads)
