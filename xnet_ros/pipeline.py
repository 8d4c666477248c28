"""One frame path, without ROS: image messages in, the fields of every output out.

    Image / CompressedImage --decode--> RGB --rectify (rectify.py)--> RGB + K
        --predict (xnet_model.Predictor.predict_batch, several cameras at once)--> depth, labels
        --build_outputs--> FrameOutputs (message fields per output) + timings

`xnet_node`'s worker runs `FramePipeline.run_batch` in its two parts (the pending frame of each
camera, one forward pass: `infer_batch`; then `finish_predicted` per frame, on a delivery thread
while the next batch runs where `overlaps_delivery`) and only wraps the results into rclpy
messages; `xnet bag infer` runs the same stages one by one (decode on its read-ahead thread,
the model on the caller's, outputs on its writer thread) and wraps the same fields into rosbags
messages.
Each camera (`FrameInput.camera`, '' for a single-camera node) has its own calibration
(`set_camera_info`) and rectification maps; a decoded frame carries the intrinsics of the image
the network sees (rectified and at its own size) into `predict`.

Everything model-specific (class names, palette, depth range) is read from `Predictor.meta`.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cameras import camera_label
from .conversions import decode_compressed, image_to_rgb
from .geometry import Intrinsics
from .outputs import (
    ALL_OUTPUTS,
    DEPTH_INFO,
    POINTS,
    BufferPool,
    FrameOutputs,
    OutputOptions,
    build_outputs,
    raw_predictions,
)
from .params import STATS_TOPIC, NodeParams
from .rectify import CameraCalibration, RectifierCache

EVERYTHING = frozenset((*ALL_OUTPUTS, STATS_TOPIC))


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def decode_image(msg: Any, compressed: bool) -> np.ndarray:
    """HxWx3 uint8 RGB of a sensor_msgs Image or CompressedImage (raises for bad input)."""
    return decode_compressed(msg) if compressed else image_to_rgb(msg)


def fit_intrinsics(info: Intrinsics | None, height: int, width: int,
                   fallback: tuple[float, float, float, float] | None = None,
                   ) -> tuple[Intrinsics | None, str]:
    """Intrinsics for an image of this size, and why `info` was not used ('' if it was).

    `info` (a camera_info) as is for its own size, scaled when only the resolution differs
    (same aspect ratio); else the fallback fx, fy, cx, cy (cx/cy 0 = the image centre); else
    None."""
    problem = ""
    if info is not None:
        if (info.width, info.height) == (width, height):
            return info, ""
        aspect = width / height
        if abs(info.width / info.height - aspect) < 0.01 * aspect:
            return info.scaled(width, height), ""
        problem = (f"camera_info is for {info.width}x{info.height} but the images are "
                   f"{width}x{height}: not using it")
    if fallback is not None:
        fx, fy, cx, cy = fallback
        return Intrinsics(fx, fy, cx or (width - 1) / 2.0, cy or (height - 1) / 2.0, width,
                          height), problem
    return None, problem


def overlaps_delivery(predictor: Any) -> bool:
    """Whether the node should finish and publish a batch while the next forward pass runs:
    when that pass leaves the CPU cores to it, i.e. on an accelerator (the CPU waits for the
    GPU) or as independent single-threaded CPU streams (`cpu_streams` > 1). Not beside one
    multi-threaded CPU forward pass: a delivery thread that preempts one of its OpenMP threads
    stalls all of them at the next barrier (4 cameras on 2 cores: 28.9 -> 23.8 frames/s)."""
    device = getattr(getattr(predictor, "backend", None), "device", None)
    return getattr(device, "type", "cpu") != "cpu" or getattr(predictor, "cpu_streams", 1) > 1


def inference_lanes(predictor: Any, max_batch: int) -> int:
    """How many inference threads the node's worker runs: `cpu_streams` (up to `max_batch`)
    for independent single-threaded CPU streams, each lane one forward pass of its own frames
    (no barrier between them, unlike sub-batches of one batch); else 1."""
    device = getattr(getattr(predictor, "backend", None), "device", None)
    if getattr(device, "type", "cpu") != "cpu":
        return 1
    return max(1, min(getattr(predictor, "cpu_streams", 1), max_batch))


def lanes_advice(predictor: Any) -> str:
    """What to tell a user whose torch backend runs several CPU lanes ('' otherwise)."""
    from xnet_model.runtime.backends import TorchBackend

    if getattr(predictor, "cpu_streams", 1) <= 1 or type(predictor.backend) is not TorchBackend:
        return ""
    return ("torch's lanes take turns at Python's GIL between operators; backend: "
            "onnxruntime runs them without it (4 cameras on 2 cores: 57-67 frames/s against "
            "34, docs/node.md, 'Several cameras')")


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message starts with the parameter to fix."""


