"""``vla-up``: start a bringup plan where ``ros2 launch`` does not exist.

    vla-up sim                              # simulator + policy + safety monitor
    vla-up sim commander:=expert task:=stack
    vla-up record dataset:=outputs/demos
    vla-up sim --dry-run                    # print the command of every node and exit
    vla-up sim --args                       # list the profile's arguments

Each node of the plan runs in its own process (``<prefix>/lib/<package>/<executable> --ros-args ...``), its
output prefixed with ``[node_name]``. SIGINT/SIGTERM are forwarded to every node (SIGINT first, then
SIGTERM, then SIGKILL after a grace period). When a required node dies, everything is shut down and
``vla-up`` exits non-zero. The plan is the same one the launch files are built from (:mod:`vla_bringup.plan`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from vla_bringup.plan import (
    IMAGE_TRANSPORT_ENV,
    PROFILE_ARGS,
    PROFILES,
    USER_TRANSPORT_VARS,
    NodeSpec,
    ParamFile,
    Plan,
    PlanError,
    build_plan,
)

CLEAN_EXIT_CODES = (0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM)


class ResolveError(RuntimeError):
    """A node's executable or parameter file is not installed."""


@dataclass(frozen=True)
class ProcessSpec:
    """A fully resolved process: what the supervisor starts."""

    name: str
    argv: tuple[str, ...]
    required: bool = True
    env: Mapping[str, str] = field(default_factory=dict)


def _package_prefix(package: str) -> str:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        return str(get_package_prefix(package))
    except PackageNotFoundError:
        raise ResolveError(
            f"package {package!r} is not installed in AMENT_PREFIX_PATH; build the workspace "
            "(scripts/setup.sh) and `source scripts/env.sh`"
        ) from None


def resolve_param_file(pf: ParamFile) -> str:
    path = os.path.join(_package_prefix(pf.package), "share", pf.package, pf.path)
    if not os.path.isfile(path):
        raise ResolveError(f"parameter file {pf.path!r} of {pf.package} is not installed (looked at {path})")
    return path


def resolve_executable(node: NodeSpec) -> str:
    path = os.path.join(_package_prefix(node.package), "lib", node.package, node.executable)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ResolveError(
            f"node {node.name}: executable {node.package}/{node.executable} not found at {path}"
        )
    return path


def ros_args(node: NodeSpec, log_level: str = "info") -> list[str]:
    """The ``--ros-args`` part of a node's command line, in ``ros2 launch``'s order: files, then overrides."""
    out = ["--ros-args", "-r", f"__node:={node.name}", "--log-level", log_level]
    for pf in node.param_files:
        out += ["--params-file", resolve_param_file(pf)]
    for key, value in node.parameters.items():
        out += ["-p", f"{key}:={json.dumps(value)}"]  # JSON is YAML, which is how ROS parses -p values
    for src, dst in node.remappings:
        out += ["-r", f"{src}:={dst}"]
    return out


