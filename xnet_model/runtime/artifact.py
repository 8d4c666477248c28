"""Deploy artifacts: a compiled program plus its metadata, loaded without timm or the nn.Module.

`xnet export --format pt2|tensorrt --out DIR` writes

    DIR/metadata.json      ModelMetadata with `.artifact` (ArtifactInfo): format, program file,
                           accepted batch/height/width, precision, versions, GPU (tensorrt)
    DIR/program.pt2        pt2: the torch.export ExportedProgram of InferenceGraph;
                           tensorrt: the Torch-TensorRT program (`torch_tensorrt.save`)
    DIR/model_config.json  the source model's config (Predictor.cfg; never needed to run)

`Predictor(DIR)` and the node (`model:=DIR`) read the metadata, load the program and run it;
neither imports timm nor builds the network, which keeps a node ~300 MB smaller.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..metadata import ArtifactInfo, ModelMetadata
from .backends import (
    Backend,
    BackendError,
    autocast_dtype,
    resolve_device,
    run_in_chunks,
    split_torch_threads,
)

if TYPE_CHECKING:
    from ..xnet import XNet
    from .export import ExportResult

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
CONFIG_COPY = "model_config.json"
PROGRAM_FILE = "program.pt2"
FORMATS = ("pt2", "tensorrt")
# backend names that run each format ('auto' takes whatever the artifact is)
FORMAT_BACKENDS = {"pt2": ("auto", "pt2", "torch"), "tensorrt": ("auto", "tensorrt")}


class ArtifactError(ValueError):
    """A directory is not a usable deploy artifact (message names the file and the problem)."""


def is_artifact(path: str | Path) -> bool:
    """True for a directory whose metadata.json describes a program (cheap: no torch work)."""
    meta = Path(path) / METADATA_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("artifact") is not None
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: let read_artifact say why


def read_artifact(path: str | Path) -> ModelMetadata:
    """The metadata of the artifact at `path`; ArtifactError if it is missing or broken."""
    path = Path(path)
    try:
        meta = ModelMetadata.load(path / METADATA_FILE)
    except ValueError as exc:
        raise ArtifactError(f"deploy artifact {path}: {exc}") from exc
    info = meta.artifact
    if info is None:
        raise ArtifactError(f"{path / METADATA_FILE} describes no program (no 'artifact' "
                            "entry): not a deploy artifact")
    if info.format not in FORMATS:
        raise ArtifactError(f"deploy artifact {path}: unknown format {info.format!r} "
                            f"(known: {', '.join(FORMATS)})")
    if not (path / info.program).is_file():
        raise ArtifactError(f"deploy artifact {path}: program file {info.program} is missing")
    return meta


def environment_versions() -> dict[str, str | None]:
    """Provenance written into every artifact (no import of timm: metadata only)."""
    from .engine_cache import code_digest, package_version

    return {"torch": torch.__version__, "timm": package_version("timm"),
            "python": platform.python_version(), "xnet_model_code": code_digest()[:16]}


def artifact_meta(model: XNet, info: ArtifactInfo, stride: int) -> ModelMetadata:
    """The model's metadata as the artifact runs it: a static program fixes the input size."""
    meta = model.meta
    if info.static:
        return dataclasses.replace(meta, input_size=(info.height[0], info.width[0]),
                                   artifact=info)
    return dataclasses.replace(meta, size_multiple=stride, artifact=info)