CPU_STREAM_BACKENDS = ("torch", "onnxruntime", "auto")  # auto on a CPU: onnxruntime -> torch


def auto_cpu_streams(backend: str, device: str | None, batch: int) -> int:
    """`cpu_streams: 0`: with the torch or onnxruntime backend on the CPU (or `auto`, or a
    chain, of those), several cameras run as min(batch, torch threads) single-threaded streams
    at once (the node's inference lanes; 4 cameras on 2 cores, torch: 28.9 frames/s as one
    forward pass, 38.8 as two streams with overlapped delivery); one forward pass everywhere
    else (one camera, GPUs, other backends)."""
    names = [n.strip() for n in backend.split(",")]
    if not all(n in CPU_STREAM_BACKENDS for n in names) or batch <= 1:
        return 1
    import torch

    from xnet_model.runtime.backends import BackendError, resolve_device

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except BackendError:  # the Predictor reports a bad device; nothing to split then
        return 1
    return max(1, min(batch, torch.get_num_threads())) if on_cpu else 1


def import_model_runtime() -> None:
    """Import what loading a model imports (torch, timm, the Predictor and the model), ahead
    of `load_predictor`: `main` does it while a signal may still end the process at once."""
    import timm  # noqa: F401

    import xnet_model.persistence
    import xnet_model.predictor  # noqa: F401


def load_predictor(path: Path, backend: str = "torch", device: str | None = None,
                   precision: str | None = None, warmup: bool = False,
                   cpu_streams: int = 1, batch: int = 1) -> Any:
    """A Predictor for a model directory, or ModelLoadError naming what to fix (`model:`,
    `backend:`, `device:`, `cpu_streams:`). `precision` None: the backend's own choice.
    `cpu_streams` 0: `auto_cpu_streams` for batches of up to `batch` frames."""
    from xnet_model import ConfigError, Predictor, WeightsError
    from xnet_model.predictor import CpuStreamsError
    from xnet_model.runtime.backends import BackendError, DeviceError

    if cpu_streams == 0:
        cpu_streams = auto_cpu_streams(backend, device, batch)
    options = {} if precision is None else {"precision": precision}
    try:
        predictor = Predictor(path, backend=backend, device=device, cpu_streams=cpu_streams,
                              **options)
    except DeviceError as exc:
        raise ModelLoadError(f"device: {exc}") from exc
    except BackendError as exc:
        raise ModelLoadError(f"backend: {exc}") from exc
    except CpuStreamsError as exc:
        raise ModelLoadError(str(exc)) from exc  # it starts with "cpu_streams:"
    except (WeightsError, ConfigError) as exc:
        raise ModelLoadError(f"model: {path} is missing or corrupt: {exc}") from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"model: cannot load {path}: {type(exc).__name__}: {exc}") from exc
    if warmup:
        h, w = predictor.meta.input_size or (256, 256)
        try:
            predictor.predict(np.zeros((int(h), int(w), 3), np.uint8))
        except Exception as exc:
            raise ModelLoadError(f"model: warm-up inference failed on "
                                 f"{predictor.backend.describe()}: {type(exc).__name__}: {exc}"
                                 ) from exc
    return predictor


@functools.lru_cache(maxsize=16)
def _takes_split(cls: type) -> bool:
    fn = getattr(cls, "predict_batch", None)
    return fn is not None and "split" in inspect.signature(fn).parameters


@dataclass(frozen=True)
class FrameSettings:
    """What a user chooses (node parameters, `xnet bag infer` flags); replaced as a whole."""

    output_size: tuple[int, int] | None = None  # (H, W); None = the input image's
    min_depth: float = 0.0  # 0 = the model's
    points_stride: int = 1
    points_max_range: float | None = None  # metres along z; None = keep all
    points_organized: bool = True
    points_resolution: str = "output"  # output: the published depth's grid; network: the model's
    fallback_intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy
    frame_id: str = ""  # '' = the input image's
    rectify: str = "auto"  # auto: undistort images whose camera_info has distortion; off

    @classmethod
    def from_params(cls, p: NodeParams) -> FrameSettings:
        """The settings xnet_node's parameters choose."""
        return cls(output_size=p.output_size, min_depth=p.min_depth,
                   points_stride=p.points_stride, points_max_range=p.points_max_range or None,
                   points_organized=p.points_organized, points_resolution=p.points_resolution,
                   fallback_intrinsics=(p.fx, p.fy, p.cx, p.cy) if p.has_intrinsics else None,
                   frame_id=p.frame_id, rectify=p.rectify)


