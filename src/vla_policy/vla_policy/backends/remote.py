"""The remote backend: a :class:`~vla_common.policy.Policy` whose model runs in ``vla-serve`` elsewhere.

Synchronous websocket client (one request in flight). The token goes in the ``Authorization`` header of the
opening handshake, so a wrong token never reaches the model. A reply slower than ``timeout_s`` raises
:class:`InferenceTimeout` (the node then has no chunk and the robot holds); its late answer is recognised by
its request id and discarded. A lost connection raises :class:`InferenceUnavailable` and the next call
reconnects.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from vla_common.manifest import EmbodimentManifest
from vla_common.policy import ActionChunk, Observation

from vla_policy.backends.errors import InferenceTimeout, InferenceUnavailable
from vla_policy.backends.wire import (
    ImageEncoding,
    Message,
    MessageType,
    RemoteError,
    decode,
    encode,
    message_chunk,
    observation_message,
)

MAX_MESSAGE_BYTES = 64 << 20


@dataclass(frozen=True)
class RemoteConfig:
    uri: str = "ws://127.0.0.1:8765"
    timeout_s: float = 1.0  # per inference: slower means no chunk, hold
    connect_timeout_s: float = 3.0
    image_encoding: ImageEncoding = ImageEncoding.RAW
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_encoding", ImageEncoding(self.image_encoding))
        if not self.uri.startswith(("ws://", "wss://")):
            raise ValueError(f"remote uri must start with ws:// or wss://, got {self.uri!r}")
        if not self.timeout_s > 0 or not self.connect_timeout_s > 0:
            raise ValueError("timeouts must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


class RemotePolicy:
    """Policy protocol over websocket. Thread-safe (calls are serialized)."""

    def __init__(self, config: RemoteConfig, token: str) -> None:
        if not token:
            raise ValueError("the remote backend needs an auth token (VLA_REMOTE_TOKEN or a token file)")
        self.config = config
        self._token = token
        self._lock = threading.Lock()
        self._connection: Any = None
        self._next_id = 0

    def _connect(self) -> Any:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        if self._connection is not None:
            return self._connection
        try:
            self._connection = connect(
                self.config.uri,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                open_timeout=self.config.connect_timeout_s,
                compression=None,  # images are raw or JPEG already; deflate only costs CPU
                max_size=MAX_MESSAGE_BYTES,
                proxy=None,
                legacy=False,  # the context-manager form; entered here, exited in _drop_connection
            ).__enter__()
        except InvalidStatus as e:
            if e.response.status_code in (401, 403):
                raise PermissionError(f"vla-serve at {self.config.uri} refused the token") from None
            raise InferenceUnavailable(f"vla-serve at {self.config.uri}: {e}") from None
        except (OSError, TimeoutError, InvalidHandshake) as e:
            raise InferenceUnavailable(f"cannot reach vla-serve at {self.config.uri}: {e}") from None
        return self._connection

    def _request(self, message: Message) -> Message:
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            connection = self._connect()
            try:
                connection.send(encode(message, self.config.image_encoding, self.config.jpeg_quality))
                while True:
                    reply = decode(connection.recv(timeout=self.config.timeout_s))
                    if reply.id == message.id:
                        return reply
                    # An answer to a request that already timed out: drop it.
            except TimeoutError:
                raise InferenceTimeout(
                    f"vla-serve did not answer {message.type.value} within {self.config.timeout_s:.3f} s"
                ) from None
            except (ConnectionClosed, OSError) as e:
                self._drop_connection()
                raise InferenceUnavailable(f"connection to vla-serve lost: {e}") from None

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.__exit__(None, None, None)
            finally:
                self._connection = None

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def manifest(self) -> EmbodimentManifest:
        reply = self._request(Message(MessageType.MANIFEST, self._new_id()))
        if reply.type is MessageType.ERROR:
            raise RemoteError(str(reply.fields.get("message")))
        return EmbodimentManifest.from_dict(reply.fields["manifest"])

    def reset(self) -> None:
        reply = self._request(Message(MessageType.RESET, self._new_id()))
        if reply.type is not MessageType.OK:
            raise RemoteError(str(reply.fields.get("message", "reset failed")))

    def infer(self, observation: Observation) -> ActionChunk:
        return message_chunk(self._request(observation_message(observation, self._new_id())))

    def close(self) -> None:
        with self._lock:
            self._drop_connection()
