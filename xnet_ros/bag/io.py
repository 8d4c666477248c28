"""Rosbag2 reading and writing without a ROS install (`rosbags`); the messages: `messages`.

Readable inputs: a rosbag2 directory (sqlite3 or MCAP storage), a directory whose recording was
killed before metadata.yaml was written (its .db3/.mcap file is read directly), or a single
.db3/.mcap file. An MCAP file whose summary/footer is missing or broken (recording killed, copy
cut short) is "salvaged": read front to back with the `mcap` package up to the first damaged
record. Every read failure surfaces as `BagReadError` from `BagReader.messages`, after all the
messages before it were yielded, so callers can keep their partial results.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rosbags.interfaces import MessageDefinitionFormat, Qos
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg

from .messages import CAMERA_INFO, IMAGE, make_typestore

__all__ = ["CAMERA_INFO", "IMAGE", "BagError", "BagReadError", "BagReader", "BagWriter",
           "make_typestore", "progress_bar", "read_ahead"]

log = logging.getLogger(__name__)

# Metadata v8 (Jazzy's): Humble's rosbag2 ignores the keys it does not know; Jazzy and Kilted
# read it natively.
BAG_VERSION = 8

STORAGES = ("mcap", "sqlite3")

T = TypeVar("T")


class BagError(Exception):
    """A problem with the user's input (bag, topic, model, output path); no traceback needed."""


class BagReadError(BagError):
    """Reading stopped on damaged data; everything before it was delivered."""


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str
    count: int | None  # None: unknown (salvaged file, counted while reading)


# ---------------------------------------------------------------------------------------------
# Reading


