"""`xnet export` and `xnet bench` (dispatched from xnet_model/cli.py)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..weights import WeightsError
from ..xnet import CONFIG_FILE, XNet, build_model
from .backends import BackendError

FORMATS = ("onnx", "exported", "tensorrt")


def load_model_arg(spec: str, ablation: str | None = None) -> tuple[XNet, Path | None, str]:
    """(model, saved dir or None, label) from a saved model directory or a variant name."""
    from ..persistence import load_model

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
        "Export a saved xNet to ONNX or a torch.export program (.pt2), or pre-build its "
        "TensorRT engine into the engine cache (run it on the target, e.g. the Jetson)."))
    p.add_argument("--model", required=True, help="saved model directory (or a variant name)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--height", type=int, help="network input height (default: data.input_size)")
    p.add_argument("--width", type=int, help="network input width (default: data.input_size)")
    p.add_argument("--precision", default=None, choices=("fp32", "fp16", "int8"),
                   help="tensorrt: fp16 (default), fp32 or int8 (needs --calib); others: fp32")
    p.add_argument("--out", type=Path, help="output file (onnx / exported; default: next to "
                   "the model as xnet_<H>x<W>.onnx / .pt2)")
    p.add_argument("--calib", type=Path, help="directory of calibration images for int8")
    p.add_argument("--batch", type=int, default=1, help="tensorrt engine batch size")
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


def _export_tensorrt(args, model: XNet, model_path: Path | None, size) -> int:
    from .tensorrt_backend import TensorRTBackend, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"xnet export: cannot build a TensorRT engine on this machine: {reason}",
              file=sys.stderr)
        return 1
    try:
        backend = TensorRTBackend(model, "cuda", precision=args.precision or "fp16",
                                  input_size=size, batch=args.batch, cache_dir=args.cache_dir,
                                  calib=args.calib, model_path=model_path)
    except BackendError as exc:
        print(f"xnet export: {exc}", file=sys.stderr)
        return 1
    shape = (args.batch, 3, *size)
    path = backend.cache.paths(backend.cache_key(shape))[0]
    state = "already cached" if backend.cache_hits[shape] else "built"
    print(f"TensorRT engine {state}: {path}\n{backend.describe()}")
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
