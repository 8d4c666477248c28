"""Export: InferenceGraph, torch.export (.pt2) and ONNX parity with eager PyTorch on CPU."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xnet_model import build_model, model_digest
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


# ---- deploy artifacts (xnet export --format pt2): no timm, no nn.Module -----------------------

DEMO_MODEL = Path(__file__).resolve().parents[2] / "xnet_model" / "assets" / "demo_model"


@pytest.fixture(scope="module")
def demo_artifact(tmp_path_factory):
    from xnet_model.persistence import load_model
    from xnet_model.runtime.artifact import export_pt2_artifact

    out = tmp_path_factory.mktemp("artifact") / "demo_pt2"
    path, result, meta = export_pt2_artifact(load_model(DEMO_MODEL), out, 120, 160,
                                             model_path=DEMO_MODEL)
    return path


def test_pt2_artifact_of_the_demo_model_matches_eager(demo_artifact):
    """The trained demo model (real weights) on a synthetic 480x640 room: depth within 1e-4 m
    of the eager model, labels identical."""
    from xnet_model import Predictor
    from xnet_model.data.synthetic import render_scene

    image = render_scene(7, 480, 640).rgb
    eager, artifact = Predictor(DEMO_MODEL), Predictor(demo_artifact)
    assert artifact.backend.name == "pt2" and artifact.backend.model is None
    ref, got = eager.predict(image), artifact.predict(image)
    assert got.depth.shape == (480, 640) and got.labels.dtype == np.uint8
    assert float(np.abs(got.depth - ref.depth).max()) <= DEPTH_TOL
    assert float((got.labels == ref.labels).mean()) >= LABEL_AGREEMENT
    meta, info = artifact.meta, artifact.meta.artifact
    assert dataclasses.replace(meta, artifact=None) == eager.meta  # same classes, range, ...
    assert (info.format, info.program, info.precision, info.static) == \
        ("pt2", "program.pt2", "fp32", True)
    assert info.accepted_sizes() == "exactly 1x3x120x160 (N x 3 x H x W)"
    assert info.model_digest == model_digest(DEMO_MODEL)
    assert info.versions["torch"] == torch.__version__
    assert artifact.cfg.name == "demo_synthetic"  # the stored copy of the model config


def test_static_pt2_artifact_takes_several_cameras_and_cpu_streams(demo_artifact):
    """A batch-1 program runs a batch of several frames one frame at a time, and splits its
    torch threads for the node's lanes like the torch backend (a multi-camera node on the CPU
    picks lanes automatically: it used to fail to configure with an artifact)."""
    from xnet_model import Predictor
    from xnet_model.data.synthetic import render_scene

    images = [render_scene(seed, 120, 160).rgb for seed in (1, 2, 3)]
    one = Predictor(demo_artifact)
    singles = [one.predict(image) for image in images]
    threads = torch.get_num_threads()
    try:
        for streams in (1, 2):
            p = Predictor(demo_artifact, cpu_streams=streams)
            assert torch.get_num_threads() == max(1, threads // streams)
            for ref, got in zip(singles, p.predict_batch(images)):
                # other thread counts sum in another order: float rounding apart
                assert float(np.abs(got.depth - ref.depth).max()) <= DEPTH_TOL
                assert float((got.labels == ref.labels).mean()) >= LABEL_AGREEMENT
            torch.set_num_threads(threads)
    finally:
        torch.set_num_threads(threads)


def test_artifact_loads_without_timm_or_the_network(demo_artifact):
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import xnet_model\n"
        "assert 'torch' not in sys.modules, 'import xnet_model imported torch'\n"
        "from xnet_model import Predictor\n"
        f"p = Predictor({str(demo_artifact)!r})\n"
        "pred = p.predict(np.zeros((48, 64, 3), np.uint8))\n"
        "assert pred.depth.shape == (48, 64)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'timm' or m in\n"
        "             ('xnet_model.xnet', 'xnet_model.encoder', 'xnet_model.decoder'))\n"
        "print('imported:', bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imported: []" in out.stdout


def test_dynamic_pt2_artifact_takes_its_range_and_names_it_otherwise(tmp_path):
    from xnet_model import Predictor
    from xnet_model.runtime.artifact import export_pt2_artifact
    from xnet_model.runtime.backends import BackendError

    model = tiny_model()  # no data.input_size: free size, rounded up to the stride
    path, result, meta = export_pt2_artifact(model, tmp_path / "dyn", 64, 96)
    assert result.dynamic and meta.input_size is None and meta.size_multiple == 32
    assert meta.artifact.accepted_sizes() == ("batch 1..64, height 64..4096 and width "
                                              "64..4096 in multiples of 32")
    p = Predictor(path)
    image = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    assert p.network_size(70, 100) == (96, 128)
    ref = Predictor(model).predict(image)
    got = p.predict(image)
    assert float(np.abs(got.depth - ref.depth).max()) <= DEPTH_TOL
    with pytest.raises(BackendError, match=r"multiples of 32; got 1x3x80x96"):
        p.backend.infer(random_batch(80, 96))
    with pytest.raises(BackendError, match=r"a 5000x64 image runs at 5024x64, but .*height "
                                           r"64\.\.4096"):
        p.predict(np.zeros((5000, 64, 3), np.uint8))


def test_artifact_backend_names_and_broken_artifacts(demo_artifact, tmp_path):
    import shutil

    from xnet_model import Predictor
    from xnet_model.runtime.artifact import ArtifactError
    from xnet_model.runtime.backends import BackendError

    with pytest.raises(BackendError, match="pt2 deploy artifact: backend must be one of auto, "
                                           "pt2, torch .got 'onnxruntime'"):
        Predictor(demo_artifact, backend="onnxruntime")
    assert Predictor(demo_artifact, backend="tensorrt,torch").backend.name == "pt2"
    bf16 = Predictor(demo_artifact, backend="auto", precision="bf16")
    assert bf16.backend.describe() == "pt2 program (bf16) on cpu"
    broken = tmp_path / "broken"
    shutil.copytree(demo_artifact, broken)
    (broken / "program.pt2").unlink()
    with pytest.raises(ArtifactError, match="program file program.pt2 is missing"):
        Predictor(broken)


def test_cli_export_pt2_writes_an_artifact(tmp_path, capsys):
    model = tiny_model()
    model.save(tmp_path / "model")
    out = tmp_path / "deploy"
    rc = export_main(["--model", str(tmp_path / "model"), "--format", "pt2", "--height", "64",
                      "--width", "96", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert (out / "metadata.json").is_file() and (out / "program.pt2").is_file()
    assert "wrote deploy artifact" in text and "in multiples of 32" in text
    assert "labels equal 100.0000%" in text
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    rc = export_main(["--model", str(tmp_path / "model"), "--format", "pt2", "--height", "64",
                      "--width", "96", "--out", str(tmp_path / "occupied"), "--no-verify"])
    assert rc == 1 and "is not a deploy artifact" in capsys.readouterr().err
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"


def test_cli_export_tensorrt_writes_an_artifact_the_predictor_runs(tmp_path, capsys,
                                                                   monkeypatch):
    """`--format tensorrt` with a fake Torch-TensorRT (fake_torch_tensorrt.py, 2.13 API):
    engine built into the cache, copied into an artifact that runs without the model and
    refuses another GPU."""
    import json

    import fake_torch_tensorrt

    from xnet_model import Predictor
    from xnet_model.runtime import tensorrt_backend
    from xnet_model.runtime.backends import BackendError

    trt = fake_torch_tensorrt.v2_13()
    monkeypatch.setattr(tensorrt_backend, "unavailable_reason", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "import_torch_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_backend, "cuda_device", lambda d: torch.device("cpu", 0))
    model = tiny_model(data={"input_size": [64, 96]})
    model.save(tmp_path / "model")
    out = tmp_path / "trt"
    rc = export_main(["--model", str(tmp_path / "model"), "--format", "tensorrt",
                      "--precision", "fp32", "--cache-dir", str(tmp_path / "cache"),
                      "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "TensorRT engine built" in text and "wrote deploy artifact" in text
    meta = json.loads((out / "metadata.json").read_text())
    info = meta["artifact"]
    assert (info["format"], info["precision"], info["program"]) == ("tensorrt", "fp32",
                                                                    "program.pt2")
    assert info["model_digest"] == model_digest(tmp_path / "model")
    assert set(info["target"]) >= {"gpu_name", "compute_capability", "multiprocessors",
                                    "tensorrt", "torch_tensorrt", "torch"}
    p = Predictor(out, backend="tensorrt")
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    ref = Predictor(model).predict(image)
    got = p.predict(image)
    assert float(np.abs(got.depth - ref.depth).max()) <= DEPTH_TOL
    assert len(trt.calls_of("compile")) == 1 and len(trt.calls_of("load")) == 2
    with pytest.raises(BackendError, match="backend must be one of auto, tensorrt"):
        Predictor(out, backend="torch")
    info["target"]["gpu_name"] = "NVIDIA Orin"
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="built for another machine: gpu_name 'NVIDIA Orin'"):
        Predictor(out, backend="auto")
