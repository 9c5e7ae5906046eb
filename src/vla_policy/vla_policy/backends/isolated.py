"""A local model in its own process: ``vla-serve`` started as a child on localhost, reached by the remote client.

Why a process and not only a thread: Python runs one thread at a time (the GIL), and a model's Python-side
work (preprocessing, generation loops) would delay the control timer by milliseconds. In a child process the
node's inference thread just waits on a socket. The child gets a fresh random token, listens on 127.0.0.1 on
a port of its own choosing and reports it on stdout; it exits when its stdin closes, so it never outlives the
node, even one that is killed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
from typing import IO

from vla_common.policy import ActionChunk, Observation

from vla_policy.backends import BackendKind, InferenceUnavailable, LoadedPolicy
from vla_policy.backends.remote import RemoteConfig, RemotePolicy
from vla_policy.serve import READY_PREFIX


class IsolatedPolicy(RemotePolicy):
    """The remote client plus ownership of the child process."""

    def __init__(self, config: RemoteConfig, token: str, process: subprocess.Popen[str]) -> None:
        super().__init__(config, token)
        self.process = process

    def alive(self) -> bool:
        return self.process.poll() is None

    def infer(self, observation: Observation) -> ActionChunk:
        if not self.alive():
            raise InferenceUnavailable(f"the inference process exited with code {self.process.returncode}")
        return super().infer(observation)

    def close(self) -> None:
        super().close()
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # the child's cue to exit
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5.0)


def start_isolated_backend(
    kind: BackendKind,
    model_dir: str,
    *,
    device: str = "cpu",
    hf_chunk_size: int = 1,
    threads: int = 1,
    timeout_s: float = 1.0,
    start_timeout_s: float = 180.0,
) -> LoadedPolicy:
    kind = BackendKind(kind)
    if kind is BackendKind.REMOTE:
        raise ValueError("the remote backend already runs elsewhere")
    token = secrets.token_hex(16)
    env = {**os.environ, "VLA_SERVE_TOKEN": token}
    command = [
        sys.executable, "-m", "vla_policy.serve", "--backend", kind.value, "--model", model_dir,
        "--host", "127.0.0.1", "--port", "0", "--device", device, "--threads", str(threads),
        "--hf-chunk-size", str(hf_chunk_size), "--child",
    ]  # fmt: skip
    # stderr is inherited: the child's log lines appear with the node's.
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = _wait_ready(process, start_timeout_s)
    policy = IsolatedPolicy(RemoteConfig(uri=f"ws://127.0.0.1:{port}", timeout_s=timeout_s), token, process)
    try:
        manifest = policy.manifest()
    except BaseException:
        policy.close()
        raise
    return LoadedPolicy(
        policy, manifest, f"{kind.value} model {model_dir} in inference process {process.pid}"
    )


def _wait_ready(process: subprocess.Popen[str], timeout_s: float) -> int:
    found: list[int] = []
    ready = threading.Event()

    def read(stream: IO[str]) -> None:
        # Keeps draining after the ready line, so a chatty library can never fill the pipe and block the child.
        for line in stream:
            if not ready.is_set() and line.startswith(READY_PREFIX):
                found.append(int(line[len(READY_PREFIX) :].strip()))
                ready.set()
        ready.set()

    if process.stdout is None:
        raise RuntimeError("no pipe from the inference process")
    threading.Thread(
        target=read, args=(process.stdout,), name="inference-process-stdout", daemon=True
    ).start()
    ended = ready.wait(timeout_s)
    if found:
        return found[0]
    if ended:  # its stdout closed without the ready line: it is exiting
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5.0)
    if process.poll() is not None:
        raise RuntimeError(
            f"the inference process exited with code {process.returncode} before it was ready; see its log above"
        )
    process.kill()
    process.wait(5.0)
    raise RuntimeError(f"the inference process was not ready within {timeout_s:.0f} s; see its log above")
