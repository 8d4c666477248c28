"""Parameter schema and topic names of `xnet_node`, without rclpy.

`NodeParams` is the single source of truth for the node's parameters: the node declares one ROS
parameter per field (description, range, read-only flag from the field's metadata), the shipped
`config/xnet.yaml` must list exactly these keys (checked by the tests), and `validate()` turns a
set of values into `ParamError(name, message)` pairs.

Three kinds of parameters (see `ParamSpec.when`):
  * ``startup``   read-only; only a parameter override at node start sets it.
  * ``configure`` applied by the lifecycle ``configure`` transition (the model is loaded, the
                  subscriptions are created then); changing it is refused while the node is
                  configured: deactivate + cleanup, set it, configure again.
  * ``runtime``   can be changed at any time (``ros2 param set``); the next frame uses it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .cameras import camera_name_problems

# ------------------------------------------------------------------------------------ topics
# Relative names, so a namespace (`__ns`) or remaps (`image:=/cam/image_raw`) move them.
NODE_NAME = "xnet_node"
INPUT_IMAGE = "image"
INPUT_COMPRESSED = "image/compressed"
INPUT_CAMERA_INFO = "camera_info"
STATS_TOPIC = "~/stats"
CLASS_TABLE_TOPIC = "semantic/class_table"
DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute by convention (diagnostic_aggregator reads it)
# Outputs (published by the node, written by `xnet bag infer`). Here, not in `outputs`, so the
# launch file can name them without importing numpy/cv2/torch (xnet_ros.launch_config).
DEPTH, DEPTH_INFO, LABELS, COLOR, POINTS = (
    "depth", "depth/camera_info", "semantic/labels", "semantic/color", "points"
)
ALL_OUTPUTS = (DEPTH, DEPTH_INFO, LABELS, COLOR, POINTS)


@dataclass(frozen=True)
class QosSpec:
    """A QoS profile as plain data: rclpy (`ros_messages`) and rosbags (`bag.io`) profiles are
    built from these, so the node, the bag tools and the demo agree."""

    reliable: bool
    depth: int = 5
    transient_local: bool = False  # late subscribers get the last message ("latched")


# Inputs: sensor data (best effort, keep last 5); outputs: reliable, keep last 5 (reaches
# reliable and best-effort subscribers); the class table: latched. Users change them with ROS
# QoS overrides (`qos_overrides./<topic>.<publisher|subscription>.<policy>`, docs/node.md).
INPUT_QOS = QosSpec(reliable=False)
OUTPUT_QOS = QosSpec(reliable=True)
LATCHED_QOS = QosSpec(reliable=True, depth=1, transient_local=True)

# Deprecated `input_qos`/`output_qos` values (system_default is reliable with every supported
# RMW); RViz displays must subscribe with the same reliability as the outputs.
QOS_CHOICES = ("sensor_data", "reliable", "system_default")
QOS_RELIABILITY = {"sensor_data": "best_effort", "reliable": "reliable",
                   "system_default": "reliable"}
TRANSPORT_CHOICES = ("raw", "compressed")
RECTIFY_CHOICES = ("auto", "off")
PRECISION_CHOICES = ("fp32", "bf16", "fp16")
POINTS_RESOLUTION_CHOICES = ("output", "network")

STARTUP, CONFIGURE, RUNTIME = "startup", "configure", "runtime"
# Parameters that are set together (both 0 = unset), and what unset means.
PAIRS = {("output_width", "output_height"): "both 0 = the input size",
         ("fx", "fy"): "both 0 = take intrinsics from camera_info only"}
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")
_BACKEND_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _p(default: Any, description: str, *, when: str = RUNTIME, range: tuple | None = None,
       choices: tuple[str, ...] | None = None) -> Any:
    meta = {"description": description, "when": when, "range": range, "choices": choices}
    if isinstance(default, list):  # string arrays
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NodeParams:
    """All parameters of xnet_node with their defaults (the ROS parameter names are the fields)."""

    # --- model / backend (configure) ---
    model: str = _p("", "Saved xNet model directory (config.json + model.safetensors). "
                    "Empty = the demo model packaged with xnet_model "
                    "(xnet_model/assets/demo_model).", when=CONFIGURE)
    backend: str = _p("torch", "Inference backend of xnet_model.runtime: torch, inductor, "
                      "onnxruntime, tensorrt, auto (fastest usable), or a fallback chain "
                      "'a,b'. Built engines/exports are cached in $XNET_ENGINE_CACHE.",
                      when=CONFIGURE)
    device: str = _p("auto", "Device: auto (CUDA if available, else CPU), cpu, cuda, cuda:N.",
                     when=CONFIGURE)
    precision: str = _p("fp32", "Inference precision: torch/inductor autocast, TensorRT engine "
                        "precision (ignored by auto).",
                        when=CONFIGURE, choices=PRECISION_CHOICES)
    warmup: bool = _p(True, "Run one dummy inference at configure so the first frame is not "
                      "slow.", when=CONFIGURE)
    # --- cameras (configure) ---
    cameras: list[str] = _p([], "Camera names, e.g. [front, left]: per camera subscribe "
                            "<name>/image (or <name>/image/compressed) and <name>/camera_info, "
                            "publish every output under <name>/; all cameras share one model "
                            "and batched forward passes. Empty = one camera, the topics "
                            "without prefix.", when=CONFIGURE)
    max_batch: int = _p(0, "Most frames (one per camera) in one forward pass; 0 (or more "
                        "than the cameras) = the number of cameras.", when=CONFIGURE,
                        range=(0, 64))
    cpu_streams: int = _p(0, "torch or onnxruntime (or auto) on the CPU: run this many "
                          "independent single-threaded inference lanes (the threads divided "
                          "among them), each a forward pass of up to max_batch / lanes "
                          "cameras' frames, and publish a lane's batch while the lanes run "
                          "on. 1 = one forward; "
                          "0 = automatic: min(max_batch, torch threads) with those backends on "
                          "the CPU, else 1.", when=CONFIGURE, range=(0, 16))
    # --- input (configure) ---
    image_transport: str = _p("raw", "raw: subscribe 'image' (sensor_msgs/Image); compressed: "
                              "subscribe 'image/compressed' (sensor_msgs/CompressedImage, "
                              "jpeg/png).", when=CONFIGURE, choices=TRANSPORT_CHOICES)
    input_qos: str = _p("sensor_data", "Deprecated: use QoS overrides, e.g. "
                        "qos_overrides./image.subscription.reliability. Base QoS of the image "
                        "and camera_info subscriptions (sensor_data = best effort, depth 5; "
                        "reliable = reliable, depth 5; system_default).",
                        when=CONFIGURE, choices=QOS_CHOICES)
    output_qos: str = _p("reliable", "Deprecated: use QoS overrides, e.g. "
                         "qos_overrides./depth.publisher.reliability. Base QoS of the depth, "
                         "semantic, points and camera_info outputs (reliable, depth 5, reaches "
                         "both reliable and best-effort subscribers).",
                         when=CONFIGURE, choices=QOS_CHOICES)
    publish_serialized: bool = _p(True, "Publish images and point clouds serialized in place "
                                  "(depth/camera_info serialized whole) "
                                  "through rcl (built into buffers with room for the message "
                                  "around the data): one copy fewer than rclpy's publish, and "
                                  "the node's other threads run while the middleware sends. "
                                  "Checked against the middleware's own serialization at "
                                  "configure; false, or a failed check, = rclpy's publish.",
                                  when=CONFIGURE)
    rectify: str = _p("auto", "auto: undistort images whose camera_info has distortion "
                      "(plumb_bob, rational_polynomial, equidistant) like image_proc and "
                      "publish the outputs in the rectified camera (camera_info P); off: use "
                      "the images as they are with K (points bend at the edges of distorted "
                      "images).", choices=RECTIFY_CHOICES)
    # --- outputs (runtime) ---
    frame_id: str = _p("", "frame_id of the outputs; empty = the input image's frame_id "
                       "(the camera optical frame).")
    output_width: int = _p(0, "Width of depth/semantic/points outputs in pixels; 0 = the "
                           "input width (set together with output_height).", range=(0, 16384))
    output_height: int = _p(0, "Height of the outputs in pixels; 0 = the input height.",
                            range=(0, 16384))
    min_depth: float = _p(0.0, "Depth at or below this (metres) is published as NaN; 0 = the "
                          "model's min_depth.", range=(0.0, 1000.0))
    points_stride: int = _p(2, "Use every N-th pixel (rows and columns) for the point cloud.",
                            range=(1, 64))
    points_max_range: float = _p(0.0, "Drop points farther than this along z (metres); "
                                 "0 = keep all.", range=(0.0, 10000.0))
    points_organized: bool = _p(True, "true: HxW cloud with NaN for invalid points (RViz, PCL "
                                "organized); false: dense list of valid points only.")
    points_resolution: str = _p("output", "Grid the point cloud is taken from, before "
                                "points_stride: output = the published depth image (default); "
                                "network = the depth as the model produced it, at the network's "
                                "input resolution (no interpolated depth, fewer points, the "
                                "cheapest; colours resized to that grid).",
                                choices=POINTS_RESOLUTION_CHOICES)
    # --- intrinsics fallback (runtime) ---
    fx: float = _p(0.0, "Focal length x (pixels, at the input resolution) used when no "
                   "camera_info has arrived; 0 = unset (then points need camera_info).",
                   range=(0.0, 1.0e6))
    fy: float = _p(0.0, "Focal length y (pixels); 0 = unset. Set together with fx.",
                   range=(0.0, 1.0e6))
    cx: float = _p(0.0, "Principal point x (pixels); 0 = the image centre.",
                   range=(0.0, 1.0e6))
    cy: float = _p(0.0, "Principal point y (pixels); 0 = the image centre.",
                   range=(0.0, 1.0e6))
    # --- behaviour ---
    lazy: bool = _p(True, "Compute only the outputs that have subscribers, and skip inference "
                    "when nothing (outputs or ~/stats) is subscribed; skipped frames count as "
                    "dropped.")
    error_throttle_sec: float = _p(5.0, "At most one error log per this many seconds for bad "
                                   "input (each bad frame is still counted as failed).",
                                   range=(0.0, 3600.0))
    log_period: float = _p(10.0, "Log a rate/latency/drop summary every this many seconds; "
                           "0 = never.", range=(0.0, 3600.0))
    diagnostics_period: float = _p(1.0, "Period of the /diagnostics status (seconds).",
                                   when=STARTUP, range=(0.1, 60.0))
    autostart: bool = _p(True, "Configure and activate at startup (so a plain run works); "
                         "false = wait for lifecycle transitions (ros2 lifecycle set).",
                         when=STARTUP)

    # ------------------------------------------------------------------ helpers
    def validate(self) -> list[ParamError]:
        """One ParamError(name, message) per problem; [] = valid."""
        errors: list[ParamError] = []
        for spec in param_specs():
            err = spec.check(getattr(self, spec.name))
            if err:
                errors.append(err)
        bad = {e.name for e in errors}
        if "device" not in bad and not _DEVICE_RE.match(self.device):
            errors.append(ParamError("device", f"{self.device!r} is not auto, cpu, cuda or "
                                               "cuda:N"))
        if "backend" not in bad and not _BACKEND_RE.match(self.backend):
            errors.append(ParamError("backend", f"{self.backend!r} is not a backend name "
                                                "(e.g. 'torch')"))
        if "cameras" not in bad:
            errors += [ParamError("cameras", m) for m in camera_name_problems(self.cameras)]
        errors += self.cross_field_errors(bad)
        return errors

    def cross_field_errors(self, bad: set[str] = frozenset()) -> list[ParamError]:
        """Checks between parameters that are each valid (pairs that must be set together)."""
        errors = []
        for (a, b), meaning in PAIRS.items():
            if a in bad or b in bad:
                continue
            va, vb = getattr(self, a), getattr(self, b)
            if (va == 0) != (vb == 0):
                zero, other = (a, b) if va == 0 else (b, a)
                errors.append(ParamError(zero, f"must be set together with {other} "
                                               f"({meaning})"))
        return errors

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(H, W) of the outputs, None = the input size."""
        if self.output_width > 0 and self.output_height > 0:
            return self.output_height, self.output_width
        return None

    @property
    def camera_names(self) -> list[str]:
        """The cameras; [''] = one camera with the topics without prefix."""
        return list(self.cameras) or [""]

    @property
    def batch_size(self) -> int:
        """Frames per forward pass: `max_batch` (0 = one per camera), never more than the
        cameras (a batch holds one frame per camera; a larger value would only split the
        torch threads of a single-camera node into idle CPU streams)."""
        cameras = len(self.camera_names)
        return min(self.max_batch, cameras) if self.max_batch else cameras

    @property
    def has_intrinsics(self) -> bool:
        return self.fx > 0.0 and self.fy > 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> NodeParams:
        return dataclasses.replace(self, **changes)

    def updated(self, changes: Mapping[str, Any], configured: bool
                ) -> tuple[NodeParams, list[ParamError], list[ParamError]]:
        """A `ros2 param set` of `changes` (parameters of this schema) on a running node:
        (new params, errors that refuse the change, incomplete pairs that are accepted but
        unused until both are set, e.g. fx before fy). Configure-time parameters are refused
        while the node is `configured`."""
        specs = {s.name: s for s in param_specs()}
        if configured:
            refused = [ParamError(name, "applied at configure; deactivate and clean up the "
                                        "node first (ros2 lifecycle set <node> deactivate / "
                                        "cleanup)")
                       for name in changes if specs[name].when == CONFIGURE]
            if refused:
                return self, refused, []
        new = self.replace(**changes)
        cross = new.cross_field_errors()
        errors = [e for e in new.validate() if e not in cross and e.name in changes]
        pairs = {name: pair for pair in PAIRS for name in pair}
        pending = [e for e in cross if set(pairs[e.name]) & set(changes)]
        return (self, errors, []) if errors else (new, [], pending)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> tuple[NodeParams, list[ParamError]]:
        """Params from a mapping (a YAML `ros__parameters` block): unknown keys and values of
        the wrong type are reported (the default is kept for them); ints are accepted for
        floats. Returns (params, errors); run `validate()` for ranges and cross-field checks."""
        specs = {s.name: s for s in param_specs()}
        kwargs: dict[str, Any] = {}
        errors: list[ParamError] = []
        for name, value in values.items():
            spec = specs.get(name)
            if spec is None:
                errors.append(ParamError(name, f"unknown parameter of {NODE_NAME}"))
                continue
            coerced, err = spec.coerce(value)
            if err:
                errors.append(err)
            else:
                kwargs[name] = coerced
        return cls(**kwargs), errors


