"""``vla-serve``: run a policy on this machine (a GPU box, say) for policy nodes elsewhere, over websocket.

    VLA_SERVE_TOKEN=... vla-serve --backend native --model /models/pick_cube [--host 127.0.0.1] [--port 8765]
    VLA_SERVE_TOKEN=... vla-serve --backend lerobot --model outputs/train/act/checkpoints/last/pretrained_model

``--backend lerobot`` runs a LeRobot-trained policy in the LeRobot venv (``scripts/setup-lerobot.sh``): started
from another Python without LeRobot, vla-serve hands itself over to that venv's Python (``$VLA_LEROBOT_VENV``,
default ``.venv-lerobot`` in the workspace) with the same arguments.

Listens on localhost unless ``--host`` says otherwise. Every connection must present
``Authorization: Bearer <token>`` in its handshake (token from ``VLA_SERVE_TOKEN`` or ``--token-file``);
without a token the server refuses to start. Plain ``ws://`` sends the token in clear: beyond a trusted
network, pass ``--tls-cert/--tls-key`` (clients then use ``wss://``). Inference is serialized (one model);
each connection is served by its own thread. Message format: :mod:`vla_policy.backends.wire`.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import signal
import ssl
import sys
import threading
import traceback
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vla_common.manifest import EmbodimentManifest
from vla_common.policy import Policy

from vla_policy.backends.wire import (
    Message,
    MessageType,
    WireError,
    chunk_message,
    decode,
    encode,
    message_observation,
)

if TYPE_CHECKING:
    from vla_policy.backends import LoadedPolicy

LOG = logging.getLogger("vla_serve")
READY_PREFIX = "VLA_SERVE_READY port="  # the line a --child server prints once it listens
TOKEN_ENV = "VLA_SERVE_TOKEN"
LEROBOT_VENV_ENV = "VLA_LEROBOT_VENV"
_HANDED_OVER_ENV = "_VLA_SERVE_HANDED_OVER"
# What the main venv's environment sets for its own Python and ROS; the LeRobot venv's Python must not see it.
_FOREIGN_ENV = (
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
    "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH",
)  # fmt: skip
MAX_MESSAGE_BYTES = 64 << 20


class PolicyServer:
    """Serves one :class:`Policy` and its manifest. ``start()`` returns once listening; ``close()`` stops."""

    def __init__(
        self,
        policy: Policy,
        manifest: EmbodimentManifest,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not token:
            raise ValueError(f"vla-serve needs an auth token ({TOKEN_ENV} or --token-file)")
        self.policy = policy
        self.manifest = manifest
        self._token = token.encode()
        self._host, self._port, self._ssl = host, port, ssl_context
        self._infer_lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.requests = 0
        self.rejected_connections = 0

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.socket.getsockname()[1])

    def start(self) -> PolicyServer:
        from websockets.sync.server import serve

        self._server = serve(
            self._handle,
            self._host,
            self._port,
            ssl=self._ssl,
            process_request=self._authorize,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="vla-serve", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _authorize(self, connection: Any, request: Any) -> Any:
        given = request.headers.get("Authorization", "")
        expected = b"Bearer " + self._token
        if not hmac.compare_digest(given.encode(), expected):
            self.rejected_connections += 1
            LOG.warning("refused a connection from %s: bad or missing token", connection.remote_address)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad or missing token\n")
        return None

    def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for data in connection:
                connection.send(encode(self._answer(data)))
        except ConnectionClosed:
            pass

    def _answer(self, data: bytes | str) -> Message:
        try:
            request = decode(data)  # type: ignore[arg-type]
        except WireError as e:
            LOG.warning("bad request: %s", e)
            return Message(MessageType.ERROR, 0, {"message": f"bad request: {e}"})
        self.requests += 1
        try:
            if request.type is MessageType.MANIFEST:
                return Message(MessageType.MANIFEST, request.id, {"manifest": self.manifest.to_dict()})
            if request.type is MessageType.RESET:
                with self._infer_lock:
                    self.policy.reset()
                return Message(MessageType.OK, request.id)
            if request.type is MessageType.INFER:
                observation = message_observation(request)
                with self._infer_lock:
                    chunk = self.policy.infer(observation)
                return chunk_message(chunk, request.id)
            return Message(MessageType.ERROR, request.id, {"message": f"unexpected {request.type.value}"})
        except Exception as e:  # the model raised: tell the client, keep serving others
            LOG.warning("request %d failed: %s", request.id, describe_error(e))
            return Message(MessageType.ERROR, request.id, {"message": describe_error(e)})


def describe_error(error: BaseException) -> str:
    """``Type: message``; where the message is empty, as a bare ``assert`` in a model leaves it, the line
    that raised (``AssertionError at modeling_diffusion.py:320: assert n_obs_steps == ...``)."""
    text = str(error)
    if not text:
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            last = frames[-1]
            return f"{type(error).__name__} at {Path(last.filename).name}:{last.lineno}: {last.line or '?'}"
    return f"{type(error).__name__}: {text}"


def read_token(token_file: str | None, env: str = TOKEN_ENV) -> str:
    """The token from a file (first line) or the environment; never from the command line (ps shows it)."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    return os.environ.get(env, "").strip()


