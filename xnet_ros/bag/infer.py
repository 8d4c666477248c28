"""`xnet bag infer`: run the model over a bag's images and write what the node would publish.

Frames go through the node's own `xnet_ros.pipeline.FramePipeline`, stage by stage, and the
outputs are written under the output namespace with the input image's header (stamp, frame_id)
and bag timestamp. Three stages overlap: reading + decoding (read-ahead thread), the model
(caller's thread), output building + serialisation + writing (write-behind thread).
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..geometry import Intrinsics
from ..outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS
from ..params import CLASS_TABLE_TOPIC
from ..pipeline import DecodedFrame, FrameInput, FramePipeline, FrameSettings, stamp_ns
from .io import BagError, BagReader, BagReadError, BagWriter, Topic, progress_bar, read_ahead
from .messages import (
    CAMERA_INFO,
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
    image_topic: str
    camera_info_topic: str | None = None  # None: the image topic's sibling camera_info, if any
    use_camera_info: bool = True
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
    images: int = 0  # messages read on the image topic
    processed: int = 0  # frames run through the model and written
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
    index: int  # position on the image topic (before --every)
    timestamp: int  # bag timestamp, ns
    decoded: DecodedFrame


@dataclass
class RawMessage:
    topic: str
    timestamp: int
    data: Any


def output_topic(namespace: str, name: str) -> str:
    namespace = namespace.strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"


class CameraInfoIndex:
    """Intrinsics by header stamp: the latest at or before a stamp, else the nearest after."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, Intrinsics]] = []
        self._stamps: list[int] = []

    def add(self, stamp: int, intrinsics: Intrinsics) -> None:
        self._entries.append((stamp, intrinsics))
        self._stamps = []  # re-sorted on the next lookup

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, stamp: int) -> Intrinsics | None:
        if not self._entries:
            return None
        if not self._stamps:
            self._entries.sort(key=lambda entry: entry[0])
            self._stamps = [s for s, _ in self._entries]
        i = bisect.bisect_right(self._stamps, stamp)
        return self._entries[i - 1 if i else 0][1]


