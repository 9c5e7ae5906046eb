"""Safety monitor cost: per-check CPU time, latency added over a pass-through relay, and a 5 kHz flood.

    python bench/safety_latency.py [--quick]

1. per-check: ``SafetyMonitor.check`` on an 8-joint Panda command, in process (plus ROS message conversion);
   and the rclpy executor's cost per wake-up for the real ``SafetyNode`` against a relay-shaped node.
2. added latency: a generator publishes JointState commands at 500 Hz to ``/bench/in``; the real
   ``safety_node`` (its own process, JointState adapter) and a pass-through relay node (its own process) both
   subscribe it; one receiver takes both outputs. Each command carries its sequence number in joint 1
   (1 µrad steps, passed unchanged by the monitor), so latencies are paired per message:
   added = safety - relay for the same message. Two clocks for the arrival: the DDS reception timestamp the
   middleware stamps when the sample reaches the receiver's reader (the headline: it leaves out this script's
   own executor and GIL, which are not the node's doing), and the time the receiver's callback ran.
3. flood: 5 kHz into the safety node; its RSS is sampled throughout and the latency of the first and last
   second are compared: a queue growing without bound shows as growing memory and growing latency.

Uses the caller's ROS_DOMAIN_ID (set one of your own); discovery is limited to localhost.
Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_STATE_JOINTS

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

PANDA = list(PANDA_COMMAND_JOINTS)
HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02]
SEQ_STEP = 1e-6  # rad per message on joint 1: the sequence number, far below every limit

RELAY = """
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
rclpy.init()
node = Node("bench_relay")
qos = QoSProfile(depth=5)
pub = node.create_publisher(JointState, "/bench/relay_out", 10)
node.create_subscription(JointState, "/bench/in", pub.publish, qos)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def bench_check(n: int) -> dict[str, float]:
    """Per-check cost of the pure monitor, and of message conversion + check + output message."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import JointState
    from vla_safety.adapters import OutputConfig, OutputKind, command_from_msg, make_output
    from vla_safety.limits import load_limits
    from vla_safety.monitor import JointCommand, JointStateSample, MonitorConfig, SafetyMonitor

    monitor = SafetyMonitor(load_limits("panda"), MonitorConfig(joints=tuple(PANDA), max_command_age=1e9))
    t0 = time.monotonic()
    state = JointStateSample(PANDA, HOME, t0)
    monitor.heartbeat(t0)
    monitor.reset(state, t0)
    out_cfg = OutputConfig(OutputKind.JOINT_STATE)
    pure, full = [], []
    for k in range(n):
        now = time.monotonic()
        monitor.heartbeat(now)
        state = JointStateSample(PANDA, HOME, now)
        pos = list(HOME)
        pos[0] += SEQ_STEP * (k + 1)
        cmd = JointCommand(PANDA, pos, now)
        a = time.perf_counter()
        monitor.check(cmd, state, now)
        pure.append((time.perf_counter() - a) * 1e6)
    for k in range(n):
        now = time.monotonic()
        monitor.heartbeat(now)
        state = JointStateSample(PANDA, HOME, now)
        msg = JointState()
        msg.header.stamp = Time(sec=int(now), nanosec=int((now % 1) * 1e9))
        msg.name = PANDA
        msg.position = [*HOME]
        msg.position[0] += SEQ_STEP * (n + k + 1)
        a = time.perf_counter()
        d = monitor.check(command_from_msg(msg), state, now)
        if d.positions is not None:
            make_output(out_cfg, PANDA, d.positions, msg.header.stamp)
        full.append((time.perf_counter() - a) * 1e6)
    return {"check_us": percentiles(pure), "check_with_messages_us": percentiles(full)}  # type: ignore[dict-item]


def bench_wakeup(n: int) -> dict[str, dict[str, float]]:
    """rclpy executor cost of one wake-up (no message work): the real SafetyNode against the relay's shape.

    rclpy rebuilds its wait set in Python on every wake-up, so this cost grows with each subscription, timer,
    service and QoS-event handler a node owns; every message pays it. A triggered guard condition wakes each.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from vla_safety.safety_node import SafetyNode

    rclpy.init()
    try:
        # Its own timers slowed down so that they do not fire into the measurement.
        slow = [Parameter("rate", value=0.5), Parameter("diagnostics_period", value=100.0)]
        safety = SafetyNode(parameter_overrides=slow)
        relay = rclpy.create_node("bench_relay_shape")
        relay_pub = relay.create_publisher(JointState, "/bench/shape_out", 10)
        relay.create_subscription(JointState, "/bench/shape_in", relay_pub.publish, 5)
        figures = {}
        for label, node in (("safety_node", safety), ("relay", relay)):
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            wake = node.create_guard_condition(lambda: None)
            times = []
            for _ in range(n):
                wake.trigger()
                a = time.perf_counter()
                executor.spin_once(timeout_sec=0.1)
                times.append((time.perf_counter() - a) * 1e6)
            executor.shutdown()
            figures[label] = percentiles(times)
        safety.destroy_node()
        relay.destroy_node()
    finally:
        rclpy.try_shutdown()
    return {"wakeup_safety_node_us": figures["safety_node"], "wakeup_relay_us": figures["relay"]}


