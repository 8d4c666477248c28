"""Export an xNet to a graph: `torch.export` ExportedProgram (.pt2) and ONNX (dynamo exporter).

`InferenceGraph` is what every compiled backend runs: a tensor-in, tensors-out wrapper with the
argmax folded in, so a graph compiler sees one static signature whatever heads the model has.
Dynamic height/width (multiples of the network stride) and batch are tried first; a model that
cannot be traced that way is exported at the one requested size, with a warning saying why.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAMES = ("depth", "labels")
METADATA_KEY = "xnet"  # ONNX metadata_props key / .pt2 extra file holding `graph_metadata`
MAX_SIDE = 4096  # largest height/width a dynamic graph accepts
MAX_BATCH = 64
ONNX_SINGLE_FILE_LIMIT = 1.9e9  # protobuf's 2 GB cap; larger models need external data


class ExportError(RuntimeError):
    """The model could not be exported in the requested format."""


class InferenceGraph(nn.Module):
    """(N,3,H,W) normalised image -> (depth (N,1,H,W) float, labels (N,H,W) int32).

    An absent head returns an empty tensor in its slot (a graph needs a fixed output arity).
    """

    def __init__(self, model: XNet):
        super().__init__()
        self.model = model
        self.tasks = tuple(model.cfg.tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image)
        if "depth" in out:
            depth = out["depth"]
        else:
            depth = torch.zeros(0, dtype=image.dtype, device=image.device)
        if "semantic" in out:
            labels = out["semantic"].argmax(1).to(torch.int32)
        else:
            labels = torch.zeros(0, dtype=torch.int32, device=image.device)
        return depth, labels


def network_stride(model: XNet) -> int:
    """The input multiple that keeps every encoder and decoder feature map exact (dynamic
    graphs need it; see `XNet.exact_size_multiple`)."""
    return model.exact_size_multiple


def graph_metadata(model: XNet, height: int, width: int, dynamic: bool) -> dict:
    """What a runtime needs to use the graph without the Python model."""
    cfg = model.cfg
    return {
        "tasks": list(cfg.tasks),
        "num_classes": cfg.semantic.num_classes if cfg.semantic else 0,
        "max_depth": cfg.depth.max_depth if cfg.depth else None,
        "canonical_focal": cfg.data.canonical_focal,  # fx of the depth's camera (camera.py)
        "mean": list(cfg.data.mean), "std": list(cfg.data.std),
        "input_size": [height, width], "dynamic": dynamic, "stride": network_stride(model),
        "input": INPUT_NAME, "outputs": list(OUTPUT_NAMES),
    }


@dataclass
class ExportResult:
    path: Path | None
    dynamic: bool  # True: batch, height and width are free (height/width: stride multiples)
    seconds: float
    messages: list[str] = field(default_factory=list)


def dynamic_limits(stride: int) -> dict[str, tuple[int, int]]:
    """The (min, max) batch, height and width a dynamic graph accepts (H, W: stride
    multiples)."""
    side = (2 * stride, MAX_SIDE // stride * stride)
    return {"batch": (1, MAX_BATCH), "height": side, "width": side}


def _dynamic_shapes(stride: int, limits: dict[str, tuple[int, int]] | None = None,
                    ) -> tuple[dict, ...]:
    """`torch.export` dynamic_shapes: batch free, H and W `stride` times a free integer."""
    lim = limits or dynamic_limits(stride)
    dim = torch.export.Dim
    spec: dict[int, object] = {}
    if lim["batch"][0] != lim["batch"][1]:
        spec[0] = dim("batch", min=lim["batch"][0], max=lim["batch"][1])
    for axis, key in ((2, "height"), (3, "width")):
        lo, hi = lim[key]
        if lo != hi:
            spec[axis] = stride * dim(key[0], min=lo // stride, max=hi // stride)
    return (spec,)


def export_program(model: XNet, height: int, width: int, dynamic: bool = True,
                   device: torch.device | str = "cpu", graph: nn.Module | None = None,
                   ) -> tuple[torch.export.ExportedProgram, ExportResult]:
    """`torch.export` the InferenceGraph; dynamic batch/H/W if possible, else static (1,3,H,W).

    The trace runs at batch 2 when dynamic (a size-1 example would pin the batch to 1).
    `graph`: an InferenceGraph-like module of `model` to trace instead (already on `device`).
    """
    graph = graph if graph is not None else InferenceGraph(model).to(device).eval()
    stride = network_stride(model)
    messages: list[str] = []
    t0 = time.perf_counter()
    if dynamic and (height % stride or width % stride):
        # expected for sizes like 240x320: the model resizes odd feature maps, a graph over
        # all sizes cannot (shape guards), so this is a note, not a failure
        messages.append(f"{height}x{width} is not a multiple of the network stride {stride}: "
                        "exporting a static graph")
        log.info(messages[-1])
        dynamic = False
    if dynamic:
        example = torch.randn(2, 3, height, width, device=device)
        try:
            with torch.no_grad():
                ep = torch.export.export(graph, (example,), dynamic_shapes=_dynamic_shapes(stride),
                                         strict=False)
            return ep, ExportResult(None, True, time.perf_counter() - t0, messages)
        except Exception as exc:  # data-dependent shapes, guards: fall back to one size
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            messages.append(f"dynamic-shape export failed ({type(exc).__name__}: {first[:300]});"
                            f" exporting a static {height}x{width} graph")
    if dynamic:
        log.warning(messages[-1])
    example = torch.randn(1, 3, height, width, device=device)
    try:
        with torch.no_grad():
            ep = torch.export.export(graph, (example,), strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export failed at {height}x{width}: {exc}") from exc
    return ep, ExportResult(None, False, time.perf_counter() - t0, messages)


def save_exported(model: XNet, path: str | Path, height: int, width: int,
                  dynamic: bool = True) -> ExportResult:
    """Write an ExportedProgram (.pt2) with `graph_metadata` as the extra file 'xnet'."""
    ep, result = export_program(model, height, width, dynamic)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = graph_metadata(model, height, width, result.dynamic)
    torch.export.save(ep, str(path), extra_files={METADATA_KEY: json.dumps(meta)})
    result.path = path
    return result


def load_exported(path: str | Path) -> tuple[torch.export.ExportedProgram, dict]:
    """An ExportedProgram saved by `save_exported` and its metadata."""
    extra = {METADATA_KEY: ""}
    ep = torch.export.load(str(path), extra_files=extra)
    return ep, json.loads(extra[METADATA_KEY] or "{}")


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(model: XNet, path: str | Path, height: int, width: int, dynamic: bool = True,
                opset: int | None = None, single_file: bool = False,
                exported: tuple[torch.export.ExportedProgram, ExportResult] | None = None,
                ) -> ExportResult:
    """ONNX through the dynamo exporter, input 'image', outputs 'depth' and 'labels'.

    One self-contained file when the weights fit under protobuf's 2 GB limit, else the weights
    go to `<path>.data` next to it (an error with `single_file`). `exported`: an
    `export_program` result to convert instead of tracing again.
    """
    from .compat import onnx_dynamo_problem

    if onnx_dynamo_problem():
        raise ExportError(onnx_dynamo_problem())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if single_file and weight_bytes > ONNX_SINGLE_FILE_LIMIT:
        raise ExportError(f"{weight_bytes / 1e9:.1f} GB of weights do not fit one ONNX file; "
                          "export with `xnet export --format onnx --out PATH` (external data)")
    ep, result = exported or export_program(model, height, width, dynamic)
    result = ExportResult(None, result.dynamic, result.seconds, list(result.messages))
    t0 = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()), quiet_loggers("onnx_ir", "onnxscript"):
            # the exporter prints progress lines and logs every optimisation pass at INFO
            program = torch.onnx.export(
                ep, (), None, dynamo=True, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), opset_version=opset, verbose=False,
            )
        meta = graph_metadata(model, height, width, result.dynamic)
        program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
        program.save(str(path), external_data=weight_bytes > ONNX_SINGLE_FILE_LIMIT)
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    result.path, result.seconds = path, result.seconds + time.perf_counter() - t0
    return result


def read_onnx_metadata(path: str | Path) -> dict:
    """`graph_metadata` stored in an ONNX file by `export_onnx` ({} if absent)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}
