"""Predictor: uint8 RGB/BGR image in, metric depth and class ids out, at the input resolution.

It runs a saved model directory or an `XNet` (the network is built: needs timm) or a deploy
artifact directory (`xnet export --format pt2|tensorrt`: metadata.json + a compiled program;
neither timm nor the nn.Module is loaded). Everything model-specific (normalisation, network
size, tasks, classes) comes from `self.meta` (ModelMetadata), identical for both.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .camera import metric_scale
from .memory import release_free_memory
from .metadata import ModelMetadata
from .runtime.backends import Backend, BackendError, create_backend
from .runtime.images import normalise_chw, resize

if TYPE_CHECKING:
    from .config import ModelConfig
    from .xnet import XNet


class CpuStreamsError(ValueError):
    """`cpu_streams` is not a positive integer, or asks for streams where they cannot run."""


@dataclass
class Prediction:
    depth: np.ndarray | None  # float32 HxW metres (raw=True: the network's h x w, see there)
    labels: np.ndarray | None  # uint8 HxW (uint16 when K > 255) class ids
    timings: dict[str, float] = field(default_factory=dict)  # pre/infer/post milliseconds


class Predictor:
    """`Predictor(model_or_path, backend='torch', device=None).predict(image, bgr=False,
    fx=None)`.

    Normalisation and network input size come from the model's metadata; any input size
    works: resize in, bilinear back for depth, nearest for labels. A deploy artifact takes
    the sizes its program accepts (`meta.artifact.accepted_sizes()`); others raise a
    BackendError naming them. `fx`, the camera's focal length in pixels of the given image,
    gives a camera-aware model (`meta.canonical_focal`) metric depth through any lens
    (xnet_model/camera.py); without it depth is the network's output, as for older models.
    """

    def __init__(self, model_or_path: XNet | str | Path, backend: str = "torch",
                 device=None, cpu_streams: int = 1, **backend_options):
        if isinstance(cpu_streams, bool) or not isinstance(cpu_streams, int) or cpu_streams < 1:
            raise CpuStreamsError(f"cpu_streams: {cpu_streams!r} must be an integer >= 1")
        self.model_path = None if not isinstance(model_or_path, (str, Path)) \
            else Path(model_or_path)
        self.artifact_dir: Path | None = None
        if self.model_path is not None:
            from .runtime.artifact import create_artifact_backend, is_artifact, read_artifact

            if is_artifact(self.model_path):  # compiled program: no timm, no nn.Module
                self.artifact_dir = self.model_path
                self.meta = read_artifact(self.model_path)
                self._model_cfg = None
                self.backend: Backend = create_artifact_backend(
                    self.model_path, self.meta, backend, device, **backend_options)
        if self.artifact_dir is None:
            if self.model_path is not None:
                from .persistence import load_model

                model = load_model(self.model_path)
            else:
                model = model_or_path
            self.meta: ModelMetadata = model.meta
            self._model_cfg = model.cfg
            # model_path keys compiled-engine caches by the saved files (ignored elsewhere)
            backend_options.setdefault("model_path", self.model_path)
            if cpu_streams > 1:  # a backend that splits on creation builds once
                backend_options.setdefault("cpu_streams", cpu_streams)
            self.backend = create_backend(backend, model, device, **backend_options)
        meta = self.meta
        self.cpu_streams = self._split_cpu_threads(cpu_streams)
        self.num_classes = meta.num_classes
        self.label_dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        self.mean = np.asarray(meta.mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(meta.std, np.float32) * 255.0)
        self.stride = meta.size_multiple
        release_free_memory()  # loading allocates transient buffers: do not keep them

    @cached_property
    def cfg(self) -> ModelConfig | None:
        """The source model's config (for a deploy artifact: the copy stored beside it, None
        if absent). Prefer `meta`: it is what the Predictor itself uses."""
        if self.artifact_dir is None:
            return self._model_cfg
        from .runtime.artifact import model_config

        return model_config(self.artifact_dir)

    @property
    def tasks(self) -> list[str]:
        return list(self.meta.tasks)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) the network runs at for an input of this size."""
        size = self.meta.network_size(height, width)
        info = self.meta.artifact
        if info is not None:
            problem = info.problem((info.batch[0], 3, *size))
            if problem:
                raise BackendError(f"a {height}x{width} image runs at {size[0]}x{size[1]}, "
                                   f"but {problem}")
        return size

    def preprocess(self, image: np.ndarray, bgr: bool = False) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
        h, w = self.network_size(*image.shape[:2])
        if (h, w) != image.shape[:2]:
            image = resize(image, h, w)
        if bgr:
            image = image[..., ::-1]
        return normalise_chw(image, self.mean, self.inv_std)

    def postprocess(self, out: dict[str, np.ndarray], i: int, size: tuple[int, int]):
        h, w = size
        depth = labels = None
        if "depth" in out:
            depth = out["depth"][i].astype(np.float32, copy=False)
            if depth.shape != (h, w):
                depth = resize(depth, h, w)
        if "labels" in out:
            labels = out["labels"][i].astype(self.label_dtype, copy=False)
            if labels.shape != (h, w):
                labels = resize(labels, h, w, nearest=True)
        return depth, labels

    def predict(self, image: np.ndarray, bgr: bool = False, raw: bool = False,
                fx: float | None = None) -> Prediction:
        return self.predict_batch([image], bgr=bgr, raw=raw, fx=[fx])[0]

    def depth_scales(self, images: list[np.ndarray],
                     fx: list[float | None] | None = None) -> list[float]:
        """Per image, the factor from the network's depth to metres (1.0 without a focal
        or a canonical camera; ValueError for a focal that is not a number > 0)."""
        if fx is None:
            return [1.0] * len(images)
        if len(fx) != len(images):
            raise ValueError(f"fx: {len(fx)} focal length(s) for {len(images)} image(s)")
        return [metric_scale(self.meta.canonical_focal, f, im.shape[:2],
                             self.meta.network_size(*im.shape[:2]))
                for f, im in zip(fx, images)]

    def predict_batch(self, images: list[np.ndarray], bgr: bool = False,
                      raw: bool = False, fx: list[float | None] | None = None,
                      split: bool = True) -> list[Prediction]:
        """One forward pass over images of possibly different sizes (same network size).

        `raw`: depth and labels as the network produced them, at its resolution (the caller
        resizes them, e.g. the ROS outputs); on a CUDA backend left on the device as torch
        tensors (depth (h, w) float, labels (h, w) integer), else numpy. Depth is in metres
        either way. `fx`: each image's focal length in pixels of that image, or None (see the
        class). `split=False`: one forward pass on the calling thread even with `cpu_streams`
        > 1, for callers that run several calls at once (the node's inference lanes)."""
        scales = self.depth_scales(images, fx)
        t0 = time.perf_counter()
        inputs = [self.preprocess(im, bgr) for im in images]
        batch = inputs[0][None] if len(inputs) == 1 else np.stack(inputs)  # one: no copy
        t1 = time.perf_counter()
        out = self._device_outputs(batch) if raw else None
        if out is None:
            out = self._infer(batch, self.cpu_streams if split else 1)
        t2 = time.perf_counter()
        if raw:
            results = [(out["depth"][i] if "depth" in out else None,
                        out["labels"][i] if "labels" in out else None)
                       for i in range(len(images))]
        else:
            results = [self.postprocess(out, i, im.shape[:2]) for i, im in enumerate(images)]
        results = [(d * k if d is not None and k != 1.0 else d, lab)
                   for (d, lab), k in zip(results, scales)]
        t3 = time.perf_counter()
        timings = {"pre_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3,
                   "post_ms": (t3 - t2) * 1e3}
        return [Prediction(d, lab, dict(timings)) for d, lab in results]

    def _split_cpu_threads(self, streams: int) -> int:
        """`cpu_streams` > 1: a batch on the CPU runs as that many sub-batches at once, each on
        its share of the threads (torch's intra-op threads, or a session of onnxruntime's).
        Independent forwards keep the cores busy where one multi-threaded forward stalls at
        its barriers while other threads of the process (DDS, decoding) preempt it."""
        if streams == 1:
            return 1
        problem = self.backend.split_cpu_threads(streams)
        if problem:
            raise CpuStreamsError(f"cpu_streams: {streams} {problem}")
        return streams

    def _infer(self, batch: np.ndarray, streams: int) -> dict[str, np.ndarray]:
        """`backend.infer`, as `streams` concurrent sub-batches when there are several
        (threads started per call and joined: nothing outlives it)."""
        parts = min(streams, len(batch))
        if parts <= 1:
            return self.backend.infer(batch)
        chunks = np.array_split(batch, parts)
        outs: list[Any] = [None] * parts

        def run(i: int) -> None:
            try:
                outs[i] = self.backend.infer(chunks[i])
            except BaseException as exc:  # re-raised in the caller
                outs[i] = exc

        threads = [threading.Thread(target=run, args=(i,), name=f"xnet-infer-{i}")
                   for i in range(1, parts)]
        for t in threads:
            t.start()
        run(0)
        for t in threads:
            t.join()
        for out in outs:
            if isinstance(out, BaseException):
                raise out
        return {key: np.concatenate([out[key] for out in outs]) for key in outs[0]}

    def _device_outputs(self, batch: np.ndarray) -> dict | None:
        """The network's outputs left on its CUDA device; None elsewhere and for backends
        that only return numpy (no `run`)."""
        device = getattr(self.backend, "device", None)
        if getattr(device, "type", "cpu") != "cuda":
            return None
        import torch

        try:
            with torch.no_grad():
                depth, labels = self.backend.run(self.backend.upload(batch))
        except NotImplementedError:
            return None
        # the node finishes these while the next batch runs, and CUDA-graph backends
        # (inductor reduce-overhead / max-autotune) overwrite their outputs on the next call
        depth, labels = (None if t is None else t.clone() for t in (depth, labels))
        torch.cuda.synchronize(device)  # infer_ms stays the network's time
        tasks = self.meta.tasks
        return {**({"depth": depth[:, 0]} if "depth" in tasks else {}),
                **({"labels": labels} if "semantic" in tasks else {})}
