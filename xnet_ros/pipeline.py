"""One frame path, without ROS: an image message in, the fields of every output out.

    Image / CompressedImage --decode--> RGB --fit_intrinsics--> RGB + K
        --predict (xnet_model.Predictor)--> depth, labels
        --build_outputs--> FrameOutputs (message fields per output) + timings

`xnet_node` runs `FramePipeline.run` on its worker thread and only wraps the result into rclpy
messages; `xnet bag infer` runs the same stages one by one (decode on its read-ahead thread, the
model on the caller's, outputs on its writer thread) and wraps the same fields into rosbags
messages; `xnet bag eval` decodes with `decode_image`. `predict` takes a list of decoded frames so
that several frames can share one forward pass.

Everything model-specific (class names, palette, depth range) is read from `Predictor.meta`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .conversions import decode_compressed, image_to_rgb
from .geometry import Intrinsics
from .outputs import ALL_OUTPUTS, DEPTH_INFO, POINTS, FrameOutputs, OutputOptions, build_outputs
from .params import STATS_TOPIC, NodeParams

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


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message starts with the parameter to fix."""


def load_predictor(path: Path, backend: str = "torch", device: str | None = None,
                   precision: str | None = None, warmup: bool = False) -> Any:
    """A Predictor for a model directory, or ModelLoadError naming what to fix (`model:`,
    `backend:`, `device:`). `precision` None: the backend's own choice (auto)."""
    from xnet_model import ConfigError, Predictor, WeightsError
    from xnet_model.runtime.backends import BackendError

    options = {} if precision is None else {"precision": precision}
    try:
        predictor = Predictor(path, backend=backend, device=device, **options)
    except BackendError as exc:
        what = "device" if "device" in str(exc) else "backend"
        raise ModelLoadError(f"{what}: {exc}") from exc
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


@dataclass(frozen=True)
class FrameSettings:
    """What a user chooses (node parameters, `xnet bag infer` flags); replaced as a whole."""

    output_size: tuple[int, int] | None = None  # (H, W); None = the input image's
    min_depth: float = 0.0  # 0 = the model's
    points_stride: int = 1
    points_max_range: float | None = None  # metres along z; None = keep all
    points_organized: bool = True
    fallback_intrinsics: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy
    frame_id: str = ""  # '' = the input image's

    @classmethod
    def from_params(cls, p: NodeParams) -> FrameSettings:
        """The settings xnet_node's parameters choose."""
        return cls(output_size=p.output_size, min_depth=p.min_depth,
                   points_stride=p.points_stride, points_max_range=p.points_max_range or None,
                   points_organized=p.points_organized,
                   fallback_intrinsics=(p.fx, p.fy, p.cx, p.cy) if p.has_intrinsics else None,
                   frame_id=p.frame_id)


@dataclass
class FrameInput:
    msg: Any  # sensor_msgs Image or CompressedImage (rclpy or rosbags)
    compressed: bool = False
    received_mono: float = field(default_factory=time.monotonic)


@dataclass
class DecodedFrame:
    header: Any  # the input's std_msgs/Header
    frame_id: str  # of the outputs
    rgb: np.ndarray
    intrinsics: Intrinsics | None  # of `rgb`
    wanted: frozenset[str]  # output names (and STATS_TOPIC) someone wants
    received_mono: float = 0.0
    decode_ms: float = 0.0


@dataclass
class FrameResult:
    header: Any  # the input's header
    frame_id: str
    outputs: FrameOutputs
    wanted: frozenset[str]
    timings: dict[str, float]  # pre_ms, infer_ms, post_ms, total_ms (end to end)
    input_size: tuple[int, int]  # (W, H)
    output_size: tuple[int, int]  # (W, H)


