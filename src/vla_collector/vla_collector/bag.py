"""rosbag2 bags in MCAP storage: write raw CDR messages, read them back (also after a crash).

A bag is a directory holding ``<name>.mcap`` and ``metadata.yaml``, exactly what ``ros2 bag record -s mcap``
leaves: MCAP profile ``ros2``, ``ros2msg`` schemas (the full message definition with its dependencies),
``cdr`` channels with ``offered_qos_profiles`` metadata, and the ``rosbag2`` metadata record. ``ros2 bag info``,
``ros2 bag play``, Foxglove and the ``rosbags`` library open it.

Messages go in as the serialized bytes the middleware delivered (rclpy ``raw=True``), so recording never
decodes an image. The MCAP is chunked (small chunks, lz4 by default): after a SIGKILL every chunk already on
disk is readable, and :class:`BagReader` (with ``metadata.yaml`` missing and the footer absent) recovers them.

Pure Python: no rclpy (message definitions and CDR decoding come from ``rosbags``' Jazzy type store).
"""

from __future__ import annotations

import enum
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer
from rosbags.typesys import Stores, get_typestore
from vla_common.atomic import write_text_atomic

METADATA_FILE = "metadata.yaml"
ROSBAG2_VERSION = 9
_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


class BagError(ValueError):
    """A bag cannot be written or read; the text says why."""


class Compression(str, enum.Enum):
    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"


_MCAP_COMPRESSION = {
    Compression.NONE: CompressionType.NONE,
    Compression.LZ4: CompressionType.LZ4,
    Compression.ZSTD: CompressionType.ZSTD,
}


def message_definition(msg_type: str) -> str:
    """The ``ros2msg`` schema text rosbag2 stores for a type (e.g. ``sensor_msgs/msg/Image``)."""
    try:
        return _TYPESTORE.generate_msgdef(msg_type, ros_version=2)[0]
    except Exception as e:  # rosbags raises several types for unknown names
        raise BagError(f"unknown message type {msg_type!r}: {e}") from None


def type_hash(msg_type: str) -> str:
    return _TYPESTORE.hash_rihs01(msg_type)


def deserialize(msg_type: str, data: bytes) -> Any:
    """Decode CDR bytes into a ``rosbags`` message object (attribute access like the ROS message)."""
    return _TYPESTORE.deserialize_cdr(data, msg_type)


def serialize(msg_type: str, msg: Any) -> bytes:
    return bytes(_TYPESTORE.serialize_cdr(msg, msg_type))


def message_class(msg_type: str) -> Any:
    """The ``rosbags`` dataclass for a type, to build messages without rclpy."""
    return _TYPESTORE.types[msg_type]


_INFINITE = {"sec": 9223372036, "nsec": 854775807}  # RMW_DURATION_INFINITE as rosbag2 writes it


@dataclass(frozen=True)
class QosProfile:
    """An offered QoS profile in rosbag2's metadata v9 form (``ros2 bag play`` restores it).

    Discovery does not carry the publisher's history, so like rosbag2 we store ``unknown`` there."""

    reliability: str = "reliable"
    durability: str = "volatile"
    history: str = "keep_last"
    depth: int = 10

    def __post_init__(self) -> None:
        if self.reliability not in ("reliable", "best_effort", "system_default", "unknown"):
            raise BagError(f"unknown reliability {self.reliability!r}")
        if self.durability not in ("volatile", "transient_local", "system_default", "unknown"):
            raise BagError(f"unknown durability {self.durability!r}")
        if self.history not in ("keep_last", "keep_all", "system_default", "unknown"):
            raise BagError(f"unknown history {self.history!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "depth": self.depth,
            "reliability": self.reliability,
            "durability": self.durability,
            "deadline": dict(_INFINITE),
            "lifespan": dict(_INFINITE),
            "liveliness": "automatic",
            "liveliness_lease_duration": dict(_INFINITE),
            "avoid_ros_namespace_conventions": False,
        }


