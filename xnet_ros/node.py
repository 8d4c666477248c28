"""xnet_node: xNet depth + semantic segmentation on a ROS 2 camera stream (rclpy lifecycle node).

Thin rclpy layer. The logic lives in ROS-free modules: `params` (parameter schema and
validation), `worker` (latest-frame slot, inference thread, counters), `conversions`
(Image/CompressedImage -> RGB), `outputs.build_outputs` (every output's message fields; the
offline bag tool uses the same function) and `geometry` (intrinsics, point clouds).

Lifecycle: configure = validate parameters + load the model + create publishers; activate =
publish the class table, start the worker, subscribe; deactivate/cleanup/shutdown undo that. With
`autostart: true` (default) the node configures and activates itself at startup. A failed
configure (invalid parameter, missing/corrupt model) logs the reason, reports it on
/diagnostics, and leaves the node alive in the unconfigured state.

Threading: the executor thread runs subscription callbacks, which only put the message into the
worker's latest-frame slot (a frame arriving while one is pending replaces it and is counted as
dropped); one worker thread decodes, runs the network, builds and publishes the outputs. See
docs/node.md.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from .colorize import default_palette
from .conversions import decode_compressed, image_to_array, to_rgb
from .geometry import Intrinsics
from .outputs import (
    ALL_OUTPUTS,
    COLOR,
    DEPTH,
    DEPTH_INFO,
    LABELS,
    POINTS,
    OutputOptions,
    build_outputs,
    tune_malloc,
)
from .params import (
    CLASS_TABLE_TOPIC,
    CONFIGURE,
    DIAGNOSTICS_TOPIC,
    INPUT_CAMERA_INFO,
    INPUT_COMPRESSED,
    INPUT_IMAGE,
    NODE_NAME,
    STATS_TOPIC,
    ModelPathError,
    NodeParams,
    param_specs,
    resolve_model_path,
)
from .ros_messages import (
    descriptor_for,
    latched_qos,
    make_qos,
    output_msg,
    stamp_ns,
)
from .worker import InferenceWorker, WorkerSnapshot

try:
    from rclpy.executors import ExternalShutdownException
except ImportError:  # older rclpy: spin() just returns on shutdown
    class ExternalShutdownException(Exception):
        pass

try:  # generated from msg/ (`make msgs` + `source tools/ros_env.sh`, or a colcon install)
    from xnet_ros.msg import ClassInfo, ClassTable, InferenceStats

    MSG_IMPORT_ERROR = ""
except ImportError as _exc:  # the node still runs; stats and class table are not published
    ClassInfo = ClassTable = InferenceStats = None
    MSG_IMPORT_ERROR = str(_exc)

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
OUTPUT_TYPES = {DEPTH: Image, DEPTH_INFO: CameraInfo, LABELS: Image, COLOR: Image,
                POINTS: PointCloud2}


@dataclass
class _Frame:
    msg: Any
    compressed: bool
    received_mono: float


@dataclass
class _Model:
    predictor: Any
    path: Path
    name: str
    backend: str
    num_classes: int
    class_names: list[str]
    palette: np.ndarray | None
    min_depth: float


# ----------------------------------------------------------------------------------- the node
class XnetNode(LifecycleNode):
    """Lifecycle node `xnet_node`; see the module docstring and docs/node.md."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._specs = {s.name: s for s in param_specs()}
        self._decl_errors: dict[str, str] = {}
        self._declare_parameters()
        self._params = self._read_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._model: _Model | None = None
        self._configured = False
        self._active = False
        self._config_error = ""
        self._pubs: dict[str, Any] = {}
        self._stats_pub = None
        self._class_table_pub = None
        self._subs: list[Any] = []
        self._worker: InferenceWorker | None = None
        self._last_snapshot = WorkerSnapshot()
        self._camera_info: Intrinsics | None = None
        self._camera_info_rejected = 0
        self._warned: set[str] = set()
        self._last_sizes = (0, 0, 0, 0)  # input w, h, output w, h
        self.published: Counter[str] = Counter()  # messages published per output
        self._last_log = time.monotonic()
        self._activated_mono = 0.0

        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diag_timer = self.create_timer(self._params.diagnostics_period,
                                             self._on_diagnostics_timer)
        if MSG_IMPORT_ERROR:
            self.get_logger().warning(
                f"xnet_ros.msg is not importable ({MSG_IMPORT_ERROR}): {STATS_TOPIC} and "
                f"{CLASS_TABLE_TOPIC} are not published. Build the interfaces (colcon build, or "
                "`make msgs` + `source tools/ros_env.sh`).")
        if self._params.autostart:
            self.autostart()

    def topic_name(self, topic: str) -> str:
        """The fully qualified name of a topic of this node (for log messages)."""
        resolve = getattr(self, "resolve_topic_name", None)
        if resolve is not None:
            with contextlib.suppress(Exception):
                return resolve(topic)
        return topic

    # ----------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        """Declare every schema parameter. An override rclpy rejects (wrong type, out of
        range) does not kill the node: the default is declared instead and the error makes the
        next configure fail, naming the parameter. Integers are accepted for doubles."""
        overrides = getattr(self, "_parameter_overrides", {})
        for spec in self._specs.values():
            desc = descriptor_for(spec)
            try:
                self.declare_parameter(spec.name, spec.default, desc)
                continue
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                reason = str(exc)
            value = spec.default
            override = overrides.get(spec.name)
            if override is None:
                err = f"{spec.name}: {reason}"
            else:
                coerced, err = spec.coerce(override.value)
                err = err or spec.check(coerced)
                if err is None:
                    value = coerced  # e.g. an integer given for a double
            if err:
                self._decl_errors[spec.name] = f"{err} (the default {spec.default!r} is in use)"
            self.declare_parameter(spec.name, value, descriptor_for(spec), ignore_override=True)
        for err in self._decl_errors.values():
            self.get_logger().error(f"invalid parameter: {err}")

    def _read_parameters(self) -> NodeParams:
        return NodeParams(**{name: self.get_parameter(name).value for name in self._specs})

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {}
        for p in params:
            spec = self._specs.get(p.name)
            if spec is None:
                continue  # e.g. use_sim_time
            if spec.when == CONFIGURE and self._configured:
                return SetParametersResult(
                    successful=False,
                    reason=f"{p.name}: applied at configure; deactivate and clean up the node "
                           "first (ros2 lifecycle set <node> deactivate / cleanup)")
            changes[p.name] = p.value
        if not changes:
            return SetParametersResult(successful=True)
        new = self._params.replace(**changes)
        cross = new.cross_field_errors()
        errors = [e for e in new.validate() if e not in cross and e.split(":", 1)[0] in changes]
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(errors))
        for err in cross:  # e.g. fx set before fy: accepted, unused until the pair is complete
            if any(name in err for name in changes):
                self.get_logger().warning(f"{err}: ignored until both are set")
        self._params = new
        for name in changes:
            self._decl_errors.pop(name, None)
        return SetParametersResult(successful=True)

    @property
    def params(self) -> NodeParams:
        return self._params

    # ------------------------------------------------------------------------ lifecycle
    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state: unconfigured, inactive, active, finalized."""
        return self._state_machine.current_state[1]

    def autostart(self) -> bool:
        """configure + activate; True when the node ends up active."""
        if self.trigger_configure() != SUCCESS:
            return False
        return self.trigger_activate() == SUCCESS

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            ret = self._configure()
        except Exception as exc:  # never let a bad model/backend escalate to ErrorProcessing
            ret = self._configure_failed(f"unexpected error: {type(exc).__name__}: {exc}")
        if ret != SUCCESS:
            return ret
        return super().on_configure(state)

    def _configure_failed(self, message: str) -> TransitionCallbackReturn:
        self._config_error = message
        self.get_logger().error(f"configure failed: {message}")
        self._release_publishers()
        self._model = None
        return FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        p = self._params = self._read_parameters()
        errors = list(self._decl_errors.values()) + p.validate()
        if errors:
            return self._configure_failed("invalid parameters: " + "; ".join(errors))
        try:
            path = resolve_model_path(p.model)
        except ModelPathError as exc:
            return self._configure_failed(str(exc))
        t0 = time.perf_counter()
        try:
            model = self._load_model(path, p)
        except ModelLoadError as exc:
            return self._configure_failed(str(exc))
        self._model = model
        self.get_logger().info(
            f"model {model.name!r} from {path} on {model.backend} loaded in "
            f"{time.perf_counter() - t0:.1f} s (tasks: {', '.join(model.predictor.tasks)}"
            f"{f', {model.num_classes} classes' if model.num_classes else ''})")
        out_qos = make_qos(p.output_qos)
        self._pubs = {name: self.create_lifecycle_publisher(OUTPUT_TYPES[name], name, out_qos)
                      for name in ALL_OUTPUTS}
        if InferenceStats is not None:
            self._stats_pub = self.create_lifecycle_publisher(InferenceStats, STATS_TOPIC,
                                                              make_qos("reliable", 10))
            if model.num_classes:
                self._class_table_pub = self.create_lifecycle_publisher(
                    ClassTable, CLASS_TABLE_TOPIC, latched_qos())
        self._configured = True
        self._config_error = ""
        return SUCCESS

    def _load_model(self, path: Path, p: NodeParams) -> _Model:
        from xnet_model import ConfigError, Predictor, WeightsError
        from xnet_model.runtime.backends import BackendError

        device = None if p.device == "auto" else p.device
        try:
            # auto picks its own precision per backend; every other backend gets the parameter
            options = {} if p.backend == "auto" else {"precision": p.precision}
            predictor = Predictor(path, backend=p.backend, device=device, **options)
        except BackendError as exc:
            what = "device" if "device" in str(exc) else "backend"
            raise ModelLoadError(f"{what}: {exc}") from exc
        except (WeightsError, ConfigError) as exc:
            raise ModelLoadError(f"model: {path} is missing or corrupt: {exc}") from exc
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelLoadError(f"model: cannot load {path}: {type(exc).__name__}: {exc}") \
                from exc
        cfg = predictor.cfg
        k = predictor.num_classes
        names, palette = [], None
        if k:
            names = list(cfg.semantic.class_names or [f"class_{i}" for i in range(k)])
            palette = (np.asarray(cfg.semantic.palette, dtype=np.uint8).reshape(k, 3)
                       if cfg.semantic.palette is not None else default_palette(k))
        if p.warmup:
            h, w = cfg.data.input_size or (256, 256)
            try:
                predictor.predict(np.zeros((int(h), int(w), 3), np.uint8))
            except Exception as exc:
                backend = predictor.backend.describe()
                raise ModelLoadError(f"model: warm-up inference failed on {backend}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        min_depth = float(cfg.depth.min_depth) if cfg.depth is not None else 1e-3
        return _Model(predictor=predictor, path=path, name=cfg.name,
                      backend=predictor.backend.describe(), num_classes=k, class_names=names,
                      palette=palette, min_depth=min_depth)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # activates the lifecycle publishers
        if ret != SUCCESS:
            return ret
        p = self._params
        self._warned.clear()
        self._publish_class_table()
        self._worker = InferenceWorker(self._process_frame, on_error=self._on_frame_error)
        self._worker.start()
        in_qos = make_qos(p.input_qos)
        if p.image_transport == "compressed":
            self._subs.append(self.create_subscription(
                CompressedImage, INPUT_COMPRESSED, self._on_compressed, in_qos))
        else:
            self._subs.append(self.create_subscription(Image, INPUT_IMAGE, self._on_image,
                                                       in_qos))
        self._subs.append(self.create_subscription(CameraInfo, INPUT_CAMERA_INFO,
                                                   self._on_camera_info, in_qos))
        self._active = True
        self._activated_mono = time.monotonic()
        topic = self.topic_name(
            INPUT_COMPRESSED if p.image_transport == "compressed" else INPUT_IMAGE)
        self.get_logger().info(f"active: waiting for images on {topic}")
        return SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release_publishers()
        self._model = None
        self._configured = False
        self._camera_info = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release_publishers()
        self._model = None
        self._configured = False
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state {state.label}: releasing everything")
        self._stop_processing()
        self._release_publishers()
        self._model = None
        self._configured = False
        return SUCCESS  # -> unconfigured

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        worker, self._worker = self._worker, None
        if worker is not None:
            if not worker.stop(timeout=30.0):
                self.get_logger().warning("inference thread did not stop within 30 s")
            self._last_snapshot = worker.snapshot()

    def _release_publishers(self) -> None:
        for pub in [*self._pubs.values(), self._stats_pub, self._class_table_pub]:
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._pubs, self._stats_pub, self._class_table_pub = {}, None, None

    def destroy_node(self) -> None:
        self._stop_processing()
        super().destroy_node()

    # ------------------------------------------------------------------------- inputs
    def _anyone_listening(self) -> bool:
        pubs = [*self._pubs.values(), self._stats_pub]
        return any(pub is not None and pub.get_subscription_count() > 0 for pub in pubs)

    def _accept(self, msg: Any, compressed: bool) -> None:
        worker = self._worker
        if worker is None:
            return
        if self._params.lazy and not self._anyone_listening():
            worker.skip()
            return
        worker.submit(_Frame(msg, compressed, time.monotonic()))

    def _on_image(self, msg: Image) -> None:
        self._accept(msg, False)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._accept(msg, True)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            intr = Intrinsics.from_camera_info(msg)
        except ValueError as exc:
            self._camera_info_rejected += 1
            self._log_input_error(
                f"camera_info on {self.topic_name(INPUT_CAMERA_INFO)} rejected "
                f"({self._camera_info_rejected} so far): {exc}; keeping the previous intrinsics")
            return
        self._camera_info = intr

    def _log_input_error(self, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=self._params.error_throttle_sec)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(message)

    def _on_frame_error(self, frame: _Frame, exc: BaseException) -> None:
        worker = self._worker
        failed = worker.snapshot().failed + 1 if worker is not None else "?"
        kind = "compressed image" if frame.compressed else "image"
        self._log_input_error(f"{kind} skipped ({failed} failed so far): "
                              f"{type(exc).__name__}: {exc}")

    def _intrinsics_for(self, height: int, width: int, p: NodeParams) -> Intrinsics | None:
        """camera_info (scaled when the image was resized with the same aspect ratio), else the
        fx/fy/cx/cy parameters, else None."""
        info = self._camera_info
        if info is not None:
            if (info.width, info.height) == (width, height):
                return info
            if abs(info.width / info.height - width / height) < 0.01 * width / height:
                return info.scaled(width, height)
            self._warn_once("info_size", f"camera_info is for {info.width}x{info.height} but "
                                         f"the images are {width}x{height}: not using it")
        if p.has_intrinsics:
            return Intrinsics(p.fx, p.fy, p.cx or (width - 1) / 2.0,
                              p.cy or (height - 1) / 2.0, width, height)
        return None

    # ------------------------------------------------------------------ worker thread
    def _wanted(self, p: NodeParams) -> tuple[set[str], bool]:
        if not p.lazy:
            return set(ALL_OUTPUTS), self._stats_pub is not None
        wanted = {name for name, pub in self._pubs.items() if pub.get_subscription_count() > 0}
        stats = self._stats_pub is not None and self._stats_pub.get_subscription_count() > 0
        return wanted, stats

    def _process_frame(self, frame: _Frame) -> dict[str, float] | None:
        """Worker thread: decode, infer, build, publish. Raises for bad input (-> failed)."""
        p, model = self._params, self._model
        if model is None:
            return None
        t0 = time.perf_counter()
        msg = frame.msg
        if frame.compressed:
            rgb = decode_compressed(msg)
        else:
            rgb = to_rgb(image_to_array(msg), msg.encoding)
        t_decoded = time.perf_counter()
        wanted, stats_wanted = self._wanted(p)
        if not wanted and not stats_wanted:
            return None  # every subscriber left meanwhile: skipped
        height, width = rgb.shape[:2]
        intr = self._intrinsics_for(height, width, p)
        if intr is None and (POINTS in wanted or DEPTH_INFO in wanted):
            self._warn_once("no_intrinsics", (
                f"no camera_info received on {self.topic_name(INPUT_CAMERA_INFO)} and "
                "the fx/fy parameters are 0: not publishing points or depth/camera_info until "
                "one of them is available"))
        pred = model.predictor.predict(rgb)
        t_pred = time.perf_counter()
        opts = OutputOptions(
            output_size=p.output_size, min_depth=p.min_depth or model.min_depth,
            points_stride=p.points_stride, points_max_range=p.points_max_range or None,
            points_organized=p.points_organized, palette=model.palette,
            num_classes=model.num_classes)
        out = build_outputs(rgb, pred.depth, pred.labels, intr, opts, wanted)
        frame_id = p.frame_id or msg.header.frame_id
        if not frame_id:
            self._warn_once("frame_id", "input images have an empty header.frame_id and the "
                                        "frame_id parameter is empty: outputs have none either")
        header = Header(stamp=msg.header.stamp, frame_id=frame_id)
        for name, fields in out.fields.items():
            pub = self._pubs.get(name)
            if pub is not None:
                pub.publish(output_msg(name, header, fields))
                self.published[name] += 1
        t_end = time.perf_counter()
        out_h, out_w = p.output_size or (height, width)
        self._last_sizes = (width, height, out_w, out_h)
        timings = {
            "pre_ms": (t_decoded - t0) * 1e3 + pred.timings.get("pre_ms", 0.0),
            "infer_ms": pred.timings.get("infer_ms", 0.0),
            "post_ms": pred.timings.get("post_ms", 0.0) + (t_end - t_pred) * 1e3,
            "total_ms": self._end_to_end_ms(msg.header.stamp, frame.received_mono),
        }
        if stats_wanted:
            self._publish_stats(header, timings)
        return timings

    def _end_to_end_ms(self, stamp: Any, received_mono: float) -> float:
        """Header stamp -> now when the stamp is on this clock (within a minute), else
        reception -> now (replayed bags, cameras with their own clock)."""
        ns = stamp_ns(stamp)
        if ns > 0:
            age_ms = (self.get_clock().now().nanoseconds - ns) / 1e6
            if -1000.0 < age_ms < 60_000.0:
                return max(age_ms, 0.0)
        return (time.monotonic() - received_mono) * 1e3

    def _publish_stats(self, header: Header, t: dict[str, float]) -> None:
        pub, worker, model = self._stats_pub, self._worker, self._model
        if pub is None or worker is None or model is None:
            return
        s = worker.snapshot()
        in_w, in_h, out_w, out_h = self._last_sizes
        u32, u16 = 0xFFFFFFFF, 0xFFFF
        pub.publish(InferenceStats(
            header=header, backend=model.backend, model_name=model.name,
            preprocess_ms=float(t["pre_ms"]), infer_ms=float(t["infer_ms"]),
            postprocess_ms=float(t["post_ms"]), total_ms=float(t["total_ms"]),
            frames_received=s.received & u32,
            frames_processed=(s.processed + 1) & u32,  # this frame, counted when it returns
            frames_dropped=s.dropped_total & u32, frames_failed=s.failed & u32,
            rate_hz=float(s.rate_hz), input_width=min(in_w, u16), input_height=min(in_h, u16),
            output_width=min(out_w, u16), output_height=min(out_h, u16)))

    def _publish_class_table(self) -> None:
        pub, model = self._class_table_pub, self._model
        if pub is None or model is None or ClassTable is None:
            return
        pal = model.palette
        classes = [ClassInfo(id=i, name=str(name), r=int(pal[i, 0]), g=int(pal[i, 1]),
                             b=int(pal[i, 2]))
                   for i, name in enumerate(model.class_names)]
        header = Header(stamp=self.get_clock().now().to_msg())
        pub.publish(ClassTable(header=header, model_name=model.name, classes=classes))

    # -------------------------------------------------------------------- diagnostics
    def worker_snapshot(self) -> WorkerSnapshot:
        worker = self._worker
        return worker.snapshot() if worker is not None else self._last_snapshot

    def output_subscription_counts(self) -> dict[str, int]:
        counts = {name: pub.get_subscription_count() for name, pub in self._pubs.items()}
        if self._stats_pub is not None:
            counts[STATS_TOPIC] = self._stats_pub.get_subscription_count()
        return counts

    def diagnostic_status(self) -> DiagnosticStatus:
        s = self.worker_snapshot()
        model = self._model
        p = self._params
        period = p.diagnostics_period
        level, message = DiagnosticStatus.OK, ""
        if not self._configured:
            level = DiagnosticStatus.ERROR if self._config_error else DiagnosticStatus.WARN
            message = self._config_error or f"not configured (state {self.lifecycle_state})"
        elif not self._active:
            level, message = DiagnosticStatus.WARN, f"inactive (state {self.lifecycle_state})"
        elif s.received == 0 or s.last_received_age_s > max(5.0, 3 * period):
            level = DiagnosticStatus.WARN
            message = "no input images" + (
                f" for {s.last_received_age_s:.0f} s" if s.received else " yet")
        elif s.failed and s.last_error and s.last_processed_age_s > s.last_received_age_s + 1:
            level, message = DiagnosticStatus.ERROR, f"input failing: {s.last_error}"
        elif p.lazy and not self._anyone_listening():
            message = "idle: no subscribers (frames are skipped)"
        elif s.last_processed_age_s > max(5.0, 3 * period):
            level, message = DiagnosticStatus.WARN, "no frame processed recently"
        else:
            message = f"{s.rate_hz:.1f} Hz" if s.processed else "idle"
        lat = s.latency
        values = {
            "state": self.lifecycle_state,
            "model": model.name if model else "",
            "model_path": str(model.path) if model else "",
            "backend": model.backend if model else "",
            "rate_hz": f"{s.rate_hz:.2f}",
            "frames_received": s.received, "frames_processed": s.processed,
            "frames_dropped_busy": s.dropped, "frames_skipped_no_subscribers": s.skipped,
            "frames_failed": s.failed, "frames_in_flight": s.in_flight,
            "camera_info_rejected": self._camera_info_rejected,
            "intrinsics": ("camera_info" if self._camera_info is not None
                           else "parameters" if p.has_intrinsics else "none"),
            "input_size": "{}x{}".format(*self._last_sizes[:2]),
            "output_size": "{}x{}".format(*self._last_sizes[2:]),
            "last_error": s.last_error,
        }
        values.update({f"published_{name.replace('/', '_')}": self.published[name]
                       for name in ALL_OUTPUTS})
        for key in ("pre_ms", "infer_ms", "post_ms", "total_ms"):
            summary = lat.get(key)
            if summary is not None and summary.count:
                values[f"latency_{key[:-3]}_mean_ms"] = f"{summary.mean:.2f}"
                values[f"latency_{key[:-3]}_p95_ms"] = f"{summary.p95:.2f}"
        return DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: inference",
            message=message, hardware_id=model.backend if model else "",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    def _on_diagnostics_timer(self) -> None:
        status = self.diagnostic_status()
        self._diag_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))
        log_period = self._params.log_period
        now = time.monotonic()
        if self._active and log_period > 0 and now - self._last_log >= log_period:
            self._last_log = now
            s = self.worker_snapshot()
            lat = {k: v.mean for k, v in s.latency.items()}
            self.get_logger().info(
                f"{s.rate_hz:.1f} Hz; latency ms pre {lat['pre_ms']:.1f} infer "
                f"{lat['infer_ms']:.1f} post {lat['post_ms']:.1f} end-to-end "
                f"{lat['total_ms']:.1f}; frames received {s.received} processed {s.processed} "
                f"dropped {s.dropped} skipped {s.skipped} failed {s.failed}")


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message starts with the parameter to fix."""


# ------------------------------------------------------------------------------------ main
def main(args: list[str] | None = None) -> int:
    """`ros2 run xnet_ros xnet_node [--ros-args ...]`: spin the node until Ctrl-C."""
    tune_malloc()
    rclpy.init(args=args)
    node = None
    try:
        node = XnetNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # the context was shut down (signal) while starting: a clean exit
    finally:
        if node is not None:
            # the context may already be shut down by the signal handler
            with contextlib.suppress(Exception):
                node._stop_processing()
            with contextlib.suppress(Exception):
                node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