def load_camera_infos(bag: BagReader, topic: str) -> tuple[CameraInfoIndex, str | None]:
    """All usable camera infos on `topic` (a pre-pass: they are small), and why some were not."""
    index, problem = CameraInfoIndex(), None
    try:
        for _, _, raw in bag.messages([topic]):
            msg = bag.deserialize(raw, CAMERA_INFO)
            try:
                index.add(stamp_ns(msg.header.stamp), Intrinsics.from_camera_info(msg))
            except ValueError as exc:
                problem = str(exc)
    except BagReadError:
        pass  # the main pass meets the same damage and reports it
    return index, problem


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
        self.pipeline = FramePipeline(predictor, opts.settings, wanted=lambda: self.wanted,
                                      on_warning=lambda key, message: self._warn(message))
        self.wanted: frozenset[str] = frozenset()

    def run(self, bag_path: str | Path, out_path: str | Path) -> InferSummary:
        start = time.perf_counter()
        with BagReader(bag_path) as bag:
            image = bag.topic(self.opts.image_topic, IMAGE_TYPES, "image")
            cameras = self._camera_infos(bag, image)
            wanted = self._wanted_outputs(cameras)
            self.topics = {name: output_topic(self.opts.namespace, name) for name in wanted}
            copy_topics = self._copy_topics(bag)
            self.factory = MessageFactory(bag.typestore)
            self.wanted = frozenset(wanted)
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
                self._stream(bag, image, cameras, copy_topics, writes)
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
            raise BagError(f"no image on {image.name} could be processed "
                           f"({self.summary.failed} failed to decode)")
        return self.summary

    # -- setup ------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.summary.warnings.append(message)

    def _camera_infos(self, bag: BagReader, image: Topic) -> CameraInfoIndex | None:
        opts = self.opts
        if not opts.use_camera_info:
            reason = "disabled by --no-camera-info"
            name = None
        elif opts.camera_info_topic:
            name = bag.topic(opts.camera_info_topic, [CAMERA_INFO], "camera_info").name
        else:
            name = image.name.rsplit("/", 1)[0] + "/camera_info"
            sibling = bag.topics.get(name)
            if sibling is None or sibling.msgtype != CAMERA_INFO or sibling.count == 0:
                reason = f"no --camera-info-topic given and no {CAMERA_INFO} on {name}"
                name = None
            else:
                log.info("using camera info from %s", name)
        if name is not None:
            cameras, problem = load_camera_infos(bag, name)
            if cameras:
                return cameras
            reason = f"no usable camera_info on {name}" + (f" ({problem})" if problem else "")
        dropped = [output_topic(opts.namespace, n) for n in (DEPTH_INFO, POINTS)
                   if n in opts.outputs]
        if opts.settings.fallback_intrinsics is not None:
            log.info("%s: using the intrinsics given on the command line", reason)
        elif dropped:
            self._warn(f"{reason}: {' and '.join(dropped)} are not written")
        return None

    def _wanted_outputs(self, cameras: CameraInfoIndex | None) -> list[str]:
        tasks = set(self.pipeline.meta.tasks)
        possible = set()
        if "depth" in tasks:
            with_intrinsics = cameras or self.opts.settings.fallback_intrinsics
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

    def _read(self, bag: BagReader, image: Topic, cameras: CameraInfoIndex | None,
              copy_topics: list[str]) -> Iterator[Frame | RawMessage]:
        copy = set(copy_topics)
        index = -1
        for topic, timestamp, raw in bag.messages(copy | {image.name}):
            if topic in copy:
                yield RawMessage(topic, timestamp, raw)
            if topic != image.name:
                continue
            index += 1
            self.summary.images += 1
            if index % self.opts.every:
                continue
            try:
                msg = bag.deserialize(raw, image.msgtype)
                info = cameras.lookup(stamp_ns(msg.header.stamp)) if cameras else None
                decoded = self.pipeline.decode(FrameInput(msg, image.msgtype == COMPRESSED_IMAGE),
                                               camera_info=info)
            except Exception as exc:  # a bad frame is counted, not fatal
                self.summary.failed += 1
                if self.summary.failed <= MAX_LOGGED_FAILURES:
                    log.warning("image %d on %s skipped: %s", index, image.name, exc)
                continue
            yield Frame(index, timestamp, decoded)

    def _stream(self, bag: BagReader, image: Topic, cameras: CameraInfoIndex | None,
                copy_topics: list[str], writes: WriteBehind) -> None:
        total = None if image.count is None else math.ceil(image.count / self.opts.every)
        items = read_ahead(self._read(bag, image, cameras, copy_topics), self.opts.read_ahead)
        with progress_bar(total, "xnet bag infer", self.opts.quiet) as bar:
            try:
                for item in items:
                    if isinstance(item, RawMessage):
                        writes.submit(self.writer.write_raw, item.topic, item.timestamp,
                                      item.data)
                        continue
                    if self.summary.processed == 0 and self.class_table:
                        writes.submit(self._write_class_table, item)
                    start = time.perf_counter()
                    prediction = self.pipeline.predict([item.decoded])[0]
                    self.summary.model_seconds += time.perf_counter() - start
                    writes.submit(self._write_frame, item, prediction)
                    self.summary.processed += 1
                    bar.update()
            finally:
                items.close()  # type: ignore[attr-defined]

    def _write_frame(self, frame: Frame, prediction: Any) -> None:
        decoded = frame.decoded
        header = decoded.header
        if decoded.frame_id != header.frame_id:  # --frame-id
            header = self.factory.header(stamp_ns(header.stamp), decoded.frame_id)
        result = self.pipeline.finish(decoded, prediction)
        for name, value in result.outputs.fields.items():
            self.writer.write(self.topics[name], frame.timestamp,
                              self.factory.from_output(value, header))

    def _class_table_topic(self) -> str | None:
        """Where the class table goes, if the model has classes and its type is known."""
        if not (self.opts.class_table and self.pipeline.meta.num_classes
                and self.wanted & {LABELS, COLOR}):
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