def lerobot_python() -> Path | None:
    """The LeRobot venv's Python: ``$VLA_LEROBOT_VENV``, else ``.venv-lerobot`` in a folder above this file
    (the workspace root, for the source tree and for colcon's install tree alike)."""
    given = os.environ.get(LEROBOT_VENV_ENV)
    venvs = [Path(given)] if given else [p / ".venv-lerobot" for p in Path(__file__).resolve().parents]
    for venv in venvs:
        if (venv / "bin" / "python").is_file():
            return venv / "bin" / "python"
    return None


def _hand_over_to_lerobot(argv: list[str]) -> None:
    """Replace this process by vla-serve in the LeRobot venv (same arguments, stdin/stdout and pid), or raise
    ``RuntimeError`` saying how to make that venv. Returns only when LeRobot imports here."""
    import importlib.util

    if importlib.util.find_spec("lerobot") is not None:
        return
    python = lerobot_python()
    if python is None or os.environ.get(_HANDED_OVER_ENV):
        where = (
            f"${LEROBOT_VENV_ENV}={os.environ[LEROBOT_VENV_ENV]}"
            if LEROBOT_VENV_ENV in os.environ
            else ".venv-lerobot"
        )
        raise RuntimeError(
            f"--backend lerobot needs LeRobot 0.6.1 (Python >= 3.12), which neither this Python "
            f"({sys.executable}) nor {where} has: run scripts/setup-lerobot.sh"
        )
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env[_HANDED_OVER_ENV] = "1"
    LOG.info("LeRobot is not in this Python: handing over to %s", python)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(python), [str(python), "-m", "vla_policy.serve", *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[vla-serve] %(levelname)s %(message)s")
    _check_args(parser, args)
    try:
        loaded, token, context = _load(args, argv)
    except (OSError, ValueError, RuntimeError) as e:
        LOG.error("%s", e)
        return 2
    except AssertionError as e:  # a model's own check failed on the warm-up input: a refusal, not a traceback
        LOG.error("the policy failed its warm-up inference: %s", describe_error(e))
        return 2
    server = PolicyServer(
        loaded.policy, loaded.manifest, token, host=args.host, port=args.port, ssl_context=context
    )
    server.start()
    scheme = "wss" if context else "ws"
    LOG.info("serving %s on %s://%s:%d", loaded.description, scheme, args.host, server.port)
    if args.host not in ("127.0.0.1", "localhost", "::1") and context is None:
        LOG.warning("listening beyond localhost without TLS: the token travels in clear")
    _serve_until_stopped(server, child=args.child)
    return 0


def _parser() -> argparse.ArgumentParser:
    from vla_policy.backends import BackendKind

    parser = argparse.ArgumentParser(prog="vla-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[k.value for k in BackendKind if k is not BackendKind.REMOTE])
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint (native), model directory (huggingface) or LeRobot pretrained_model directory (lerobot)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: localhost only)"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token-file", help=f"file holding the auth token (default: ${TOKEN_ENV})")
    parser.add_argument("--tls-cert", help="PEM certificate: serve wss://")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--hf-chunk-size", type=int, default=1, help="huggingface: actions per inference")
    parser.add_argument(
        "--manifest",
        help="lerobot: our embodiment manifest (a dataset root or embodiment.json; default: the model "
        "directory's, else that of the dataset lerobot-train used)",
    )
    parser.add_argument(
        "--actions-per-chunk",
        type=int,
        default=0,
        help="lerobot: actions served per inference (0: the policy's n_action_steps)",
    )
    parser.add_argument(
        "--child",
        action="store_true",
        help="started by policy_node: report the port on stdout, exit when stdin closes",
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from vla_policy.backends import BackendKind

    if not args.backend:
        parser.error("--backend is required")
    if args.backend != BackendKind.LEROBOT.value and (args.manifest or args.actions_per_chunk):
        parser.error("--manifest and --actions-per-chunk are for --backend lerobot")
    if args.actions_per_chunk < 0:
        parser.error("--actions-per-chunk must be >= 0")


def _load(args: argparse.Namespace, argv: list[str]) -> tuple[LoadedPolicy, str, ssl.SSLContext | None]:
    """The warmed-up policy, the token and the TLS context; for ``--backend lerobot`` without LeRobot here,
    this process is first handed over to the LeRobot venv (and this returns there)."""
    from vla_policy.backends import BackendKind, load_local_backend, warm_up

    if args.backend == BackendKind.LEROBOT.value:
        _hand_over_to_lerobot(argv)
    token = read_token(args.token_file)
    if not token:
        raise ValueError(f"no auth token: set {TOKEN_ENV} or pass --token-file")
    context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    loaded = load_local_backend(
        BackendKind(args.backend),
        args.model,
        device=args.device,
        hf_chunk_size=args.hf_chunk_size,
        manifest=args.manifest,
        actions_per_chunk=args.actions_per_chunk,
    )
    LOG.info("warmed up in %.2f s", warm_up(loaded))
    return loaded, token, context


def _serve_until_stopped(server: PolicyServer, *, child: bool) -> None:
    """Until SIGINT/SIGTERM, or for a ``--child`` until its parent closes stdin; the ready line first."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if child:
            print(f"{READY_PREFIX}{server.port}", flush=True)
            sys.stdin.read()  # returns when the parent closes the pipe or dies
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