class ParamError(NamedTuple):
    """A problem with one parameter's value; str() is 'name: message'."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    default: Any
    description: str
    when: str = RUNTIME
    range: tuple | None = None
    choices: tuple[str, ...] | None = None

    @property
    def read_only(self) -> bool:
        return self.when == STARTUP

    @property
    def constraints(self) -> str:
        """Human-readable constraints (ParameterDescriptor.additional_constraints)."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.range:
            parts.append(f"range [{self.range[0]}, {self.range[1]}]")
        if self.when == CONFIGURE:
            parts.append("applied at configure; change it only while unconfigured")
        elif self.when == STARTUP:
            parts.append("read-only: set at startup")
        return "; ".join(parts)

    def coerce(self, value: Any) -> tuple[Any, ParamError | None]:
        """(value of this parameter's type, None) or (None, the error). A string array also
        takes a comma-separated string ('front,left')."""
        if self.type is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value), None
            return None, ParamError(self.name, f"expected a list of strings, got "
                                               f"{type(value).__name__} {value!r}")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value), None
        if isinstance(value, self.type) and not (self.type is not bool and isinstance(value,
                                                                                    bool)):
            return value, None
        return None, ParamError(self.name, f"expected {self.type.__name__}, got "
                                           f"{type(value).__name__} {value!r}")

    def check(self, value: Any) -> ParamError | None:
        """Type, range and choice check of one value; the error or None."""
        value, err = self.coerce(value)
        if err:
            return err
        if self.choices is not None and value not in self.choices:
            return ParamError(self.name, f"{value!r} is not one of {', '.join(self.choices)}")
        if self.range is not None:
            lo, hi = self.range
            if value != value or not lo <= value <= hi:  # NaN fails too
                return ParamError(self.name, f"{value!r} is out of range [{lo}, {hi}]")
        return None


