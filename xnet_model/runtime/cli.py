"""`xnet export` and `xnet bench` (dispatched from xnet_model/cli.py)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import ConfigError
from ..weights import WeightsError
from .backends import BackendError

if TYPE_CHECKING:
    from ..xnet import XNet

# onnx / exported: one graph file; pt2 / tensorrt: a deploy artifact directory (artifact.py)
FORMATS = ("onnx", "exported", "pt2", "tensorrt")


def load_model_arg(spec: str, ablation: str | None = None) -> tuple[XNet, Path | None, str]:
    """(model, saved dir or None, label) from a saved model directory or a variant name."""
    from ..persistence import load_model
    from ..xnet import CONFIG_FILE, build_model

    path = Path(spec)
    if (path / CONFIG_FILE).is_file():
        if ablation:
            raise ConfigError("--ablation applies to variant names, not saved models")
        return load_model(path), path, path.name
    torch.manual_seed(0)  # random weights, but the same ones every run
    model = build_model(spec, ablation=ablation).eval()
    label = spec if not ablation else f"{spec} [{ablation}]"
    return model, None, label


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HxW, e.g. 480x640") from exc
    return h, w


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xnet export", description=(
        "Export a saved xNet: --format pt2 / tensorrt write a deploy artifact directory "
        "(program + metadata.json) that Predictor and the node load without timm; onnx / "
        "exported write one graph file. tensorrt also fills the engine cache; run it on the "
        "target machine (engines are specific to the GPU and TensorRT version)."))
    p.add_argument("--model", required=True, help="saved model directory (or a variant name)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--height", type=int, help="network input height (default: data.input_size)")
    p.add_argument("--width", type=int, help="network input width (default: data.input_size)")
    p.add_argument("--precision", default=None, choices=("fp32", "fp16", "int8"),
                   help="tensorrt: fp16 (default), fp32 or int8 (needs --calib); others: fp32")
    p.add_argument("--out", type=Path, help="output: onnx / exported a file (default: next to "
                   "the model as xnet_<H>x<W>.onnx / .pt2); pt2 / tensorrt a directory "
                   "(default: ./<model>-<format>-<precision>-<H>x<W>)")
    p.add_argument("--device", default=None, help="pt2: device the program runs on (cpu, "
                   "cuda; default cpu); tensorrt: the GPU (default cuda)")
    p.add_argument("--calib", type=Path, help="directory of calibration images for int8 "
                   "(and fp16 autocast reference data on Torch-TensorRT >= 2.10)")
    p.add_argument("--batch", type=int, default=1, help="tensorrt engine batch size")
    p.add_argument("--min-size", type=parse_size, help="tensorrt: smallest HxW of a dynamic "
                   "engine (multiples of the network stride; default: a static engine)")
    p.add_argument("--max-size", type=parse_size, help="tensorrt: largest HxW of a dynamic "
                   "engine")
    p.add_argument("--max-batch", type=int, help="tensorrt: largest batch (default --batch)")
    p.add_argument("--cache-only", action="store_true",
                   help="tensorrt: only fill the engine cache, write no artifact directory")
    p.add_argument("--static", action="store_true",
                   help="export a fixed-size graph (default: dynamic batch/height/width)")
    p.add_argument("--cache-dir", type=Path, help="engine cache (default: $XNET_ENGINE_CACHE "
                   "or ~/.cache/xnet/engines)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the parity check of the exported graph against eager PyTorch")
    return p


def verify_export(model: XNet, run, height: int, width: int) -> tuple[float, float]:
    """(max abs depth difference, fraction of equal labels) of `run(x)` against eager."""
    from .export import InferenceGraph

    x = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (1, 3, height, width)).astype(np.float32))
    with torch.no_grad():
        ref = [t.numpy() for t in InferenceGraph(model)(x)]
        got = [np.asarray(t) for t in run(x)]
    depth_diff = float(np.abs(ref[0] - got[0]).max()) if ref[0].size else 0.0
    labels_equal = float((ref[1] == got[1]).mean()) if ref[1].size else 1.0
    return depth_diff, labels_equal


def export_main(argv: list[str]) -> int:
    args = _export_parser().parse_args(argv)
    from . import export

    try:
        model, model_path, _ = load_model_arg(str(args.model))
    except (ConfigError, WeightsError, OSError) as exc:
        print(f"xnet export: cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    size = model.cfg.data.input_size
    height = args.height or (size[0] if size else None)
    width = args.width or (size[1] if size else None)
    if not height or not width:
        print("xnet export: the model has no data.input_size: give --height and --width",
              file=sys.stderr)
        return 2
    if args.format == "tensorrt":
        return _export_tensorrt(args, model, model_path, (height, width))
    if args.precision not in (None, "fp32"):
        print(f"xnet export: --precision {args.precision} applies to --format tensorrt only "
              "(ONNX / .pt2 graphs are fp32)", file=sys.stderr)
        return 2
    if args.format == "pt2":
        return _export_pt2(args, model, model_path, (height, width))
    suffix = ".onnx" if args.format == "onnx" else ".pt2"
    base = model_path if model_path is not None else Path(".")
    out = args.out or base / f"xnet_{height}x{width}{suffix}"
    try:
        if args.format == "onnx":
            result = export.export_onnx(model, out, height, width, dynamic=not args.static)
        else:
            result = export.save_exported(model, out, height, width, dynamic=not args.static)
    except export.ExportError as exc:
        print(f"xnet export: {exc}", file=sys.stderr)
        return 1
    shape = "dynamic batch/height/width" if result.dynamic else f"static 1x3x{height}x{width}"
    print(f"wrote {result.path} ({shape}, {result.seconds:.1f} s)")
    for msg in result.messages:
        print(f"note: {msg}")
    if not args.no_verify:
        if args.format == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
            run = lambda x: session.run(None, {export.INPUT_NAME: x.numpy()})  # noqa: E731
        else:
            program = export.load_exported(result.path)[0].module()
            run = lambda x: [t.numpy() for t in program(x)]  # noqa: E731
        diff, equal = verify_export(model, run, height, width)
        print(f"parity vs eager at {height}x{width}: max |depth diff| {diff:.2e} m, "
              f"labels equal {equal:.4%}")
    return 0


def default_artifact_dir(model: XNet, fmt: str, precision: str, size) -> Path:
    return Path(f"{model.cfg.name}-{fmt}-{precision}-{size[0]}x{size[1]}")


def _export_pt2(args, model: XNet, model_path: Path | None, size) -> int:
    from .artifact import ArtifactError, ExportedProgramBackend, export_pt2_artifact
    from .export import ExportError

    out = args.out or default_artifact_dir(model, "pt2", "fp32", size)
    try:
        path, result, meta = export_pt2_artifact(model, out, *size, dynamic=not args.static,
                                                 device=args.device or "cpu",
                                                 model_path=model_path)
    except (ExportError, ArtifactError, BackendError) as exc:
        print(f"xnet export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote deploy artifact {path} ({result.seconds:.1f} s): accepts "
          f"{meta.artifact.accepted_sizes()}")
    for msg in result.messages:
        print(f"note: {msg}")
    if not args.no_verify:
        backend = ExportedProgramBackend(path, meta, meta.artifact.device)
        run = lambda x: [t.cpu().numpy() for t in backend.run(x.to(backend.device))]  # noqa: E731
        diff, equal = verify_export(model.cpu(), run, *size)
        print(f"parity vs eager at {size[0]}x{size[1]}: max |depth diff| {diff:.2e} m, "
              f"labels equal {equal:.4%}")
    return 0


def _export_tensorrt(args, model: XNet, model_path: Path | None, size) -> int:
    import dataclasses
    import shutil

    from .artifact import PROGRAM_FILE, ArtifactError, artifact_meta, write_artifact
    from .tensorrt_backend import TensorRTBackend, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"xnet export: cannot build a TensorRT engine on this machine: {reason}",
              file=sys.stderr)
        return 1
    precision = args.precision or "fp16"
    try:
        backend = TensorRTBackend(model, args.device or "cuda", precision=precision,
                                  input_size=size, batch=args.batch, min_size=args.min_size,
                                  max_size=args.max_size, max_batch=args.max_batch,
                                  cache_dir=args.cache_dir, calib=args.calib,
                                  model_path=model_path)
    except BackendError as exc:
        print(f"xnet export: {exc}", file=sys.stderr)
        return 1
    state = "already cached" if backend.cache_hit else "built"
    print(f"TensorRT engine {state}: {backend.engine_path}\n{backend.describe()}")
    if args.cache_only:
        return 0
    out = args.out or default_artifact_dir(model, "tensorrt", precision, size)
    info = dataclasses.replace(backend.info, program=PROGRAM_FILE)
    try:
        write_artifact(out, artifact_meta(model, info, info.multiple or 1),
                       lambda p: shutil.copyfile(backend.engine_path, p),
                       {"model": model.cfg.to_dict()})
    except ArtifactError as exc:
        print(f"xnet export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote deploy artifact {out}: accepts {info.accepted_sizes()}")
    return 0


def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xnet bench", description=(
        "Latency / FPS / peak memory per backend and size, as a Markdown table."))
    p.add_argument("--model", required=True,
                   help="saved model directory, or a variant name (random weights)")
    p.add_argument("--ablation", help="Table-1 row(s) of a variant, comma-separated: each is "
                   "benchmarked as its own model (e.g. xnet,fpn for xNet vs the FPN baseline)")
    p.add_argument("--backends", default="torch,onnxruntime", help="comma-separated; "
                   "name[:precision], e.g. torch,torch:bf16,inductor,onnxruntime,tensorrt:fp16")
    p.add_argument("--sizes", default="240x320", help="comma-separated HxW network sizes")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--flops", action="store_true", help="add parameter and GFLOP columns")
    p.add_argument("--cache-dir", type=Path, help="engine cache for onnxruntime / tensorrt")
    p.add_argument("--append", type=Path, help="append the table to this Markdown report")
    p.add_argument("--title", help="section title in the report")
    p.add_argument("--notes", default="", help="a paragraph under the section title")
    return p


def without_options(argv: list[str], *names: str) -> list[str]:
    """argv minus `names` and their values (report prose kept out of the printed command)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(tuple(f"{n}=" for n in names)):
            out.append(arg)
    return out


def bench_main(argv: list[str]) -> int:
    args = _bench_parser().parse_args(argv)
    from ..memory import tune_malloc
    from .bench import append_report, bench_model, markdown_table, report_section

    tune_malloc()  # as the node does: latencies under the node's allocator settings

    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    except argparse.ArgumentTypeError as exc:
        print(f"xnet bench: {exc}", file=sys.stderr)
        return 2
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    options = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    rows = []
    for ablation in (args.ablation.split(",") if args.ablation else [None]):
        try:
            model, model_path, label = load_model_arg(args.model, ablation)
        except (ConfigError, WeightsError, OSError) as exc:
            print(f"xnet bench: cannot load {args.model}: {exc}", file=sys.stderr)
            return 2
        rows += bench_model(label, model, backends, sizes, args.warmup, args.iters,
                            args.device, args.flops, model_path, **options)
    table = markdown_table(rows)
    print(table)
    if args.append:
        command = "xnet bench " + shlex.join(without_options(argv, "--title", "--notes"))
        title = args.title or f"{args.model} on {', '.join(backends)}"
        path = append_report(args.append, report_section(title, table, command, args.notes))
        print(f"appended to {path}")
    return 0 if any(r.median_ms is not None for r in rows) else 1
