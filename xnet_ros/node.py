"""xnet_node: xNet depth + semantic segmentation on ROS 2 camera streams (rclpy lifecycle node).

A thin rclpy layer over ROS-free modules (docs/node.md, "Data flow"):

    image of camera c ──> c's latest-frame slot ──> inference thread: the pending frames of
        all cameras through FramePipeline.infer_batch (pipeline.py): decode + rectify -> one
        batched forward pass
    ──> finish_predicted = build_outputs per camera, on a delivery thread while the next batch
        runs where the forward pass leaves the CPU to it (pipeline.overlaps_delivery), else
        on the same thread ──> the worker counts the frames ──> _deliver(result, snapshot):
        fields -> c's messages

`params`: parameter schema and validation; `worker`: slots, thread, counters per camera;
`diagnostics`: what /diagnostics says; `ros_messages`: rclpy messages and QoS. Camera '' (no
`cameras` parameter) has the topics without prefix; camera `front` has `front/image`, ...

Lifecycle: configure = validate parameters, load the model, create publishers; activate =
publish the class table, start the worker, subscribe; deactivate undoes activate; cleanup,
shutdown and error release everything. `autostart()` = configure + activate (`xnet_ros.main`
calls it when the `autostart` parameter is true). A failed configure is logged and reported on
/diagnostics; the node stays unconfigured.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from . import native
from .cameras import camera_topic
from .diagnostics import frame_error_message
from .node_status import NodeStatus
from .outputs import BufferPool
from .params import (
    ALL_OUTPUTS,
    CLASS_TABLE_TOPIC,
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
from .pipeline import (
    FrameInput,
    FramePipeline,
    FrameResult,
    FrameSettings,
    ModelLoadError,
    inference_lanes,
    lanes_advice,
    overlaps_delivery,
)
from .pipeline import load_predictor as _load_predictor
from .rcl_publish import SerializedPublishing
from .ros_messages import (
    MSG_IMPORT_ERROR,
    OUTPUT_TYPES,
    ClassTable,
    InferenceStats,
    Publishers,
    class_table_msg,
    declare_parameters,
    latched_qos,
    make_qos,
    output_msg,
    overridable,
    stats_msg,
)
from .worker import InferenceWorker, WorkerSnapshot

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
DEPRECATED_QOS = {"input_qos": "qos_overrides./<ns>/image.subscription.reliability",
                  "output_qos": "qos_overrides./<ns>/<output>.publisher.reliability"}


class XnetNode(NodeStatus, LifecycleNode):
    """Lifecycle node `xnet_node`; see the module docstring and docs/node.md."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._specs = {s.name: s for s in param_specs()}
        self._decl_errors = declare_parameters(self, list(self._specs.values()))
        for err in self._decl_errors.values():
            self.get_logger().error(f"invalid parameter: {err}")
        self._params = self._read_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._pipeline: FramePipeline | None = None  # configured: the model and its use
        self._model_path, self._backend, self._config_error = Path(), "", ""
        self._pubs = Publishers()  # the outputs and ~/stats
        self._class_table_pub: Any = None
        self._serialized: SerializedPublishing | None = None  # configured, publish_serialized
        self._subs: list[Any] = []
        self._worker: InferenceWorker | None = None  # active
        self._last_snapshot = WorkerSnapshot()
        self._cameras = self._params.camera_names  # configured: [''] = one, no prefix
        self._info_rejected: Counter[str] = Counter()  # camera_info rejected per camera
        self._last_sizes: dict[str, tuple[int, int, int, int]] = {}  # in w, h, out w, h
        self.published: Counter[str] = Counter()  # messages published per output topic
        self.publish_failed: Counter[str] = Counter()  # per output topic: not sent
        self._last_log = time.monotonic()
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_timer(self._params.diagnostics_period, self._on_diagnostics_timer)
        if MSG_IMPORT_ERROR:
            self.get_logger().warning(
                f"xnet_ros.msg is not importable ({MSG_IMPORT_ERROR}): {STATS_TOPIC} and "
                f"{CLASS_TABLE_TOPIC} are not published. Build the interfaces (colcon build, or "
                "`make msgs` + `source tools/ros_env.sh`).")

    @property
    def params(self) -> NodeParams:
        return self._params

    @property
    def meta(self) -> Any:
        """The loaded model's xnet_model.ModelMetadata; None while unconfigured."""
        return self._pipeline.meta if self._pipeline is not None else None

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state: unconfigured, inactive, active, finalized."""
        return self._state_machine.current_state[1]

    def topic_name(self, topic: str) -> str:
        """The fully qualified name of a topic of this node (for log messages)."""
        with contextlib.suppress(Exception):
            return self.resolve_topic_name(topic)
        return topic

    # ----------------------------------------------------------------------- parameters
    def _read_parameters(self) -> NodeParams:
        values = {}
        for name, spec in self._specs.items():
            try:
                values[name] = self.get_parameter(name).value
            except ParameterUninitializedException:  # an empty string array given as []
                values[name] = spec.default
        return NodeParams(**values)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in self._specs}
        new, errors, pending = self._params.updated(
            changes, configured=self.lifecycle_state in ("inactive", "active"))
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(map(str, errors)))
        for err in pending:
            self.get_logger().warning(f"{err}: ignored until both are set")
        self._params = new
        for name in changes:
            self._decl_errors.pop(name, None)
        if self._pipeline is not None:
            self._pipeline.settings = FrameSettings.from_params(new)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------ lifecycle
    def autostart(self) -> bool:
        """configure + activate; True when the node ends up active."""
        return (self.trigger_configure() == SUCCESS and self.trigger_activate() == SUCCESS)

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._config_error = self._configure()
        except (ModelPathError, ModelLoadError) as exc:
            self._config_error = str(exc)
        except Exception as exc:  # never let a bad model/backend escalate to ErrorProcessing
            self._config_error = f"unexpected error: {type(exc).__name__}: {exc}"
        if not self._config_error:
            return SUCCESS
        self.get_logger().error(f"configure failed: {self._config_error}")
        self._release()
        return FAILURE

    def _configure(self) -> str:
        """Load the model, create the publishers; an error message ('' = configured)."""
        p = self._params = self._read_parameters()
        errors = [*self._decl_errors.values(), *p.validate()]
        if errors:
            return "invalid parameters: " + "; ".join(map(str, errors))
        self._cameras = p.camera_names
        path, t0 = resolve_model_path(p.model), time.perf_counter()
        self.get_logger().info(f"loading the model from {path} (backend: {p.backend})")
        predictor = _load_predictor(path, p.backend, None if p.device == "auto" else p.device,
                                    None if p.backend == "auto" else p.precision, p.warmup,
                                    p.cpu_streams, p.batch_size)
        self._serialized, why_not = (SerializedPublishing.load() if p.publish_serialized
                                     else (None, ""))
        if why_not:
            self.get_logger().warning(f"publish_serialized: {why_not}; publishing with rclpy")
        self._pipeline = FramePipeline(
            predictor, FrameSettings.from_params(p), wanted=self._wanted,
            clock_ns=lambda: self.get_clock().now().nanoseconds,
            on_warning=lambda key, message: self.get_logger().warning(message),
            buffers=BufferPool(headroom=self._serialized is not None))
        meta, self._model_path = predictor.meta, path
        self._backend = predictor.backend.describe()
        self.get_logger().info(
            f"model {meta.name!r} from {path} on {self._backend}"
            f"{f' ({predictor.cpu_streams} CPU streams)' if predictor.cpu_streams > 1 else ''}"
            " loaded in "
            f"{time.perf_counter() - t0:.1f} s (tasks: {', '.join(meta.tasks)}"
            f"{f', {meta.num_classes} classes' if meta.num_classes else ''})")
        if advice := lanes_advice(predictor):
            self.get_logger().info(advice)
        log = self.get_logger()
        (log.warning if native.missing() else log.info)(f"post-processing: {native.status()}")
        for name, replacement in DEPRECATED_QOS.items():
            if getattr(p, name) != getattr(NodeParams(), name):
                self.get_logger().warning(f"{name} is deprecated and will be removed; use the "
                                          f"ROS QoS override {replacement} (docs/node.md)")
        publishers = [(camera_topic(camera, name), OUTPUT_TYPES[name], make_qos(p.output_qos))
                      for camera in self._cameras for name in ALL_OUTPUTS]
        if InferenceStats is not None:
            publishers.append((STATS_TOPIC, InferenceStats, make_qos("reliable", 10)))
            if meta.num_classes:
                self._class_table_pub = self.create_lifecycle_publisher(
                    ClassTable, CLASS_TABLE_TOPIC, latched_qos())
        for name, msg_type, qos in publishers:
            self._pubs.add(name, self.create_lifecycle_publisher(
                msg_type, name, qos, event_callbacks=self._pubs.event_callbacks(name),
                qos_overriding_options=overridable()))
        return ""

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # activates the lifecycle publishers
        if ret != SUCCESS:
            return ret
        p, pipeline = self._params, self._pipeline
        pipeline.reset_warnings()
        self._publish_class_table()
        lanes = inference_lanes(pipeline.predictor, p.batch_size)
        pipeline.split_batches = lanes == 1
        self._worker = InferenceWorker(
            pipeline.infer_batch, finish=pipeline.finish_predicted,
            overlap=overlaps_delivery(pipeline.predictor), on_done=self._deliver,
            batched=True, max_batch=p.batch_size, lanes=lanes, cameras=tuple(self._cameras))
        self._worker.start()
        compressed = p.image_transport == "compressed"
        in_qos, topics = make_qos(p.input_qos), []
        for camera in self._cameras:
            topics.append(camera_topic(camera, INPUT_COMPRESSED if compressed else INPUT_IMAGE))
            self._subs += [
                self.create_subscription(
                    CompressedImage if compressed else Image, topics[-1],
                    lambda msg, c=camera: self._accept(msg, compressed, c), in_qos,
                    qos_overriding_options=overridable()),
                self.create_subscription(
                    CameraInfo, camera_topic(camera, INPUT_CAMERA_INFO),
                    lambda msg, c=camera: self._on_camera_info(msg, c), in_qos,
                    qos_overriding_options=overridable())]
        batch = f" (batches of up to {p.batch_size})" if len(self._cameras) > 1 else ""
        self.get_logger().info("active: waiting for images on "
                               f"{', '.join(map(self.topic_name, topics))}{batch}")
        return SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    on_shutdown = on_cleanup

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state {state.label}: releasing everything")
        self._release()
        return SUCCESS  # -> unconfigured

    def _release(self) -> None:
        """Back to unconfigured: stop processing, destroy the publishers, drop the model."""
        self._stop_processing()
        for pub in [*self._pubs.clear(), self._class_table_pub]:
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._class_table_pub = self._pipeline = None

    def _stop_processing(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        worker, self._worker = self._worker, None
        if worker is not None:
            if not worker.stop(timeout=30.0):
                self.get_logger().warning("inference thread did not stop within 30 s")
            self._last_snapshot = worker.snapshot()

    def destroy_node(self) -> None:
        self._stop_processing()
        super().destroy_node()

    # ---------------------------------------------------------------------------- inputs
    def _wanted(self, camera: str = "") -> frozenset[str]:
        """The camera's outputs (and ~/stats) to produce; asked by the pipeline after decoding
        a frame. Without `lazy`: all of them."""
        counts, lazy = self._pubs.counts(), self._params.lazy
        topics = {camera_topic(camera, name): name for name in ALL_OUTPUTS}
        topics[STATS_TOPIC] = STATS_TOPIC
        return frozenset(name for topic, name in topics.items()
                         if topic in counts and (counts[topic] > 0 or not lazy))

    def _accept(self, msg: Any, compressed: bool, camera: str = "") -> None:
        worker = self._worker
        if worker is None:
            return
        if self._params.lazy and not self._wanted(camera):
            worker.skip(camera)
            return
        worker.submit(FrameInput(msg, compressed, camera=camera), camera)

    def _on_camera_info(self, msg: CameraInfo, camera: str = "") -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            pipeline.set_camera_info(msg, camera)
        except ValueError as exc:
            self._info_rejected[camera] += 1
            self._log_input_error(
                f"camera_info on {self.topic_name(camera_topic(camera, INPUT_CAMERA_INFO))} "
                f"rejected ({self._info_rejected[camera]} so far): {exc}; keeping the previous "
                "intrinsics")

    def _log_input_error(self, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=self._params.error_throttle_sec)

    # ----------------------------------------------------------------- worker thread: out
    def _deliver(self, frame: FrameInput, result: FrameResult | None,
                 error: BaseException | None, s: WorkerSnapshot) -> float:
        """Called by the worker after it counted the frame: log it (failed) or publish its
        outputs and stats. Returns the milliseconds spent publishing the outputs."""
        if error is not None:
            self._log_input_error(frame_error_message(frame.compressed, s.failed, error,
                                                      frame.camera))
            return 0.0
        t0 = time.perf_counter()
        header = Header(stamp=result.header.stamp, frame_id=result.frame_id)
        failed = []
        try:
            for name, fields in result.outputs.fields.items():
                topic = camera_topic(result.camera, name)
                pub = self._pubs.get(topic)
                if pub is None:
                    continue
                try:
                    if not (self._serialized
                            and self._serialized.publish(pub, name, header, fields)):
                        pub.publish(output_msg(name, header, fields))
                except Exception as exc:  # one output that cannot go out spares the others
                    self.publish_failed[topic] += 1
                    failed.append(f"{self.topic_name(topic)}: {type(exc).__name__}: {exc}")
                    continue
                self.published[topic] += 1
        finally:
            result.outputs.release()  # published (copied): their buffers serve the next frames
        publish_ms = (time.perf_counter() - t0) * 1e3
        if failed:
            self._log_input_error(f"publishing failed ({self.publish_failed.total()} so far): "
                                  + "; ".join(failed))
        self._last_sizes[result.camera] = (*result.input_size, *result.output_size)
        stats = self._pubs.get(STATS_TOPIC)
        if stats is not None and STATS_TOPIC in result.wanted:
            stats.publish(stats_msg(header, result, s, self._backend,
                                    self._pipeline.meta.name, publish_ms))
        return publish_ms

    def _publish_class_table(self) -> None:
        if self._class_table_pub is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._class_table_pub.publish(class_table_msg(header, self._pipeline.meta))