@dataclass
class Recorder:
    sent: dict[int, float] = field(default_factory=dict)
    safety: dict[int, float] = field(default_factory=dict)  # receiver callback time (monotonic)
    relay: dict[int, float] = field(default_factory=dict)
    safety_dds: dict[int, int] = field(default_factory=dict)  # DDS reception timestamp (ns)
    relay_dds: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_ros(args: argparse.Namespace) -> dict[str, object]:
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Header

    env = dict(os.environ)
    safety = subprocess.Popen(
        [
            sys.executable, "-m", "vla_safety.safety_node", "--ros-args",
            "-r", "/policy/joint_commands:=/bench/in",
            "-p", "output_topic:=/bench/safety_out",
            "-p", "max_command_age:=1.0",
            "-p", "log_throttle:=5.0",
            # Watchdogs relaxed so a starved 2-core machine measures latency rather than tripping a fault.
            "-p", "state_timeout:=1.0",
            "-p", "heartbeat_timeout:=1.0",
            "-p", "command_timeout:=1.0",
            "--log-level", "warn",
        ],
        env=env,
    )  # fmt: skip
    relay = subprocess.Popen([sys.executable, "-c", RELAY], env=env)
    rclpy.init()
    node = rclpy.create_node("bench_safety_latency")
    rec = Recorder()
    base = HOME[0]

    def receiver(store: dict[int, float], store_dds: dict[int, int]):  # type: ignore[no-untyped-def]
        def on(msg: JointState, info: dict[str, int]) -> None:  # two arguments: rclpy passes the MessageInfo
            t = time.monotonic()
            seq = round((msg.position[0] - base) / SEQ_STEP)
            if abs(msg.position[0] - (base + SEQ_STEP * seq)) > 1e-12:
                return  # limited by the monitor (e.g. a burst): not this message's target, leave it unpaired
            with rec.lock:
                store.setdefault(seq, t)
                store_dds.setdefault(seq, info["received_timestamp"])

        return on

    for topic, store, store_dds in (
        ("/bench/safety_out", rec.safety, rec.safety_dds),
        ("/bench/relay_out", rec.relay, rec.relay_dds),
    ):
        node.create_subscription(JointState, topic, receiver(store, store_dds), QoSProfile(depth=100))
    statuses: dict[str, int] = {}

    def on_state(msg: DiagnosticStatus) -> None:
        name = msg.message.split(":")[0]
        statuses[name] = statuses.get(name, 0) + 1

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(DiagnosticStatus, "/safety/state", on_state, latched)
    cmd_pub = node.create_publisher(JointState, "/bench/in", 10)
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    hb_pub = node.create_publisher(Header, "/policy/heartbeat", 10)
    stop = threading.Event()

    def background() -> None:  # /joint_states at 100 Hz and the heartbeat at 20 Hz: the robot stays at home
        k = 0
        while not stop.is_set():
            stamp = node.get_clock().now().to_msg()
            js = JointState()
            js.header.stamp = stamp
            js.name = list(PANDA_STATE_JOINTS)
            js.position = [*HOME, HOME[-1]]
            js_pub.publish(js)
            if k % 5 == 0:
                hb = Header()
                hb.stamp = stamp
                hb_pub.publish(hb)
            k += 1
            time.sleep(0.01)

    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_quietly() -> None:
        with contextlib.suppress(ExternalShutdownException):
            executor.spin()

    spin = threading.Thread(target=spin_quietly, daemon=True)
    spin.start()
    bg = threading.Thread(target=background, daemon=True)
    bg.start()
    seq = 0

    def publish_at(rate: float, seconds: float) -> tuple[int, float]:
        nonlocal seq
        period = 1.0 / rate
        start = time.monotonic()
        next_t = start
        sent = 0
        msg = JointState()
        msg.name = PANDA
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            if now < next_t:
                time.sleep(next_t - now)
                continue
            next_t += period
            if next_t < now - 0.05:  # we fell behind (loaded machine): do not burst to catch up
                next_t = now
            seq += 1
            pos = list(HOME)
            pos[0] = base + SEQ_STEP * seq
            msg.position = pos
            msg.header.stamp = node.get_clock().now().to_msg()
            t = time.monotonic()
            with rec.lock:
                rec.sent[seq] = t
            cmd_pub.publish(msg)
            sent += 1
        return sent, time.monotonic() - start

    result: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:  # wait until both paths deliver
            publish_at(50, 0.2)
            with rec.lock:
                if rec.safety and rec.relay:
                    break
        else:
            raise RuntimeError("no output from the safety node or the relay within 30 s")
        publish_at(500, 1.0)  # warm-up
        first = seq + 1
        sent, took = publish_at(500, args.seconds)
        time.sleep(0.3)
        with rec.lock:
            window = [s for s in range(first, seq + 1)]
            safety_lat = [(rec.safety[s] - rec.sent[s]) * 1e3 for s in window if s in rec.safety]
            relay_lat = [(rec.relay[s] - rec.sent[s]) * 1e3 for s in window if s in rec.relay]
            both = [s for s in window if s in rec.safety and s in rec.relay]
            paired = [(rec.safety[s] - rec.relay[s]) * 1e3 for s in both]
            paired_dds = [(rec.safety_dds[s] - rec.relay_dds[s]) * 1e-6 for s in both]
        result["latency_500hz"] = {
            "input_hz": sent / took,
            "safety_ms": percentiles(safety_lat),
            "relay_ms": percentiles(relay_lat),
            "added_ms": percentiles(paired_dds),
            "added_at_callback_ms": percentiles(paired),
            "safety_delivered": len(safety_lat) / max(sent, 1),
            "relay_delivered": len(relay_lat) / max(sent, 1),
        }

        # Flood: 5 kHz into the safety node, RSS sampled, latency compared first vs last second.
        proc = psutil.Process(safety.pid)
        rss: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                rss.append(proc.memory_info().rss / 2**20)
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        flood_first = seq + 1
        t_flood = time.monotonic()
        sent, took = publish_at(5000, args.flood_seconds)
        time.sleep(0.5)
        sampling.set()
        sampler.join()
        with rec.lock:
            window = [s for s in range(flood_first, seq + 1)]
            got = [(s, rec.safety[s] - rec.sent[s]) for s in window if s in rec.safety]
        early = [lat * 1e3 for s, lat in got if rec.sent[s] - t_flood < 1.0]
        late = [lat * 1e3 for s, lat in got if rec.sent[s] - t_flood > took - 1.0]
        result["flood_5khz"] = {
            "input_hz": sent / took,
            "seconds": took,
            "sent": sent,
            "safety_outputs": len(got),
            "delivered_fraction": len(got) / max(sent, 1),
            "latency_first_second_ms": percentiles(early),
            "latency_last_second_ms": percentiles(late),
            "rss_mib_start": rss[0] if rss else float("nan"),
            "rss_mib_end": rss[-1] if rss else float("nan"),
            "rss_mib_max": max(rss) if rss else float("nan"),
            "subscription_queue_depth": 5,
        }
        result["safety_states_seen"] = dict(statuses)
    finally:
        stop.set()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        for p in (safety, relay):
            p.terminate()
        for p in (safety, relay):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 15 s)")
    args = parser.parse_args()
    args.checks = 2000 if args.quick else 20000
    args.seconds = 3.0 if args.quick else 10.0
    args.flood_seconds = 3.0 if args.quick else 10.0

    figures: dict[str, object] = {"machine": f"{os.cpu_count()} cpu", "quick": args.quick}
    figures.update(bench_check(args.checks))
    figures.update(bench_wakeup(args.checks))
    figures.update(run_ros(args))

    c, m = figures["check_us"], figures["check_with_messages_us"]
    lat, fl = figures["latency_500hz"], figures["flood_5khz"]
    print("safety monitor benchmark" + (" (quick)" if args.quick else ""))
    print(f"{'figure':44s} {'p50':>10s} {'p99':>10s} {'max':>10s}")
    for label, d, unit in (
        ("SafetyMonitor.check", c, "us"),
        ("check + JointState in/out conversion", m, "us"),
        ("executor wake-up: safety_node", figures["wakeup_safety_node_us"], "us"),
        ("executor wake-up: relay", figures["wakeup_relay_us"], "us"),
        ("500 Hz: safety_node latency", lat["safety_ms"], "ms"),  # type: ignore[index]
        ("500 Hz: relay latency", lat["relay_ms"], "ms"),  # type: ignore[index]
        ("500 Hz: added by safety (paired, DDS)", lat["added_ms"], "ms"),  # type: ignore[index]
        ("  same, at the receiver's callback", lat["added_at_callback_ms"], "ms"),  # type: ignore[index]
        ("5 kHz flood: latency, first second", fl["latency_first_second_ms"], "ms"),  # type: ignore[index]
        ("5 kHz flood: latency, last second", fl["latency_last_second_ms"], "ms"),  # type: ignore[index]
    ):
        print(f"{label + ' [' + unit + ']':44s} {d['p50']:10.3f} {d['p99']:10.3f} {d['max']:10.3f}")  # type: ignore[index]
    print(
        f"500 Hz input achieved {lat['input_hz']:.0f} Hz; delivered safety {lat['safety_delivered']:.1%}, "  # type: ignore[index]
        f"relay {lat['relay_delivered']:.1%}"  # type: ignore[index]
    )
    print(
        f"5 kHz flood: achieved {fl['input_hz']:.0f} Hz for {fl['seconds']:.1f} s, {fl['safety_outputs']}/{fl['sent']} "  # type: ignore[index]
        f"passed; safety_node RSS {fl['rss_mib_start']:.1f} -> {fl['rss_mib_end']:.1f} MiB (max {fl['rss_mib_max']:.1f})"  # type: ignore[index]
    )
    print(f"/safety/state messages seen during the run: {figures['safety_states_seen']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