class BagReader:
    """`with BagReader(path) as bag:` topics, topic lookup with clear errors, raw messages."""

    def __init__(self, path: str | Path, typestore: Any | None = None):
        self.path = Path(path)
        self.typestore = typestore if typestore is not None else make_typestore()
        self.salvaged: str | None = None  # why the file had to be salvaged, if it had
        storage_path = _storage_path(self.path)
        try:
            reader = Reader(storage_path)
            reader.open()
        except (ReaderError, OSError, ValueError) as exc:
            mcap_files = _mcap_files(self.path)
            if not mcap_files:
                raise BagError(f"cannot read bag {self.path}: {exc}") from None
            log.warning("%s: %s; salvaging the readable part of %s", self.path, exc,
                        ", ".join(p.name for p in mcap_files))
            self.salvaged = str(exc)
            self._source: _RosbagsSource | _McapSalvage = _McapSalvage(mcap_files)
        else:
            self._source = _RosbagsSource(reader)
        self.topics: dict[str, Topic] = self._source.topics
        self._register_bag_types()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    def _register_bag_types(self) -> None:
        """Types the store lacks (custom messages), from the definitions stored in the bag."""
        types: dict[str, Any] = {}
        for msgtype, msgdef in self._source.msgdefs.items():
            if msgtype in self.typestore.fielddefs or not msgdef:
                continue
            try:
                types.update(get_types_from_msg(msgdef, msgtype))
            except Exception as exc:  # an unparsable definition only matters
                log.debug("cannot parse the stored definition of %s: %s", msgtype, exc)
        if types:
            self.typestore.register({k: v for k, v in types.items()
                                     if k not in self.typestore.fielddefs})

    def describe_topics(self) -> str:
        if not self.topics:
            return "  (no topics)"
        width = max(len(name) for name in self.topics)
        type_width = max(len(t.msgtype) for t in self.topics.values())
        return "\n".join(
            f"  {t.name:<{width}}  {t.msgtype:<{type_width}}  "
            f"({'?' if t.count is None else t.count} msgs)"
            for t in sorted(self.topics.values(), key=lambda t: t.name)
        )

    def topic(self, name: str, msgtypes: Iterable[str], role: str) -> Topic:
        """The topic `name`, checked to exist, to have one of `msgtypes` and to hold messages."""
        msgtypes = tuple(msgtypes)
        if not self.topics:
            raise BagError(f"bag {self.path} is empty: it has no topics")
        topic = self.topics.get(name)
        if topic is None:
            raise BagError(f"{role} topic {name!r} is not in bag {self.path}; its topics are:\n"
                           f"{self.describe_topics()}")
        if topic.msgtype not in msgtypes:
            raise BagError(f"{role} topic {name!r} has type {topic.msgtype}, expected "
                           f"{' or '.join(msgtypes)}")
        if topic.count == 0:
            raise BagError(f"{role} topic {name!r} has no messages in bag {self.path}")
        return topic

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
        """(topic, bag timestamp ns, raw CDR bytes) in storage order; all topics if None."""
        wanted = None if topics is None else set(topics)
        count = 0
        try:
            for topic, timestamp, data in self._source.messages(wanted):
                count += 1
                yield topic, timestamp, data
        except Exception as exc:  # rosbags, apsw, mcap and zstd each raise their own
            raise BagReadError(f"reading {self.path} failed after {count} messages: "
                               f"{type(exc).__name__}: {exc}") from exc
        if isinstance(self._source, _McapSalvage) and self._source.error:
            raise BagReadError(f"bag {self.path} is damaged ({self.salvaged}); read "
                               f"{count} messages before: {self._source.error}")

    def deserialize(self, data: Any, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(data, msgtype)

    def connection_info(self, topic: str) -> tuple[str | None, str | None, list[Qos]]:
        """(message definition, RIHS01 hash, offered QoS) stored for a topic, for copying."""
        return self._source.connection_info(topic)


def _storage_path(path: Path) -> Path:
    """The path for rosbags: a directory without metadata.yaml -> its only storage file."""
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted(p for p in path.iterdir() if p.suffix in (".db3", ".mcap"))
        if len(files) != 1:
            found = ", ".join(p.name for p in files) or "none"
            raise BagError(f"{path} has no metadata.yaml and not exactly one .db3/.mcap file "
                           f"(found: {found}); pass the file itself")
        log.info("%s has no metadata.yaml; reading %s", path, files[0].name)
        return files[0]
    return path


def _mcap_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".mcap" else []
    return sorted(p for p in path.iterdir() if p.suffix == ".mcap")


class _RosbagsSource:
    def __init__(self, reader: Reader):
        self.reader = reader
        counts: Counter[str] = Counter()
        types: dict[str, str] = {}
        self.msgdefs: dict[str, str] = {}
        for conn in reader.connections:
            counts[conn.topic] += conn.msgcount
            types.setdefault(conn.topic, conn.msgtype)
            if conn.msgdef.format == MessageDefinitionFormat.MSG and conn.msgdef.data:
                self.msgdefs.setdefault(conn.msgtype, conn.msgdef.data)
        self.topics = {name: Topic(name, types[name], counts[name]) for name in types}

    def messages(self, wanted: set[str] | None) -> Iterator[tuple[str, int, Any]]:
        conns = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, timestamp, data in self.reader.messages(connections=conns):
            yield conn.topic, timestamp, data

    def connection_info(self, topic: str) -> tuple[str | None, str | None, list[Qos]]:
        conn = next(c for c in self.reader.connections if c.topic == topic)
        msgdef = conn.msgdef.data if conn.msgdef.format == MessageDefinitionFormat.MSG else None
        qos = list(getattr(conn.ext, "offered_qos_profiles", []) or [])
        return msgdef or None, conn.digest or None, qos

    def close(self) -> None:
        self.reader.close()


class _McapSalvage:
    """Sequential MCAP reading (no summary needed) that stops at the first damaged record.

    A first pass collects channels and message counts (and where the file breaks), a second
    one yields the messages; both decompress every readable chunk.
    """

    def __init__(self, files: list[Path]):
        from mcap.records import Channel, Message, Schema

        self.files = files
        self.error: str | None = None
        self.msgdefs: dict[str, str] = {}
        schemas: dict[int, str] = {}
        self._channels: dict[tuple[int, int], tuple[str, str]] = {}  # (file, id) -> topic, type
        counts: Counter[str] = Counter()
        for index, record in self._records():
            if isinstance(record, Schema):
                schemas[record.id] = record.name
                if record.encoding == "ros2msg":
                    self.msgdefs.setdefault(record.name, record.data.decode())
            elif isinstance(record, Channel):
                msgtype = schemas.get(record.schema_id, "")
                self._channels[(index, record.id)] = (record.topic, msgtype)
            elif isinstance(record, Message):
                counts[self._channels[(index, record.channel_id)][0]] += 1
        self.topics = {topic: Topic(topic, msgtype, counts[topic])
                       for topic, msgtype in self._channels.values()}

    def _records(self) -> Iterator[tuple[int, Any]]:
        from mcap.stream_reader import StreamReader

        for index, path in enumerate(self.files):
            with path.open("rb") as stream:
                try:
                    for record in StreamReader(stream, validate_crcs=True).records:
                        yield index, record
                except Exception as exc:  # any damage ends the readable part
                    self.error = f"{path.name}: {type(exc).__name__}: {exc}"
                    return

    def messages(self, wanted: set[str] | None) -> Iterator[tuple[str, int, Any]]:
        from mcap.records import Message

        for index, record in self._records():
            if isinstance(record, Message):
                topic = self._channels[(index, record.channel_id)][0]
                if wanted is None or topic in wanted:
                    yield topic, record.log_time, record.data

    def connection_info(self, topic: str) -> tuple[str | None, str | None, list[Qos]]:
        return self.msgdefs.get(self.topics[topic].msgtype), None, []

    def close(self) -> None:
        pass


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate `items` in a background thread, up to `depth` items ahead of the consumer.

    Bag I/O, decompression and image decoding then overlap the model (they release the GIL).
    Exceptions are re-raised in the consumer; closing the generator stops the thread.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))

    thread = threading.Thread(target=produce, name="bag-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = buffer.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------------------------------
# Writing


class BagWriter:
    """A new rosbag2 (MCAP by default); topics are added on their first message."""

    def __init__(self, path: str | Path, typestore: Any, storage: str = "mcap",
                 default_qos: Iterable[Qos] = ()):
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(f"storage {storage!r} is not one of {', '.join(STORAGES)}")
        if self.path.exists():
            raise BagError(f"output {self.path} exists already; remove it or choose another path")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.typestore = typestore
        self.default_qos = list(default_qos)  # for topics added by their first message
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
        try:
            self._writer.open()
        except Exception as exc:  # permissions, missing parent, ...
            raise BagError(f"cannot create output bag {self.path}: {exc}") from None
        self._connections: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()

    def add_topic(self, topic: str, msgtype: str, msgdef: str | None = None,
                  rihs01: str | None = None, qos: Iterable[Qos] = ()) -> None:
        if msgdef is None or rihs01 is None:
            msgdef, rihs01 = None, None  # both from the typestore, or they may disagree
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, msgdef=msgdef, rihs01=rihs01,
            offered_qos_profiles=list(qos))

    def write(self, topic: str, timestamp: int, msg: Any) -> None:
        if topic not in self._connections:
            self.add_topic(topic, msg.__msgtype__, qos=self.default_qos)
        self.write_raw(topic, timestamp, self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def write_raw(self, topic: str, timestamp: int, data: Any) -> None:
        self._writer.write(self._connections[topic], timestamp, data)
        self.counts[topic] += 1

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def close(self, incomplete: str | None = None) -> None:
        """Finish the bag; `incomplete` (why the input was cut short) goes into custom_data."""
        if incomplete:
            self._writer.set_custom_data("xnet.incomplete", incomplete)
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()


def progress_bar(total: int | None, desc: str, quiet: bool) -> Any:
    """tqdm on stderr, off when --quiet or when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())