def qos_yaml(profiles: Sequence[QosProfile]) -> str:
    """The ``offered_qos_profiles`` string stored in MCAP channel metadata."""
    return yaml.safe_dump([p.to_dict() for p in profiles], sort_keys=False) if profiles else ""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msg_type: str
    message_count: int
    qos_yaml: str = ""


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msg_type: str
    log_time_ns: int
    publish_time_ns: int
    data: bytes


def rosbag2_metadata(
    bag_file: str, topics: list[TopicInfo], start_ns: int, end_ns: int, compression: Compression
) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` document (``metadata.yaml``, also stored inside the MCAP)."""
    total = sum(t.message_count for t in topics)
    duration = max(0, end_ns - start_ns) if total else 0
    return {
        "rosbag2_bagfile_information": {
            "version": ROSBAG2_VERSION,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start_ns if total else 0},
            "message_count": total,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.msg_type,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": (yaml.safe_load(t.qos_yaml) if t.qos_yaml else None) or [],
                        "type_description_hash": type_hash(t.msg_type),
                    },
                    "message_count": t.message_count,
                }
                for t in topics
            ],
            # Chunk compression lives inside the MCAP; rosbag2's file-level compression stays off.
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [bag_file],
            "files": [
                {
                    "path": bag_file,
                    "starting_time": {"nanoseconds_since_epoch": start_ns if total else 0},
                    "duration": {"nanoseconds": duration},
                    "message_count": total,
                }
            ],
            "custom_data": {"mcap_chunk_compression": compression.value},
            "ros_distro": "jazzy",
        }
    }


class BagWriter:
    """Write one rosbag2 MCAP bag directory. Not thread-safe: call from one thread."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        compression: Compression = Compression.LZ4,
        chunk_size: int = 4 * 1024 * 1024,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()
        if (self.directory / METADATA_FILE).exists() or any(self.directory.glob("*.mcap")):
            raise BagError(f"{self.directory} already holds a bag")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.compression = Compression(compression)
        self.file_name = f"{self.directory.name}_0.mcap"
        self._file: BinaryIO = open(self.directory / self.file_name, "wb")  # noqa: SIM115 (closed in close())
        self._writer = Writer(
            self._file, chunk_size=chunk_size, compression=_MCAP_COMPRESSION[self.compression]
        )
        self._writer.start(profile="ros2", library="vla_collector")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, TopicInfo]] = {}
        self._counts: dict[str, int] = {}
        self._sequence: dict[str, int] = {}
        self.start_ns: int | None = None
        self.end_ns = 0
        self.bytes_in = 0
        self._closed = False

    def add_topic(self, topic: str, msg_type: str, qos: Sequence[QosProfile] = ()) -> None:
        if topic in self._channels:
            return
        if msg_type not in self._schemas:
            self._schemas[msg_type] = self._writer.register_schema(
                name=msg_type, encoding="ros2msg", data=message_definition(msg_type).encode()
            )
        channel_id = self._writer.register_channel(
            topic=topic,
            message_encoding="cdr",
            schema_id=self._schemas[msg_type],
            metadata={"offered_qos_profiles": qos_yaml(qos)},
        )
        self._channels[topic] = (channel_id, TopicInfo(topic, msg_type, 0, qos_yaml(qos)))
        self._counts[topic] = 0
        self._sequence[topic] = 0

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        if self._closed:
            raise BagError("bag already closed")
        if topic not in self._channels:
            raise BagError(f"topic {topic!r} was not added to the bag")
        self._writer.add_message(
            channel_id=self._channels[topic][0],
            log_time=log_time_ns,
            data=data,
            publish_time=publish_time_ns if publish_time_ns is not None else log_time_ns,
            sequence=self._sequence[topic],
        )
        self._sequence[topic] += 1
        self._counts[topic] += 1
        self.bytes_in += len(data)
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = max(self.end_ns, log_time_ns)
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    @property
    def message_count(self) -> int:
        return sum(self._counts.values())

    def topics(self) -> list[TopicInfo]:
        return [
            TopicInfo(t, info.msg_type, self._counts[t], info.qos_yaml)
            for t, (_, info) in self._channels.items()
        ]

    def close(self) -> Path:
        """Finish the MCAP (summary, footer), fsync it and write ``metadata.yaml`` atomically."""
        if self._closed:
            return self.directory
        self._closed = True
        meta = rosbag2_metadata(
            self.file_name, self.topics(), self.start_ns or 0, self.end_ns, self.compression
        )
        text = yaml.safe_dump(meta, sort_keys=False)
        self._writer.add_metadata("rosbag2", {"serialized_metadata": text})
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        write_text_atomic(self.directory / METADATA_FILE, text)
        return self.directory

    def flush(self) -> None:
        """Close the open chunk and hand it to the OS: a SIGKILL loses at most ``flush_interval_s`` of data."""
        self._writer.flush()
        self._last_flush = time.monotonic()


class BagReader:
    """Read a rosbag2 MCAP bag directory or a single ``.mcap`` file, whole or truncated by a crash."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            files = sorted(p.glob("*.mcap"))
            meta = p / METADATA_FILE
            if meta.is_file():
                info = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information", {})
                if info.get("storage_identifier", "mcap") != "mcap":
                    raise BagError(f"{p}: storage {info.get('storage_identifier')!r} is not mcap")
                listed = [p / f for f in info.get("relative_file_paths", [])]
                files = [f for f in listed if f.is_file()] or files
            if not files:
                raise BagError(f"{p} holds no .mcap file")
        elif p.is_file():
            files = [p]
        else:
            raise BagError(f"bag {p} does not exist")
        self.path = p
        self.files = files
        self.truncated = False
        self._topics: dict[str, TopicInfo] | None = None

    def _records(self, f: Path) -> Iterator[tuple[Schema | None, Channel, Message]]:
        """Messages of one file in file order; a truncated tail (crash) ends the iteration quietly."""
        with open(f, "rb") as stream:
            try:
                reader = make_reader(stream)
                summary = reader.get_summary()
            except Exception:  # no footer or summary: the recorder died; stream the records instead
                summary = None
            if summary is not None:
                yield from reader.iter_messages(log_time_order=True)
                return
            stream.seek(0)
            schemas: dict[int, Schema] = {}
            channels: dict[int, Channel] = {}
            try:
                for record in StreamReader(stream, skip_magic=False).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                    elif isinstance(record, Message) and record.channel_id in channels:
                        channel = channels[record.channel_id]
                        yield schemas.get(channel.schema_id), channel, record
            except Exception:  # the chunk being written when the process died is incomplete
                self.truncated = True

    def messages(self, topics: set[str] | None = None) -> Iterator[RawMessage]:
        """All messages (optionally of some topics), ordered by log time within each file."""
        for f in self.files:
            for schema, channel, msg in self._records(f):
                if topics is not None and channel.topic not in topics:
                    continue
                yield RawMessage(
                    topic=channel.topic,
                    msg_type=schema.name if schema is not None else "",
                    log_time_ns=msg.log_time,
                    publish_time_ns=msg.publish_time,
                    data=bytes(msg.data),
                )

    def topics(self) -> dict[str, TopicInfo]:
        """Topic -> type and count (from the MCAP summaries when complete, else by scanning)."""
        if self._topics is None:
            self._topics = self._topics_from_summaries() or self._topics_by_scanning()
        return self._topics

    def _topics_from_summaries(self) -> dict[str, TopicInfo] | None:
        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        qos: dict[str, str] = {}
        for f in self.files:
            with open(f, "rb") as stream:
                try:
                    summary = make_reader(stream).get_summary()
                except Exception:  # no footer: the recorder died; scan instead
                    return None
            if summary is None or summary.statistics is None:
                return None
            for cid, ch in summary.channels.items():
                types[ch.topic] = summary.schemas[ch.schema_id].name
                qos[ch.topic] = ch.metadata.get("offered_qos_profiles", "")
                counts[ch.topic] = counts.get(ch.topic, 0) + summary.statistics.channel_message_counts.get(
                    cid, 0
                )
        return {t: TopicInfo(t, types[t], counts[t], qos[t]) for t in types}

    def _topics_by_scanning(self) -> dict[str, TopicInfo]:
        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        for m in self.messages():
            counts[m.topic] = counts.get(m.topic, 0) + 1
            types[m.topic] = m.msg_type
        return {t: TopicInfo(t, types[t], counts[t]) for t in types}

    def time_range(self) -> tuple[int, int]:
        start, end = None, 0
        for m in self.messages():
            start = m.log_time_ns if start is None else min(start, m.log_time_ns)
            end = max(end, m.log_time_ns)
        return (start or 0, end)


def recover_bag(directory: str | os.PathLike[str], compression: Compression = Compression.LZ4) -> int:
    """Make a bag whose recorder died whole again; returns the number of messages kept.

    Every message of the complete chunks is copied (same schemas, channels, times) into a new MCAP with
    its summary and footer, which atomically replaces the truncated file; ``metadata.yaml`` is written.
    Afterwards ``ros2 bag``, Foxglove and ``rosbags`` open it like any other bag.
    """
    path = Path(directory)
    reader = BagReader(path)
    if len(reader.files) != 1:
        raise BagError(f"{path}: can only recover single-file bags, found {len(reader.files)} files")
    source = reader.files[0]
    qos: dict[str, str] = {}
    types: dict[str, str] = {}
    kept = 0
    tmp = source.with_name(f".{source.name}.recovering")
    with open(tmp, "wb") as out:
        writer = Writer(
            out, chunk_size=4 * 1024 * 1024, compression=_MCAP_COMPRESSION[Compression(compression)]
        )
        writer.start(profile="ros2", library="vla_collector")
        schema_ids: dict[str, int] = {}
        channel_ids: dict[str, int] = {}
        counts: dict[str, int] = {}
        start, end = None, 0
        for schema, channel, msg in reader._records(source):
            if schema is None:
                continue
            if schema.name not in schema_ids:
                schema_ids[schema.name] = writer.register_schema(schema.name, schema.encoding, schema.data)
            if channel.topic not in channel_ids:
                channel_ids[channel.topic] = writer.register_channel(
                    channel.topic, channel.message_encoding, schema_ids[schema.name], dict(channel.metadata)
                )
                qos[channel.topic] = channel.metadata.get("offered_qos_profiles", "")
                types[channel.topic] = schema.name
                counts[channel.topic] = 0
            writer.add_message(
                channel_ids[channel.topic], msg.log_time, msg.data, msg.publish_time, msg.sequence
            )
            counts[channel.topic] += 1
            kept += 1
            start = msg.log_time if start is None else min(start, msg.log_time)
            end = max(end, msg.log_time)
        topics = [TopicInfo(t, types[t], counts[t], qos[t]) for t in channel_ids]
        meta = rosbag2_metadata(source.name, topics, start or 0, end, Compression(compression))
        text = yaml.safe_dump(meta, sort_keys=False)
        writer.add_metadata("rosbag2", {"serialized_metadata": text})
        writer.finish()
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, source)
    write_text_atomic(path / METADATA_FILE, text)
    return kept


def header_stamp_ns(cdr: bytes) -> int:
    """``header.stamp`` of a CDR message that starts with a std_msgs/Header (Image, JointState), in ns.

    Read straight from the bytes (4-byte encapsulation, then int32 sec, uint32 nanosec) so the recorder
    never deserializes an image just to learn its time. Raises BagError on a short or unknown buffer.
    """
    if len(cdr) < 12:
        raise BagError(f"message of {len(cdr)} bytes is too short for a header")
    kind = cdr[1]
    if cdr[0] != 0 or kind not in (0, 1):
        raise BagError(f"unknown CDR encapsulation {cdr[:2].hex()}")
    order = "<" if kind == 1 else ">"
    sec, nanosec = struct.unpack_from(f"{order}iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec
