"""Export: InferenceGraph, torch.export (.pt2) and ONNX parity with eager PyTorch on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xnet_model import build_model
from xnet_model.config import ABLATION_ROWS
from xnet_model.runtime import export
from xnet_model.runtime.cli import export_main

ort = pytest.importorskip("onnxruntime")

DEPTH_TOL = 1e-4  # metres, fp32
LABEL_AGREEMENT = 0.999
SIZES = [(64, 96), (96, 128)]  # the trace size and a second size for the dynamic check


def tiny_model(ablation: str | None = "xnet", **overrides):
    """timm's test_convnext as encoder and decoder: a 7-row-capable model that exports in
    seconds."""
    torch.manual_seed(0)
    spec = {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"},
            "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 10},
            "data": {"input_size": None}}
    spec.update(overrides)
    return build_model(spec, ablation=ablation).eval()


def eager(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        depth, labels = export.InferenceGraph(model)(torch.from_numpy(x))
    return depth.numpy(), labels.numpy()


def assert_parity(ref, got):
    depth_ref, labels_ref = ref
    depth, labels = (np.asarray(t) for t in got)
    assert depth.shape == depth_ref.shape and labels.shape == labels_ref.shape
    assert labels.dtype == np.int32
    assert float(np.abs(depth - depth_ref).max()) <= DEPTH_TOL
    assert float((labels == labels_ref).mean()) >= LABEL_AGREEMENT


def random_batch(h: int, w: int, n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def test_inference_graph_outputs_per_head():
    x = torch.from_numpy(random_batch(64, 96, n=2))
    both = export.InferenceGraph(tiny_model())
    depth, labels = both(x)
    assert depth.shape == (2, 1, 64, 96) and labels.shape == (2, 64, 96)
    assert labels.dtype == torch.int32 and int(labels.min()) >= 0 and int(labels.max()) < 10
    with torch.no_grad():
        logits = both.model(x)["semantic"]
    assert torch.equal(labels, logits.argmax(1).to(torch.int32))

    depth, labels = export.InferenceGraph(tiny_model(semantic=None))(x)
    assert depth.shape == (2, 1, 64, 96) and labels.numel() == 0
    depth, labels = export.InferenceGraph(tiny_model(depth=None))(x)
    assert depth.numel() == 0 and labels.shape == (2, 64, 96)


def test_network_stride_is_the_coarsest_feature_stride():
    assert export.network_stride(tiny_model()) == 32


# ~10 s per row on an idle 2-core machine: the xNet row stays in the fast suite, the other six
# run in the full one
@pytest.mark.parametrize("row", [r if r == "xnet" else pytest.param(r, marks=pytest.mark.slow)
                                 for r in ABLATION_ROWS])
def test_exported_program_and_onnx_match_eager(row, tmp_path):
    """Every Table-1 row exports dynamically; .pt2 and ONNX Runtime match eager at the trace
    size and at a second size (and batch 2)."""
    model = tiny_model(row)
    program, result = export.export_program(model, *SIZES[0])
    assert result.dynamic and not result.messages

    pt2 = tmp_path / f"{row}.pt2"
    torch.export.save(program, str(pt2))
    loaded = torch.export.load(str(pt2)).module()
    onnx_result = export.export_onnx(model, tmp_path / f"{row}.onnx", *SIZES[0],
                                     exported=(program, result))
    assert onnx_result.dynamic
    session = ort.InferenceSession(str(onnx_result.path), providers=["CPUExecutionProvider"])

    for (h, w), n in zip(SIZES, (1, 2)):
        x = random_batch(h, w, n)
        ref = eager(model, x)
        with torch.no_grad():
            assert_parity(ref, [t.numpy() for t in loaded(torch.from_numpy(x))])
        assert_parity(ref, session.run(None, {export.INPUT_NAME: x}))


def test_metadata_travels_with_the_files(tmp_path):
    model = tiny_model(semantic=None)
    result = export.save_exported(model, tmp_path / "m.pt2", 64, 96)
    _, meta = export.load_exported(result.path)
    assert meta["tasks"] == ["depth"] and meta["dynamic"] is True and meta["stride"] == 32
    assert meta["input_size"] == [64, 96] and meta["max_depth"] == 10.0

    export.export_onnx(model, tmp_path / "m.onnx", 64, 96)
    meta = export.read_onnx_metadata(tmp_path / "m.onnx")
    assert meta["tasks"] == ["depth"] and meta["num_classes"] == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    depth, labels = session.run(None, {"image": random_batch(64, 96)})
    assert depth.shape == (1, 1, 64, 96) and labels.size == 0


def test_size_off_the_stride_exports_static_with_a_message(tmp_path):
    model = tiny_model()
    result = export.export_onnx(model, tmp_path / "s.onnx", 80, 96)
    assert not result.dynamic
    assert "not a multiple of the network stride 32" in result.messages[0]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = random_batch(80, 96)
    assert_parity(eager(model, x), session.run(None, {"image": x}))
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"image": random_batch(96, 128)})


def test_dynamic_export_failure_falls_back_to_static(monkeypatch, caplog):
    def broken(stride):
        raise RuntimeError("guard on a data-dependent shape")

    monkeypatch.setattr(export, "_dynamic_shapes", broken)
    model = tiny_model()
    with caplog.at_level("WARNING"):
        program, result = export.export_program(model, 64, 96)
    assert not result.dynamic
    assert "dynamic-shape export failed" in result.messages[0]
    assert "data-dependent" in result.messages[0] and "static 64x96" in result.messages[0]
    assert "dynamic-shape export failed" in caplog.text
    x = random_batch(64, 96)
    with torch.no_grad():
        assert_parity(eager(model, x), [t.numpy() for t in program.module()(torch.from_numpy(x))])


def test_cli_export_onnx_and_pt2(tmp_path, capsys):
    model = tiny_model()
    model.save(tmp_path / "model")
    out = tmp_path / "out" / "x.onnx"
    rc = export_main(["--model", str(tmp_path / "model"), "--format", "onnx", "--height", "64",
                      "--width", "96", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "dynamic batch/height/width" in text and "labels equal 100.0000%" in text

    rc = export_main(["--model", str(tmp_path / "model"), "--format", "exported",
                      "--height", "64", "--width", "96", "--static"])
    text = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "model" / "xnet_64x96.pt2").is_file()
    assert "static 1x3x64x96" in text


def test_cli_export_rejects_bad_requests(tmp_path, capsys):
    tiny_model().save(tmp_path / "model")
    model = str(tmp_path / "model")
    assert export_main(["--model", model, "--format", "onnx", "--precision", "fp16",
                        "--height", "64", "--width", "96"]) == 2
    assert "applies to --format tensorrt only" in capsys.readouterr().err
    assert export_main(["--model", model, "--format", "onnx"]) == 2  # no size anywhere
    assert "--height and --width" in capsys.readouterr().err


def test_cli_export_tensorrt_explains_why_not(tmp_path, capsys):
    from xnet_model.runtime.tensorrt_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here: covered by the gpu tests")
    tiny_model().save(tmp_path / "model")
    rc = export_main(["--model", str(tmp_path / "model"), "--format", "tensorrt",
                      "--height", "64", "--width", "96", "--precision", "fp16"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "cannot build a TensorRT engine on this machine" in err and reason in err
