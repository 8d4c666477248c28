"""`xnet bag infer`: run the model over a bag's images and write what the node would publish.

Frames go through the node's own `xnet_ros.pipeline.FramePipeline`, stage by stage, and the
outputs are written under the output namespace with the input image's header (stamp, frame_id)
and bag timestamp. Three stages overlap: reading + decoding + rectification (read-ahead thread),
the model (caller's thread), output building + serialisation + writing (write-behind thread).
Several image topics (cameras, see `cameras.py`) are read in the same pass, their frames batched
into one forward pass as the node does, and each camera's outputs written under
`<namespace>/<camera>/`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cameras import camera_topic
from ..outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from ..params import CLASS_TABLE_TOPIC
from ..pipeline import DecodedFrame, FrameInput, FramePipeline, FrameSettings, stamp_ns
from .cameras import (
    CameraInfoIndex,
    FrameBatcher,
    as_list,
    camera_info_topic,
    camera_names,
    load_camera_infos,
)
from .io import BagError, BagReader, BagReadError, BagWriter, Topic, progress_bar, read_ahead
from .messages import (
    CLASS_TABLE,
    COMPRESSED_IMAGE,
    IMAGE,
    LATCHED_QOS,
    OUTPUT_QOS,
    MessageFactory,
)

log = logging.getLogger(__name__)

IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
MAX_LOGGED_FAILURES = 3


@dataclass
class InferOptions:
    image_topic: str | Sequence[str]  # several: one camera each, batched
    # None: each image topic's sibling camera_info, if any; else one per image topic
    camera_info_topic: str | Sequence[str] | None = None
    use_camera_info: bool = True
    max_batch: int = 0  # frames per forward pass; 0 = the number of cameras
    every: int = 1
    storage: str = "mcap"
    copy_input: bool = False
    namespace: str = "/xnet"
    outputs: frozenset[str] = frozenset(ALL_OUTPUTS)
    class_table: bool = True
    settings: FrameSettings = FrameSettings()  # output size, points, fallback K, frame_id
    read_ahead: int = 4  # frames decoded ahead of the model
    write_behind: int = 4  # frames queued for writing behind the model
    quiet: bool = False


@dataclass
class InferSummary:
    images: int = 0  # messages read on the image topics
    processed: int = 0  # frames run through the model and written
    batches: int = 0  # forward passes
    failed: int = 0  # frames whose image could not be decoded
    written: dict[str, int] = field(default_factory=dict)  # output topic -> messages
    copied: int = 0  # input messages copied (--copy-input)
    seconds: float = 0.0
    model_seconds: float = 0.0  # inside Predictor.predict; the rest is reading and writing
    read_error: str | None = None  # the input broke off here; the output holds what came before
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Frame:
    index: int  # position on its image topic (before --every)
    timestamp: int  # bag timestamp, ns
    decoded: DecodedFrame  # .camera: whose


@dataclass
class RawMessage:
    topic: str
    timestamp: int
    data: Any


def output_topic(namespace: str, name: str) -> str:
    namespace = namespace.strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"


class WriteBehind:
    """Runs jobs in submission order on one thread, with at most `depth` waiting."""

    def __init__(self, depth: int):
        self._depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bag-write") if depth > 0 else None
        self._pending: deque[Future[Any]] = deque()

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            job(*args)
            return
        self._pending.append(self._pool.submit(job, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def call(self, job: Callable[..., Any], *args: Any) -> Any:
        """Run `job` on the writer thread (sqlite3 connections are bound to their thread)."""
        if self._pool is None:
            return job(*args)
        self.drain()
        return self._pool.submit(job, *args).result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def cancel_pending(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()

    def shutdown(self) -> None:
        self.cancel_pending()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class BagInference:
    """One `xnet bag infer` run: validate inputs, then stream frames through model and writer."""

    def __init__(self, predictor: Any, opts: InferOptions):
        if opts.every < 1:
            raise BagError(f"--every must be >= 1, got {opts.every}")
        self.opts = opts
        self.summary = InferSummary()
        self.pipeline = FramePipeline(predictor, opts.settings,
                                      wanted=lambda camera: self.wanted[camera],
                                      on_warning=lambda key, message: self._warn(message))
        self.wanted: dict[str, frozenset[str]] = {}  # per camera
        self.topics: dict[str, str] = {}  # camera_topic(camera, output) -> bag topic

    def run(self, bag_path: str | Path, out_path: str | Path) -> InferSummary:
        start = time.perf_counter()
        with BagReader(bag_path) as bag:
            self.cameras = self._cameras(bag)
            for camera, (_, calibrations) in self.cameras.items():
                self.wanted[camera] = frozenset(self._wanted_outputs(calibrations))
                for name in self.wanted[camera]:
                    key = camera_topic(camera, name)
                    self.topics[key] = output_topic(self.opts.namespace, key)
            copy_topics = self._copy_topics(bag)
            self.factory = MessageFactory(bag.typestore)
            self.class_table = self._class_table_topic()
            writes = WriteBehind(self.opts.write_behind)
            try:
                self.writer = writes.call(BagWriter, out_path, bag.typestore, self.opts.storage,
                                          [OUTPUT_QOS])
            except BaseException:
                writes.shutdown()
                raise
            try:
                for topic in copy_topics:
                    msgdef, rihs01, qos = bag.connection_info(topic)
                    writes.call(self.writer.add_topic, topic, bag.topics[topic].msgtype,
                                msgdef, rihs01, qos)
                self._stream(bag, copy_topics, writes)
            except BagReadError as exc:
                self.summary.read_error = str(exc)
            except KeyboardInterrupt:
                self.summary.interrupted = True
            except BaseException:
                writes.cancel_pending()
                with suppress(Exception):
                    writes.call(self.writer.abort)
                writes.shutdown()
                raise
            incomplete = self.summary.read_error or (
                "interrupted" if self.summary.interrupted else None)
            try:
                writes.call(self.writer.close, incomplete)
            finally:
                writes.shutdown()
        counts = self.writer.counts
        self.summary.written = {t: counts[t] for t in self.topics.values() if counts[t]}
        self.summary.copied = sum(counts[t] for t in copy_topics)
        self.summary.seconds = time.perf_counter() - start
        if self.summary.processed == 0 and not (self.summary.read_error or
                                                 self.summary.interrupted):
            names = ", ".join(image.name for image, _ in self.cameras.values())
            raise BagError(f"no image on {names} could be processed "
                           f"({self.summary.failed} failed to decode)")
        return self.summary

    # -- setup ------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.summary.warnings.append(message)

    def _cameras(self, bag: BagReader) -> dict[str, tuple[Topic, CameraInfoIndex | None]]:
        """camera name -> (its image topic, its camera infos or None)."""
        topics = as_list(self.opts.image_topic)
        infos = as_list(self.opts.camera_info_topic)
        if infos and len(infos) != len(topics):
            raise BagError(f"{len(infos)} --camera-info-topic for {len(topics)} "
                           "--image-topic: give one per image topic, in the same order")
        images = [bag.topic(t, IMAGE_TYPES, "image") for t in topics]
        names = camera_names([image.name for image in images])
        return {name: (image, self._camera_infos(bag, image, infos[i] if infos else None, name))
                for i, (name, image) in enumerate(zip(names, images))}

    def _camera_infos(self, bag: BagReader, image: Topic, given: str | None,
                      camera: str) -> CameraInfoIndex | None:
        opts = self.opts
        if not opts.use_camera_info:
            name, reason = None, "disabled by --no-camera-info"
        else:
            name, reason = camera_info_topic(bag, image, given)
        if name is not None:
            calibrations, problem = load_camera_infos(bag, name, opts.settings.rectify)
            if calibrations:
                return calibrations
            reason = f"no usable camera_info on {name}" + (f" ({problem})" if problem else "")
        dropped = [output_topic(opts.namespace, camera_topic(camera, n))
                   for n in (DEPTH_INFO, POINTS) if n in opts.outputs]
        if opts.settings.fallback_intrinsics is not None:
            log.info("%s: using the intrinsics given on the command line", reason)
        elif dropped:
            self._warn(f"{reason}: {' and '.join(dropped)} are not written")
        return None

    def _wanted_outputs(self, calibrations: CameraInfoIndex | None) -> list[str]:
        tasks = set(self.pipeline.meta.tasks)
        possible = set()
        if "depth" in tasks:
            with_intrinsics = calibrations or self.opts.settings.fallback_intrinsics
            possible |= {DEPTH, DEPTH_INFO, POINTS} if with_intrinsics else {DEPTH}
        if "semantic" in tasks:
            possible |= {LABELS, COLOR}
        return [name for name in ALL_OUTPUTS if name in self.opts.outputs and name in possible]

    def _copy_topics(self, bag: BagReader) -> list[str]:
        if not self.opts.copy_input:
            return []
        clash = sorted(set(self.topics.values()) & set(bag.topics))
        if clash:
            raise BagError(f"--copy-input: the input bag already has {', '.join(clash)}; "
                           "choose another --out-namespace")
        return sorted(bag.topics)

    # -- streaming --------------------------------------------------------------------------

    def _read(self, bag: BagReader, copy_topics: list[str]) -> Iterator[Frame | RawMessage]:
        copy = set(copy_topics)
        by_topic = {image.name: (camera, image, calibrations)
                    for camera, (image, calibrations) in self.cameras.items()}
        indices = dict.fromkeys(by_topic, -1)
        for topic, timestamp, raw in bag.messages(copy | set(by_topic)):
            if topic in copy:
                yield RawMessage(topic, timestamp, raw)
            if topic not in by_topic:
                continue
            camera, image, calibrations = by_topic[topic]
            indices[topic] += 1
            index = indices[topic]
            self.summary.images += 1
            if index % self.opts.every:
                continue
            try:
                msg = bag.deserialize(raw, image.msgtype)
                info = calibrations.lookup(stamp_ns(msg.header.stamp)) if calibrations else None
                decoded = self.pipeline.decode(
                    FrameInput(msg, image.msgtype == COMPRESSED_IMAGE, camera=camera),
                    camera_info=info)
            except Exception as exc:  # a bad frame is counted, not fatal
                self.summary.failed += 1
                if self.summary.failed <= MAX_LOGGED_FAILURES:
                    log.warning("image %d on %s skipped: %s", index, image.name, exc)
                continue
            yield Frame(index, timestamp, decoded)

    def _stream(self, bag: BagReader, copy_topics: list[str], writes: WriteBehind) -> None:
        counts = [image.count for image, _ in self.cameras.values()]
        total = (None if None in counts
                 else sum(math.ceil(n / self.opts.every) for n in counts))
        batcher = FrameBatcher(self.opts.max_batch or len(self.cameras))
        items = read_ahead(self._read(bag, copy_topics), self.opts.read_ahead)
        with progress_bar(total, "xnet bag infer", self.opts.quiet) as bar:
            try:
                for item in items:
                    if isinstance(item, RawMessage):
                        writes.submit(self.writer.write_raw, item.topic, item.timestamp,
                                      item.data)
                        continue
                    for batch in batcher.add(item, item.decoded.camera):
                        self._run_batch(batch, writes, bar)
                self._run_batch(batcher.take(), writes, bar)
            finally:
                items.close()  # type: ignore[attr-defined]

    def _run_batch(self, batch: list[Frame], writes: WriteBehind, bar: Any) -> None:
        """One forward pass for the frames of a batch, then their outputs to the writer."""
        if not batch:
            return
        if self.summary.processed == 0 and self.class_table:
            writes.submit(self._write_class_table, batch[0])
        start = time.perf_counter()
        predictions = self.pipeline.predict([frame.decoded for frame in batch])
        self.summary.model_seconds += time.perf_counter() - start
        self.summary.batches += 1
        for frame, prediction in zip(batch, predictions):
            writes.submit(self._write_frame, frame, prediction)
            self.summary.processed += 1
            bar.update()

    def _write_frame(self, frame: Frame, prediction: Any) -> None:
        decoded = frame.decoded
        header = decoded.header
        if decoded.frame_id != header.frame_id:  # --frame-id
            header = self.factory.header(stamp_ns(header.stamp), decoded.frame_id)
        result = self.pipeline.finish(decoded, prediction)
        for name, value in result.outputs.fields.items():
            self.writer.write(self.topics[camera_topic(decoded.camera, name)], frame.timestamp,
                              self.factory.from_output(value, header))

    def _class_table_topic(self) -> str | None:
        """Where the class table goes, if the model has classes and its type is known."""
        if not (self.opts.class_table and self.pipeline.meta.num_classes
                and any(w & {LABELS, COLOR} for w in self.wanted.values())):
            return None
        if CLASS_TABLE not in self.factory.types:
            log.info("%s definition not found; no class table written", CLASS_TABLE)
            return None
        topic = output_topic(self.opts.namespace, CLASS_TABLE_TOPIC)
        self.topics[CLASS_TABLE_TOPIC] = topic
        return topic

    def _write_class_table(self, first: Frame) -> None:
        header = self.factory.header(stamp_ns(first.decoded.header.stamp), "")
        table = self.factory.class_table(header, self.pipeline.meta)
        self.writer.add_topic(self.class_table, CLASS_TABLE, qos=[LATCHED_QOS])
        self.writer.write(self.class_table, first.timestamp, table)


def run_infer(bag_path: str | Path, out_path: str | Path, predictor: Any,
              opts: InferOptions) -> InferSummary:
    return BagInference(predictor, opts).run(bag_path, out_path)
