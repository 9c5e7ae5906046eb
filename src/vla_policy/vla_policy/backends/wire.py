"""The binary message format between the remote backend and ``vla-serve`` (pure Python, no sockets).

One websocket binary message = ``b"VLA1"`` + uint32 big-endian header length + a small JSON header +
the payload blobs back to back. The header names each blob (key, encoding, dtype, shape, byte length);
images travel as raw uint8 pixels or JPEG bytes, arrays as little-endian raw bytes, never as JSON lists.
JPEG coding (and the RGB order of the pixels) is ``vla_perception.codec``'s, the one image codec.

Messages (``header["type"]``):

* ``infer``    client -> server: observation (images, ``observation.state``, ``task``, ``timestamp``)
* ``chunk``    server -> client: the ActionChunk (``actions`` blob float64 [H, D], names, stamp, dt)
* ``manifest`` both ways: the client asks, the server answers with the model's embodiment manifest
* ``reset``    client -> server, answered by ``ok``
* ``error``    server -> client: a message the client raises as :class:`RemoteError`
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from vla_common.features import IMAGE_PREFIX, STATE_KEY
from vla_common.policy import ActionChunk
from vla_perception.codec import CodecError, decode_compressed, encode_compressed

MAGIC = b"VLA1"
_HEADER_LEN = struct.Struct(">I")
MAX_HEADER_BYTES = 1 << 20


class WireError(ValueError):
    """A message that does not follow this format."""


class RemoteError(RuntimeError):
    """The server answered with an error (bad request, the model raised)."""


class MessageType(str, enum.Enum):
    INFER = "infer"
    CHUNK = "chunk"
    MANIFEST = "manifest"
    RESET = "reset"
    OK = "ok"
    ERROR = "error"


class ImageEncoding(str, enum.Enum):
    RAW = "raw"  # uint8 HxWx3, 150 KB at 224x224: best on a LAN
    JPEG = "jpeg"  # ~10x smaller, lossy: for thin links


@dataclass(frozen=True)
class Message:
    type: MessageType
    id: int = 0
    fields: Mapping[str, Any] = field(default_factory=dict)  # small JSON values
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)


def encode(
    message: Message, image_encoding: ImageEncoding = ImageEncoding.RAW, jpeg_quality: int = 90
) -> bytes:
    blobs: list[bytes] = []
    specs: list[dict[str, Any]] = []
    for key, value in message.arrays.items():
        array = np.asarray(value)
        if key.startswith(IMAGE_PREFIX):
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise WireError(f"{key} must be HxWx3 uint8, got {array.dtype} {array.shape}")
            if image_encoding is ImageEncoding.JPEG:
                try:
                    data = encode_compressed(array, "rgb8", "jpeg", jpeg_quality)
                except CodecError as e:
                    raise WireError(f"JPEG encoding of {key} failed: {e}") from None
            else:
                data = np.ascontiguousarray(array).tobytes()
            encoding = image_encoding.value
        else:
            array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            data = array.tobytes()
            encoding = ImageEncoding.RAW.value
        specs.append(
            {
                "key": key,
                "encoding": encoding,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "length": len(data),
            }
        )
        blobs.append(data)
    header = json.dumps(
        {"type": message.type.value, "id": message.id, "fields": dict(message.fields), "blobs": specs},
        separators=(",", ":"),
    ).encode()
    return b"".join([MAGIC, _HEADER_LEN.pack(len(header)), header, *blobs])


def decode(data: bytes) -> Message:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("expected a binary websocket message, got text")
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise WireError("not a VLA1 message (bad magic)")
    (header_len,) = _HEADER_LEN.unpack(view[4:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(view):
        raise WireError(f"header length {header_len} does not fit the message ({len(view)} bytes)")
    try:
        header = json.loads(bytes(view[8 : 8 + header_len]))
        kind = MessageType(header["type"])
        specs = header.get("blobs", [])
        offset = 8 + header_len
        arrays: dict[str, np.ndarray] = {}
        for spec in specs:
            length = int(spec["length"])
            if length < 0 or offset + length > len(view):
                raise WireError(f"blob {spec['key']!r} runs past the end of the message")
            arrays[str(spec["key"])] = _decode_blob(spec, view[offset : offset + length])
            offset += length
        if offset != len(view):
            raise WireError(f"{len(view) - offset} trailing bytes after the last blob")
        return Message(kind, int(header.get("id", 0)), dict(header.get("fields", {})), arrays)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(f"malformed message: {e}") from None


def _decode_blob(spec: Mapping[str, Any], data: memoryview) -> np.ndarray:
    shape = tuple(int(s) for s in spec["shape"])
    if any(s < 0 for s in shape):
        raise WireError(f"negative shape {shape}")
    if spec["encoding"] == ImageEncoding.JPEG.value:
        try:
            rgb = decode_compressed(data, "rgb8")
        except CodecError:
            rgb = None
        if rgb is None or rgb.shape != shape:
            raise WireError(f"JPEG blob {spec['key']!r} does not decode to {shape}")
        return rgb
    if spec["encoding"] != ImageEncoding.RAW.value:
        raise WireError(f"unknown blob encoding {spec['encoding']!r}")
    dtype = np.dtype(spec["dtype"])
    if dtype.kind not in "uif" or dtype.hasobject:
        raise WireError(f"dtype {dtype} is not allowed")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(data):
        raise WireError(f"blob {spec['key']!r} has {len(data)} bytes, {shape} {dtype} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


# --- observations and chunks ---------------------------------------------------------------------


def observation_message(observation: Mapping[str, Any], request_id: int) -> Message:
    arrays = {k: np.asarray(v) for k, v in observation.items() if k.startswith(IMAGE_PREFIX)}
    if STATE_KEY in observation:
        arrays[STATE_KEY] = np.asarray(observation[STATE_KEY], dtype=np.float64)
    fields: dict[str, Any] = {"task": str(observation.get("task", ""))}
    if "timestamp" in observation:
        fields["timestamp"] = float(observation["timestamp"])
    return Message(MessageType.INFER, request_id, fields, arrays)


def message_observation(message: Message) -> dict[str, Any]:
    if message.type is not MessageType.INFER:
        raise WireError(f"expected an infer message, got {message.type.value}")
    observation: dict[str, Any] = dict(message.arrays)
    observation["task"] = str(message.fields.get("task", ""))
    if "timestamp" in message.fields:
        observation["timestamp"] = float(message.fields["timestamp"])
    return observation


def chunk_message(chunk: ActionChunk, request_id: int) -> Message:
    fields = {"names": list(chunk.names), "stamp": chunk.stamp, "dt": chunk.dt}
    return Message(MessageType.CHUNK, request_id, fields, {"actions": np.asarray(chunk.actions, np.float64)})


def message_chunk(message: Message) -> ActionChunk:
    if message.type is MessageType.ERROR:
        raise RemoteError(str(message.fields.get("message", "unknown server error")))
    if message.type is not MessageType.CHUNK or "actions" not in message.arrays:
        raise WireError(f"expected a chunk, got {message.type.value}")
    f = message.fields
    return ActionChunk(message.arrays["actions"], tuple(f["names"]), float(f["stamp"]), float(f["dt"]))