class FramePipeline:
    """decode -> intrinsics -> predict -> build_outputs -> timings, whole or stage by stage.

    `wanted()` names the outputs someone wants (asked once per frame, after decoding; empty =
    skip the frame); `clock_ns()` is the clock of the header stamps (end-to-end latency);
    `on_warning(key, message)` is called once per kind of problem until `reset_warnings()`.
    `settings` and `camera_info` (the latest, if any) may be replaced from another thread.
    """

    def __init__(self, predictor: Any, settings: FrameSettings = FrameSettings(), *,
                 wanted: Callable[[], frozenset[str]] = lambda: EVERYTHING,
                 clock_ns: Callable[[], int] = time.time_ns,
                 on_warning: Callable[[str, str], None] = lambda key, message: None):
        self.predictor = predictor
        self.meta = predictor.meta
        self.settings = settings
        self.camera_info: Intrinsics | None = None
        self.wanted = wanted
        self.clock_ns = clock_ns
        self.on_warning = on_warning
        self._warned: set[str] = set()

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.on_warning(key, message)

    def reset_warnings(self) -> None:
        self._warned.clear()

    def output_options(self) -> OutputOptions:
        s = self.settings
        return OutputOptions.for_model(
            self.meta, output_size=s.output_size, min_depth=s.min_depth,
            points_stride=s.points_stride, points_max_range=s.points_max_range,
            points_organized=s.points_organized)

    # ---------------------------------------------------------------------------- stages
    def decode(self, frame: FrameInput, camera_info: Intrinsics | None = None) -> DecodedFrame:
        """RGB, intrinsics (`camera_info`, else the latest `self.camera_info`) and what is
        wanted. Raises for an image that cannot be decoded."""
        t0 = time.perf_counter()
        msg, s = frame.msg, self.settings
        rgb = decode_image(msg, frame.compressed)
        decode_ms = (time.perf_counter() - t0) * 1e3
        wanted = frozenset(self.wanted())
        height, width = rgb.shape[:2]
        info = camera_info if camera_info is not None else self.camera_info
        intrinsics, problem = fit_intrinsics(info, height, width, s.fallback_intrinsics)
        if problem:
            self.warn_once("info_size", problem)
        if intrinsics is None and wanted & {POINTS, DEPTH_INFO}:
            self.warn_once("no_intrinsics", "no camera_info received and no fallback "
                           "intrinsics (fx/fy) set: not publishing points or depth/camera_info "
                           "until one of them is available")
        frame_id = s.frame_id or msg.header.frame_id
        if not frame_id:
            self.warn_once("frame_id", "input images have an empty header.frame_id and the "
                           "frame_id setting is empty: outputs have none either")
        return DecodedFrame(msg.header, frame_id, rgb, intrinsics, wanted, frame.received_mono,
                            decode_ms)

    def predict(self, frames: Sequence[DecodedFrame]) -> list[Any]:
        """One `Prediction` per frame (depth, labels, pre/infer/post timings)."""
        return [self.predictor.predict(f.rgb) for f in frames]

    def finish(self, frame: DecodedFrame, prediction: Any) -> FrameResult:
        """Output fields and timings of a predicted frame."""
        t0 = time.perf_counter()
        opts = self.output_options()
        out = build_outputs(frame.rgb, prediction.depth, prediction.labels, frame.intrinsics,
                            opts, frame.wanted)
        build_ms = (time.perf_counter() - t0) * 1e3
        height, width = frame.rgb.shape[:2]
        out_h, out_w = opts.output_size or (height, width)
        t = prediction.timings
        timings = {"pre_ms": frame.decode_ms + t.get("pre_ms", 0.0),
                   "infer_ms": t.get("infer_ms", 0.0),
                   "post_ms": t.get("post_ms", 0.0) + build_ms,
                   "total_ms": self.end_to_end_ms(frame.header.stamp, frame.received_mono)}
        return FrameResult(frame.header, frame.frame_id, out, frame.wanted, timings,
                           (width, height), (out_w, out_h))

    def run(self, frame: FrameInput) -> FrameResult | None:
        """The whole path for one frame; None when nothing is wanted (the frame is skipped)."""
        decoded = self.decode(frame)
        if not decoded.wanted:
            return None
        return self.finish(decoded, self.predict([decoded])[0])

    def end_to_end_ms(self, stamp: Any, received_mono: float) -> float:
        """Header stamp -> now when the stamp is on our clock (within a minute), else
        reception -> now (replayed bags, cameras with their own clock)."""
        ns = stamp_ns(stamp)
        if ns > 0:
            age_ms = (self.clock_ns() - ns) / 1e6
            if -1000.0 < age_ms < 60_000.0:
                return max(age_ms, 0.0)
        return (time.monotonic() - received_mono) * 1e3