def param_specs() -> list[ParamSpec]:
    """One ParamSpec per NodeParams field, in declaration order."""
    types = {"str": str, "int": int, "float": float, "bool": bool, "list[str]": list}
    specs = []
    for f in dataclasses.fields(NodeParams):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        specs.append(ParamSpec(
            name=f.name, type=types[f.type] if isinstance(f.type, str) else f.type,
            default=default, description=meta["description"], when=meta["when"],
            range=meta["range"], choices=meta["choices"],
        ))
    return specs


def markdown_table() -> str:
    """The parameter reference as a Markdown table (docs/node.md embeds it)."""
    rows = ["| parameter | type | default | description |", "|---|---|---|---|"]
    for s in param_specs():
        default = f"`{s.default!r}`" if not isinstance(s.default, str) else f"`'{s.default}'`"
        extra = f" ({s.constraints})" if s.constraints else ""
        kind = "string[]" if s.type is list else s.type.__name__
        rows.append(f"| `{s.name}` | {kind} | {default} | {s.description}{extra} |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------ model path
DEMO_MODEL_SUBDIR = ("assets", "demo_model")


def default_model_dir() -> Path:
    """The demo model packaged with the installed `xnet_model` (found without importing it)."""
    spec = importlib.util.find_spec("xnet_model")
    if spec is None or not spec.submodule_search_locations:
        raise ModelPathError("model: the xnet_model package is not installed")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*DEMO_MODEL_SUBDIR)


class ModelPathError(ValueError):
    """The `model` parameter does not name a usable model directory (message names it)."""


def resolve_model_path(model: str) -> Path:
    """The model directory for the `model` parameter ('' = the packaged demo model)."""
    if model:
        path = Path(model).expanduser()
        what = f"model: {model!r}"
    else:
        path = default_model_dir()
        what = f"model: '' (the packaged demo model {path})"
    if not path.exists():
        raise ModelPathError(f"{what} does not exist")
    if not path.is_dir():
        raise ModelPathError(f"{what} is not a directory (expected a saved xNet model "
                             "directory with config.json and model.safetensors, or a deploy "
                             "artifact directory with metadata.json from xnet export)")
    return path
