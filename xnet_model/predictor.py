"""Predictor: uint8 RGB/BGR image in, metric depth and class ids out, at the input resolution."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .persistence import load_model
from .runtime.backends import Backend, create_backend
from .xnet import XNet


@dataclass
class Prediction:
    depth: np.ndarray | None  # float32 HxW metres
    labels: np.ndarray | None  # uint8 HxW (uint16 when K > 255) class ids
    timings: dict[str, float] = field(default_factory=dict)  # pre/infer/post milliseconds


class Predictor:
    """`Predictor(model_or_path, backend='torch', device=None).predict(image, bgr=False)`.

    Normalisation and network input size come from the model's data config; any input size
    works: resize in, bilinear back for depth, nearest for labels.
    """

    def __init__(self, model_or_path: XNet | str | Path, backend: str = "torch",
                 device=None, **backend_options):
        model = model_or_path if isinstance(model_or_path, XNet) else load_model(model_or_path)
        self.model_path = None if isinstance(model_or_path, XNet) else Path(model_or_path)
        self.cfg = model.cfg
        self.num_classes = self.cfg.semantic.num_classes if self.cfg.semantic else 0
        self.label_dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        data = self.cfg.data
        self.mean = np.asarray(data.mean, np.float32).reshape(1, 1, 3) * 255.0
        self.inv_std = 1.0 / (np.asarray(data.std, np.float32).reshape(1, 1, 3) * 255.0)
        self.stride = max(model.encoder.strides)
        # model_path keys compiled-engine caches by the saved files (ignored by other backends)
        backend_options.setdefault("model_path", self.model_path)
        self.backend: Backend = create_backend(backend, model, device, **backend_options)

    @property
    def tasks(self) -> list[str]:
        return self.cfg.tasks

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) the network runs at for an input of this size."""
        if self.cfg.data.input_size is not None:
            h, w = self.cfg.data.input_size
            return int(h), int(w)
        s = self.stride
        return -(-height // s) * s, -(-width // s) * s

    def preprocess(self, image: np.ndarray, bgr: bool = False) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
        h, w = self.network_size(*image.shape[:2])
        if (h, w) != image.shape[:2]:
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if bgr:
            image = image[..., ::-1]
        x = (image.astype(np.float32) - self.mean) * self.inv_std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def postprocess(self, out: dict[str, np.ndarray], i: int, size: tuple[int, int]):
        h, w = size
        depth = labels = None
        if "depth" in out:
            depth = out["depth"][i].astype(np.float32, copy=False)
            if depth.shape != (h, w):
                depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
        if "labels" in out:
            labels = out["labels"][i].astype(self.label_dtype)
            if labels.shape != (h, w):
                labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        return depth, labels

    def predict(self, image: np.ndarray, bgr: bool = False) -> Prediction:
        return self.predict_batch([image], bgr=bgr)[0]

    def predict_batch(self, images: list[np.ndarray], bgr: bool = False) -> list[Prediction]:
        """One forward pass over images of possibly different sizes (same network size)."""
        t0 = time.perf_counter()
        batch = np.stack([self.preprocess(im, bgr) for im in images])
        t1 = time.perf_counter()
        out = self.backend.infer(batch)
        t2 = time.perf_counter()
        results = [self.postprocess(out, i, im.shape[:2]) for i, im in enumerate(images)]
        t3 = time.perf_counter()
        timings = {"pre_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3,
                   "post_ms": (t3 - t2) * 1e3}
        return [Prediction(d, lab, dict(timings)) for d, lab in results]