def user_transport(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Fast DDS transport settings the caller's environment already has (kept as they are)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in USER_TRANSPORT_VARS if environ.get(k)}


def node_env(node: NodeSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a node's process gets on top of the caller's environment: the plan's ``env`` and, for a node that
    handles images, the large-image transport (unless the caller set up a Fast DDS transport of its own)."""
    env = dict(node.env)
    if node.images and not user_transport(environ):
        env.update({name: resolve_param_file(pf) for name, pf in IMAGE_TRANSPORT_ENV.items()})
    return env


def transport_note(plan: Plan, environ: Mapping[str, str] | None = None) -> str:
    """One line on what the image processes get, for the front ends to print."""
    names = [n.name for n in plan.nodes if n.images]
    if not names:
        return ""
    own = user_transport(environ)
    if own:
        settings = " ".join(f"{k}={v}" for k, v in own.items())
        return f"image transport: keeping your {settings} for {', '.join(names)}"
    profile = resolve_param_file(next(iter(IMAGE_TRANSPORT_ENV.values())))
    return f"image transport: {', '.join(names)} get the large shared-memory Fast DDS profile {profile}"


def resolve(plan: Plan, environ: Mapping[str, str] | None = None) -> list[ProcessSpec]:
    log_level = plan.arguments.get("log_level", "info")
    return [
        ProcessSpec(
            name=node.name,
            argv=(resolve_executable(node), *ros_args(node, log_level)),
            required=node.required,
            env=node_env(node, environ),
        )
        for node in plan.nodes
    ]


class Supervisor:
    """Runs processes, prefixes their output, forwards signals, and stops all when a required one dies."""

    def __init__(
        self, processes: Sequence[ProcessSpec], *, grace_s: float = 10.0, out: TextIO | None = None
    ) -> None:
        self._specs = list(processes)
        self._grace_s = grace_s
        self._out = out if out is not None else sys.stdout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._readers: list[threading.Thread] = []
        self._width = max((len(p.name) for p in self._specs), default=0)
        self._escalated = False

    def say(self, name: str, line: str) -> None:
        with self._lock:
            self._out.write(f"[{name.ljust(self._width)}] {line.rstrip()}\n")
            self._out.flush()

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is None:
            return
        for raw in iter(proc.stdout.readline, b""):
            self.say(name, raw.decode(errors="replace"))

    def _start(self, spec: ProcessSpec) -> None:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        # A session of its own: the terminal's Ctrl-C reaches vla-up only, which forwards it in order.
        proc = subprocess.Popen(
            spec.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self._procs[spec.name] = proc
        reader = threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True)
        reader.start()
        self._readers.append(reader)
        self.say("vla-up", f"started {spec.name} (pid {proc.pid})")

    def _signal_all(self, sig: signal.Signals) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)

    def _wait_all(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in self._procs.values()):
                return True
            time.sleep(0.05)
        return all(p.poll() is not None for p in self._procs.values())

    def shutdown(self) -> None:
        for sig, wait_s in ((signal.SIGINT, self._grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            self._signal_all(sig)
            if self._wait_all(wait_s):
                break
            alive = [n for n, p in self._procs.items() if p.poll() is None]
            self._escalated = True
            self.say("vla-up", f"{alive} still running after {sig.name}; escalating")
        for reader in self._readers:
            reader.join(timeout=2.0)

    def run(self) -> int:
        """Start everything and supervise until a signal or a required node's exit; return the exit code.

        Non-zero when a node could not start, a required node exited with an error, or any node did not
        shut down cleanly (it needed more than SIGINT, or exited non-zero).
        """
        failed = False
        watched = {spec.name for spec in self._specs}
        try:
            for spec in self._specs:
                self._start(spec)
            while not self._stop.wait(0.05):
                for spec in self._specs:
                    code = self._procs[spec.name].poll()
                    if code is None or spec.name not in watched:
                        continue
                    watched.discard(spec.name)
                    if spec.required:
                        failed = failed or code != 0
                        self.request_stop(f"required node {spec.name} exited with code {code}")
                    else:
                        self.say("vla-up", f"optional node {spec.name} exited with code {code}; continuing")
        except OSError as e:
            failed = True
            self.request_stop(f"could not start a node: {e}")
        finally:
            self.say("vla-up", f"shutting down: {self._stop_reason or 'interrupted'}")
            self.shutdown()
        codes = {name: p.returncode for name, p in self._procs.items()}
        self.say("vla-up", "exit codes: " + ", ".join(f"{n}={c}" for n, c in codes.items()))
        unclean = [n for n, c in codes.items() if c not in CLEAN_EXIT_CODES]
        return 1 if failed or unclean or self._escalated else 0

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(f"signal {signal.Signals(signum).name}")

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise PlanError(f"arguments are name:=value, got {item!r}")
        out[name] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vla-up",
        description="Start a bringup plan (the same one the launch files use) without ros2 launch.",
    )
    parser.add_argument("profile", choices=PROFILES, help="which plan to start")
    parser.add_argument("assignments", nargs="*", metavar="name:=value", help="launch arguments")
    parser.add_argument("--dry-run", action="store_true", help="print each node's command and exit")
    parser.add_argument("--args", action="store_true", help="list the profile's arguments and exit")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds between SIGINT and SIGTERM at shutdown"
    )
    ns = parser.parse_args(argv)

    if ns.args:
        for a in PROFILE_ARGS[ns.profile]:
            choices = f" {{{'|'.join(a.choices)}}}" if a.choices else ""
            print(f"{a.name}:={a.default!r}{choices}\n    {a.description}")
        return 0
    try:
        plan = build_plan(ns.profile, parse_assignments(ns.assignments))
        processes = resolve(plan)
    except (PlanError, ResolveError) as e:
        print(f"vla-up: error: {e}", file=sys.stderr)
        return 2
    if ns.dry_run:
        for p in processes:
            env = "".join(f"{k}={v} " for k, v in p.env.items())
            print(f"{p.name}{'' if p.required else ' (optional)'}:\n    {env}{' '.join(p.argv)}")
        return 0
    supervisor = Supervisor(processes, grace_s=ns.grace)
    supervisor.install_signal_handlers()
    supervisor.say(
        "vla-up", f"profile {plan.profile}: " + " ".join(f"{k}:={v}" for k, v in plan.arguments.items())
    )
    note = transport_note(plan)
    if note:
        supervisor.say("vla-up", note)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
