"""Model metadata: what a user of a trained model needs besides its weights.

Like timm's `pretrained_cfg`, it travels with the model: `XNet.meta`, `Predictor.meta`, and the
`metadata.json` beside an exported artifact. Everything that reads class names, the palette, the
depth range, the network input size or the normalisation reads it from here, so there is one
derivation of each. Plain data: no torch, no timm (a deploy artifact loads it without either).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .palette import default_palette

DEFAULT_MIN_DEPTH = 1e-3  # metres; what a model without a depth head reports as its minimum


@dataclass(frozen=True)
class ArtifactInfo:
    """What a deploy artifact (`xnet export --format pt2|tensorrt`) holds and which inputs its
    program accepts; written by xnet_model.runtime.artifact, read without torch or timm."""

    format: str  # "pt2" (torch.export program) or "tensorrt" (Torch-TensorRT program)
    program: str  # the program's file name inside the artifact directory
    precision: str = "fp32"  # what the program computes in (fp32 / fp16 / int8)
    device: str = "cpu"  # device type the program was exported for ("cpu" / "cuda")
    batch: tuple[int, int] = (1, 1)  # accepted batch sizes, inclusive
    height: tuple[int, int] = (0, 0)  # accepted network heights, inclusive
    width: tuple[int, int] = (0, 0)
    multiple: int = 1  # accepted heights and widths are multiples of this
    opt_shape: tuple[int, ...] = ()  # (N, 3, H, W) a TensorRT engine is tuned for
    model_digest: str | None = None  # sha256 of the saved model it was exported from
    calibration_digest: str | None = None  # int8: sha256 of the calibration images
    versions: dict[str, str | None] = dataclasses.field(default_factory=dict)  # torch, timm...
    target: dict[str, Any] = dataclasses.field(default_factory=dict)  # TensorRT: GPU, SM count
    created: str = ""

    @property
    def static(self) -> bool:
        return self.batch[0] == self.batch[1] and self.height[0] == self.height[1] \
            and self.width[0] == self.width[1]

    def accepted_sizes(self) -> str:
        """The inputs the program takes, in words (used in every wrong-size error)."""
        if self.static:
            return f"exactly {self.batch[0]}x3x{self.height[0]}x{self.width[0]} (N x 3 x H x W)"
        return (f"batch {self.batch[0]}..{self.batch[1]}, height {self.height[0]}.."
                f"{self.height[1]} and width {self.width[0]}..{self.width[1]} in multiples of "
                f"{self.multiple}")

    def problem(self, shape: tuple[int, ...]) -> str | None:
        """Why an (N, 3, H, W) input does not fit the program (None: it fits)."""
        if len(shape) != 4 or shape[1] != 3:
            return f"input {tuple(shape)} is not N x 3 x H x W"
        n, _, h, w = (int(s) for s in shape)
        fits = (self.batch[0] <= n <= self.batch[1] and self.height[0] <= h <= self.height[1]
                and self.width[0] <= w <= self.width[1]
                and h % self.multiple == 0 and w % self.multiple == 0)
        if fits:
            return None
        return (f"this {self.format} artifact accepts {self.accepted_sizes()}; got "
                f"{n}x3x{h}x{w}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"artifact metadata: unknown key(s) {unknown}; "
                             f"known: {sorted(known)}")
        d = dict(data)
        for key in ("batch", "height", "width", "opt_shape"):
            if key in d:
                d[key] = tuple(int(v) for v in d[key])
        return cls(**d)


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    tasks: tuple[str, ...]  # subset of ("depth", "semantic"), in that order
    mean: tuple[float, float, float]  # RGB, of [0, 1] images
    std: tuple[float, float, float]
    input_size: tuple[int, int] | None = None  # (H, W) the network runs at; None = any size
    size_multiple: int = 32  # a free input size is rounded up to a multiple of this
    min_depth: float = DEFAULT_MIN_DEPTH  # metres; predictions below are "no depth"
    max_depth: float | None = None  # metres; None = no depth head
    num_classes: int = 0  # 0 = no semantic head
    class_names: tuple[str, ...] = ()  # num_classes names
    palette: tuple[tuple[int, int, int], ...] = ()  # num_classes RGB colours
    # fx in pixels at the network input size of the camera the model was trained for (the
    # canonical camera); None = unknown (a model saved before camera-aware training).
    canonical_focal: float | None = None
    # set in the metadata.json of a deploy artifact: the program, what it accepts, provenance
    artifact: ArtifactInfo | None = None

    @classmethod
    def from_config(cls, cfg: Any, size_multiple: int) -> ModelMetadata:
        """From a `ModelConfig`: fills default class names and palette once, here."""
        k = cfg.semantic.num_classes if cfg.semantic is not None else 0
        names: tuple[str, ...] = ()
        palette: tuple[tuple[int, int, int], ...] = ()
        if k:
            names = tuple(str(n) for n in (cfg.semantic.class_names
                                           or [f"class_{i}" for i in range(k)]))
            colours = (cfg.semantic.palette if cfg.semantic.palette is not None
                       else default_palette(k).tolist())
            palette = tuple(tuple(int(c) for c in rgb) for rgb in colours)
        size = cfg.data.input_size
        return cls(
            name=cfg.name, tasks=tuple(cfg.tasks),
            mean=tuple(float(v) for v in cfg.data.mean), std=tuple(float(v) for v in cfg.data.std),
            input_size=(int(size[0]), int(size[1])) if size is not None else None,
            size_multiple=int(size_multiple),
            min_depth=float(cfg.depth.min_depth) if cfg.depth is not None else DEFAULT_MIN_DEPTH,
            max_depth=float(cfg.depth.max_depth) if cfg.depth is not None else None,
            num_classes=k, class_names=names, palette=palette,
            canonical_focal=getattr(cfg.data, "canonical_focal", None),
        )

    # ---- derived values ---------------------------------------------------------------------
    def palette_array(self) -> np.ndarray:
        """(K, 3) uint8 RGB; (0, 3) without a semantic head."""
        return np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) the network runs at for an input image of this size."""
        if self.input_size is not None:
            return self.input_size
        m = self.size_multiple
        return -(-height // m) * m, -(-width // m) * m

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        """Inverse of `to_dict`; unknown keys are an error, missing optional ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model metadata: unknown key(s) {unknown}; known: {sorted(known)}")
        d = dict(data)
        for key in ("tasks", "class_names"):
            d[key] = tuple(d.get(key, ()))
        for key in ("mean", "std"):
            d[key] = tuple(float(v) for v in d[key])
        d["palette"] = tuple(tuple(int(c) for c in rgb) for rgb in d.get("palette", ()))
        if d.get("input_size") is not None:
            d["input_size"] = (int(d["input_size"][0]), int(d["input_size"][1]))
        if d.get("artifact") is not None:
            d["artifact"] = ArtifactInfo.from_dict(d["artifact"])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelMetadata:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read model metadata {path}: {exc}") from exc