@dataclass
class FrameInput:
    msg: Any  # sensor_msgs Image or CompressedImage (rclpy or rosbags)
    compressed: bool = False
    received_mono: float = field(default_factory=time.monotonic)
    camera: str = ""  # '' = the only camera


@dataclass
class DecodedFrame:
    header: Any  # the input's std_msgs/Header
    frame_id: str  # of the outputs
    rgb: np.ndarray  # what the network sees: rectified if the camera was
    intrinsics: Intrinsics | None  # of `rgb`
    wanted: frozenset[str]  # output names (and STATS_TOPIC) someone wants
    received_mono: float = 0.0
    decode_ms: float = 0.0  # decoding and rectification
    camera: str = ""


@dataclass(frozen=True)
class PredictedFrame:
    """A decoded frame and the network's prediction for it, not yet turned into outputs."""

    frame: DecodedFrame
    prediction: Any


@dataclass
class FrameResult:
    header: Any  # the input's header
    frame_id: str
    outputs: FrameOutputs
    wanted: frozenset[str]
    timings: dict[str, float]  # pre_ms, infer_ms, post_ms, total_ms (end to end)
    input_size: tuple[int, int]  # (W, H)
    output_size: tuple[int, int]  # (W, H)
    camera: str = ""


class FramePipeline:
    """decode -> intrinsics -> predict -> build_outputs -> timings, whole or stage by stage.

    `wanted(camera)` names the outputs someone wants of that camera (asked once per frame,
    after decoding; empty = skip the frame); `clock_ns()` is the clock of the header stamps
    (end-to-end latency); `on_warning(key, message)` is called once per kind of problem and
    camera until `reset_warnings()`. `settings` and each camera's calibration
    (`set_camera_info`, the latest) may be replaced from another thread.
    """

    def __init__(self, predictor: Any, settings: FrameSettings = FrameSettings(), *,
                 wanted: Callable[[str], frozenset[str]] = lambda camera: EVERYTHING,
                 clock_ns: Callable[[], int] = time.time_ns,
                 on_warning: Callable[[str, str], None] = lambda key, message: None,
                 buffers: BufferPool | None = None):
        self.predictor = predictor
        self.meta = predictor.meta
        self.settings = settings
        self.wanted = wanted
        self.clock_ns = clock_ns
        self.on_warning = on_warning
        self._warned: set[tuple[str, str]] = set()
        self._calibrations: dict[str, CameraCalibration | None] = {}
        self._rectifiers: dict[str, RectifierCache] = {}
        # message buffers, reused once the node has published them (FrameOutputs.release)
        self.buffers = buffers if buffers is not None else BufferPool()
        # False: each call is one forward pass (the worker runs several lanes at once)
        self.split_batches = True
        self._options: tuple[FrameSettings, OutputOptions] | None = None

    def warn_once(self, key: str, message: str, camera: str = "") -> None:
        if (key, camera) not in self._warned:
            self._warned.add((key, camera))
            self.on_warning(key, f"{camera_label(camera)}: {message}" if camera else message)

    # ------------------------------------------------------------------- calibration
    def set_camera_info(self, msg: Any, camera: str = "") -> CameraCalibration:
        """Use a sensor_msgs/CameraInfo for the camera's next frames. ValueError (the previous
        one stays): uncalibrated, no size, or distortion `rectify: auto` cannot undo."""
        calib = CameraCalibration.from_camera_info(msg)
        if self.settings.rectify == "auto":
            calib.check_rectifiable()
        self._calibrations[camera] = calib
        return calib

    def calibration(self, camera: str = "") -> CameraCalibration | None:
        return self._calibrations.get(camera)

    @property
    def camera_info(self) -> Intrinsics | None:
        """The single camera's (K of its camera_info); None = none yet."""
        calib = self._calibrations.get("")
        return calib.intrinsics if calib is not None else None

    @camera_info.setter
    def camera_info(self, intr: Intrinsics | None) -> None:
        self._calibrations[""] = None if intr is None else CameraCalibration.pinhole(intr)

    def _camera_view(self, rgb: np.ndarray, calib: CameraCalibration | None, camera: str
                     ) -> tuple[np.ndarray, Intrinsics | None]:
        """The image the network sees and its camera: undistorted like image_proc when the
        calibration has distortion and `rectify` is auto (RectifyError: it cannot be)."""
        if calib is None or not calib.distorted:
            return rgb, None if calib is None else calib.intrinsics
        height, width = rgb.shape[:2]
        if self.settings.rectify != "auto":
            self.warn_once("distortion_ignored", f"camera_info has {calib.distortion_model} "
                           "distortion but rectify is off: the images are used as pinhole "
                           "images (K), points bend towards the edges", camera)
            return rgb, calib.intrinsics
        aspect = width / height
        if abs(calib.width / calib.height - aspect) >= 0.01 * aspect:
            return rgb, calib.intrinsics  # fit_intrinsics refuses it and says why
        rectifier = self._rectifiers.setdefault(camera, RectifierCache()).get(calib, height,
                                                                              width)
        return rectifier.rectify(rgb), rectifier.intrinsics

    def reset_warnings(self) -> None:
        self._warned.clear()

    def output_options(self) -> OutputOptions:
        """The options of the current settings (built once per settings object: the palette
        array of a 150-class model costs more than the rest of the frame's glue)."""
        s, cached = self.settings, self._options
        if cached is None or cached[0] is not s:
            cached = self._options = (s, OutputOptions.for_model(
                self.meta, output_size=s.output_size, min_depth=s.min_depth,
                points_stride=s.points_stride, points_max_range=s.points_max_range,
                points_organized=s.points_organized, points_resolution=s.points_resolution))
        return cached[1]

    # ---------------------------------------------------------------------------- stages
    def decode(self, frame: FrameInput,
               camera_info: Intrinsics | CameraCalibration | None = None) -> DecodedFrame:
        """RGB (rectified if need be), its intrinsics (from `camera_info`, else the camera's
        latest calibration, else the fallback) and what is wanted. Raises for an image that
        cannot be decoded or rectified."""
        t0 = time.perf_counter()
        msg, s, camera = frame.msg, self.settings, frame.camera
        rgb = decode_image(msg, frame.compressed)
        calib = camera_info if camera_info is not None else self._calibrations.get(camera)
        if isinstance(calib, Intrinsics):
            calib = CameraCalibration.pinhole(calib)
        rgb, info = self._camera_view(rgb, calib, camera)
        decode_ms = (time.perf_counter() - t0) * 1e3
        wanted = frozenset(self.wanted(camera))
        height, width = rgb.shape[:2]
        intrinsics, problem = fit_intrinsics(info, height, width, s.fallback_intrinsics)
        if problem:
            self.warn_once("info_size", problem, camera)
        if intrinsics is None and wanted & {POINTS, DEPTH_INFO}:
            self.warn_once("no_intrinsics", "no camera_info received and no fallback "
                           "intrinsics (fx/fy) set: not publishing points or depth/camera_info "
                           "until one of them is available", camera)
        frame_id = s.frame_id or msg.header.frame_id
        if not frame_id:
            self.warn_once("frame_id", "input images have an empty header.frame_id and the "
                           "frame_id setting is empty: outputs have none either", camera)
        return DecodedFrame(msg.header, frame_id, rgb, intrinsics, wanted, frame.received_mono,
                            decode_ms, camera)

    def predict(self, frames: Sequence[DecodedFrame], at_image_size: bool = False
                ) -> list[Any]:
        """One `Prediction` per frame (depth, labels, pre/infer/post timings): one forward pass
        per network size (one in all when the model has a fixed input size). `at_image_size`:
        numpy arrays at each frame's size (else as `finish` takes them, maybe raw)."""
        focals = self._focals(frames)
        batch_fn = getattr(self.predictor, "predict_batch", None)
        if batch_fn is None:
            return [self.predictor.predict(f.rgb, **({} if focals is None else {"fx": fx}))
                    for f, fx in zip(frames, focals or [None] * len(frames))]
        # raw: outputs at the network's size, finish resizes them
        options = {} if at_image_size else raw_predictions(self.predictor)
        if not self.split_batches and _takes_split(type(self.predictor)):
            options["split"] = False
        size_of = getattr(self.predictor, "network_size", lambda h, w: (h, w))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(tuple(size_of(*f.rgb.shape[:2])), []).append(i)
        predictions: list[Any] = [None] * len(frames)
        for indices in groups.values():
            fx = {} if focals is None else {"fx": [focals[i] for i in indices]}
            images = [frames[i].rgb for i in indices]
            for i, prediction in zip(indices, batch_fn(images, **options, **fx)):
                predictions[i] = prediction
        return predictions

    def _focals(self, frames: Sequence[DecodedFrame]) -> list[float | None] | None:
        """Each frame's fx (pixels of its rectified, resized image) for a camera-aware model
        (`meta.canonical_focal`), which maps its depth to metres through it; None for other
        models. A camera without one is warned about once."""
        canonical = getattr(self.meta, "canonical_focal", None)
        if canonical is None:
            return None
        for f in frames:
            if f.intrinsics is None:
                self.warn_once(
                    "no_focal", f"the model is camera-aware (canonical fx {canonical:g} px at "
                    "its input) but this camera has no focal length (no camera_info, no fx/fy "
                    "parameters): depth is as the canonical camera would see it, off by the "
                    "ratio of the two focal lengths", f.camera)
        return [f.intrinsics.fx if f.intrinsics is not None else None for f in frames]

    def finish(self, frame: DecodedFrame, prediction: Any) -> FrameResult:
        """Output fields and timings of a predicted frame."""
        t0 = time.perf_counter()
        opts = self.output_options()
        out = build_outputs(frame.rgb, prediction.depth, prediction.labels, frame.intrinsics,
                            opts, frame.wanted, self.buffers)
        build_ms = (time.perf_counter() - t0) * 1e3
        height, width = frame.rgb.shape[:2]
        out_h, out_w = opts.output_size or (height, width)
        t = prediction.timings
        timings = {"pre_ms": frame.decode_ms + t.get("pre_ms", 0.0),
                   "infer_ms": t.get("infer_ms", 0.0),
                   "post_ms": t.get("post_ms", 0.0) + build_ms,
                   "total_ms": self.end_to_end_ms(frame.header.stamp, frame.received_mono)}
        return FrameResult(frame.header, frame.frame_id, out, frame.wanted, timings,
                           (width, height), (out_w, out_h), frame.camera)

    def run(self, frame: FrameInput) -> FrameResult | None:
        """The whole path for one frame; None when nothing is wanted (the frame is skipped)."""
        decoded = self.decode(frame)
        if not decoded.wanted:
            return None
        return self.finish(decoded, self.predict([decoded])[0])

    def run_batch(self, frames: Sequence[FrameInput]) -> list[FrameResult | None | Exception]:
        """The whole path for frames of several cameras, one forward pass for all of them.
        Per frame: its result, None (nothing wanted: skipped) or the exception that failed it
        (a bad image fails only its own frame; a failing forward pass all of them)."""
        return [self.finish_predicted(o) if isinstance(o, PredictedFrame) else o
                for o in self.infer_batch(frames)]

    def infer_batch(self, frames: Sequence[FrameInput]
                    ) -> list[PredictedFrame | None | Exception]:
        """`run_batch` up to the network's outputs (decode, one forward pass); the node's
        worker then finishes each frame (`finish_predicted`), where `overlaps_delivery` while
        the next batch runs."""
        outcomes: list[Any] = [None] * len(frames)
        decoded: list[tuple[int, DecodedFrame]] = []
        for i, frame in enumerate(frames):
            try:
                d = self.decode(frame)
            except Exception as exc:  # this camera's frame only
                outcomes[i] = exc
                continue
            if d.wanted:
                decoded.append((i, d))
        if not decoded:
            return outcomes
        try:
            predictions = self.predict([d for _, d in decoded])
        except Exception as exc:
            for i, _ in decoded:
                outcomes[i] = exc
            return outcomes
        for (i, d), prediction in zip(decoded, predictions):
            outcomes[i] = PredictedFrame(d, prediction)
        return outcomes

    def finish_predicted(self, predicted: PredictedFrame) -> FrameResult | Exception:
        """`finish` of an `infer_batch` outcome; the exception that failed it, returned."""
        try:
            return self.finish(predicted.frame, predicted.prediction)
        except Exception as exc:
            return exc

    def end_to_end_ms(self, stamp: Any, received_mono: float) -> float:
        """Header stamp -> now when the stamp is on our clock (within a minute), else
        reception -> now (replayed bags, cameras with their own clock)."""
        ns = stamp_ns(stamp)
        if ns > 0:
            age_ms = (self.clock_ns() - ns) / 1e6
            if -1000.0 < age_ms < 60_000.0:
                return max(age_ms, 0.0)
        return (time.monotonic() - received_mono) * 1e3