def write_artifact(out: str | Path, meta: ModelMetadata, write_program,
                   config: dict | None = None) -> Path:
    """Write an artifact directory atomically: `write_program(path)` writes the program into
    a temporary directory, which then replaces `out` (an older artifact there is replaced;
    anything else there is an error)."""
    out = Path(out)
    if out.exists() and not is_artifact(out) and any(out.iterdir()):
        raise ArtifactError(f"{out} exists and is not a deploy artifact: choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_program(tmp / meta.artifact.program)
        meta.save(tmp / METADATA_FILE)
        if config is not None:
            (tmp / CONFIG_COPY).write_text(json.dumps(config, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_pt2_artifact(model: XNet, out: str | Path, height: int, width: int,
                        dynamic: bool = True, device: str | torch.device = "cpu",
                        model_path: str | Path | None = None,
                        ) -> tuple[Path, ExportResult, ModelMetadata]:
    """`torch.export` the model at (height, width) into a pt2 artifact directory."""
    from .backends import model_identity
    from .export import dynamic_limits, export_program, network_stride

    device = resolve_device(device)
    program, result = export_program(model.to(device).eval(), height, width, dynamic, device)
    stride = network_stride(model)
    limits = dynamic_limits(stride) if result.dynamic else {
        "batch": (1, 1), "height": (height, height), "width": (width, width)}
    info = ArtifactInfo(
        format="pt2", program=PROGRAM_FILE, precision="fp32", device=device.type,
        batch=limits["batch"], height=limits["height"], width=limits["width"],
        multiple=stride if result.dynamic else 1,
        model_digest=model_identity(model, model_path), versions=environment_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    meta = artifact_meta(model, info, stride)
    path = write_artifact(out, meta, lambda p: torch.export.save(program, str(p)),
                          {"model": model.cfg.to_dict()})
    result.path = path
    return path, result, meta


def model_config(directory: str | Path):
    """The source model's ModelConfig stored beside the program (None if absent)."""
    path = Path(directory) / CONFIG_COPY
    if not path.is_file():
        return None
    from ..config import resolve

    doc = json.loads(path.read_text())
    return resolve(doc.get("model", doc))


class ExportedProgramBackend(Backend):
    """A pt2 artifact's ExportedProgram on cpu or cuda; fp32, or bf16/fp16 by autocast."""

    name = "pt2"

    def __init__(self, directory: str | Path, meta: ModelMetadata, device=None,
                 precision: str = "fp32"):
        device = resolve_device(device)
        self.precision, self.autocast_dtype = precision, autocast_dtype(precision)
        super().__init__(None, device, meta)
        self.info = meta.artifact
        from .compat import triton_hidden_without_cuda

        with triton_hidden_without_cuda():
            program = torch.export.load(str(Path(directory) / self.info.program))
        if device.type != self.info.device:
            from .compat import move_program_to_device

            try:
                program = move_program_to_device(program, device)
            except RuntimeError as exc:
                raise BackendError(str(exc)) from exc
        self.program = program.module()

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return run_in_chunks(self._run, x, self.info.batch[1])

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        problem = self.info.problem(tuple(x.shape))
        if problem:
            raise BackendError(problem)
        with torch.inference_mode():
            if self.autocast_dtype is None:
                return self.program(x)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return self.program(x)

    def describe(self) -> str:
        return f"pt2 program ({self.precision}) on {self.device}"

    def split_cpu_threads(self, streams: int) -> str:
        return split_torch_threads(self, streams)


def create_artifact_backend(directory: str | Path, meta: ModelMetadata, backend: str = "auto",
                            device=None, **options: Any) -> Backend:
    """The backend that runs this artifact's program. `backend` must name its format (or
    'auto'; for pt2 also 'torch'); a chain 'a,b' takes its first member that does."""
    info = meta.artifact
    names = [n.strip() for n in backend.split(",") if n.strip()]
    usable = [n for n in names if n in FORMAT_BACKENDS[info.format]]
    if not usable:
        raise BackendError(
            f"{directory} is a {info.format} deploy artifact: backend must be one of "
            f"{', '.join(FORMAT_BACKENDS[info.format])} (got {backend!r}); the other backends "
            "need the saved model directory")
    precision = options.pop("precision", None)
    for context in ("model_path", "input_size"):
        options.pop(context, None)
    if options:
        log.warning("deploy artifact %s: options %s do not apply to a compiled program",
                    directory, sorted(options))
    if info.format == "pt2":
        return ExportedProgramBackend(directory, meta, device, precision or "fp32")
    if precision not in (None, info.precision):
        log.warning("deploy artifact %s holds a %s TensorRT program: precision %s ignored",
                    directory, info.precision, precision)
    from .tensorrt_backend import TensorRTProgramBackend

    return TensorRTProgramBackend(directory, meta, device)
