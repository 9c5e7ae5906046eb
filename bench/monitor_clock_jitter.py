"""Why the safety monitor limits more commands through ROS than in the env: command arrival jitter on /clock.

    python bench/monitor_clock_jitter.py [--commands N]

Through ROS (``vla-demo``) the monitor limited 43–53 % of stage 11's commands (the checkpoint shipped then);
in the env (``vla-eval --control-hz 48 --safety panda``), with the same monitor and the same checkpoint, 2–5 %,
and the success rates agree. The two paths time a command's motion differently:

- in the env, ``SafetyGate`` passes the exact simulated time of each control step;
- ``safety_node`` under ``use_sim_time`` credits a step with the time between two commands' *arrivals*, read on
  its ROS clock (``motion_now`` in ``SafetyMonitor.check``), and that clock only moves when a ``/clock``
  message arrives: ``sim_node`` publishes one every 10 ms of sim time. ``policy_node`` plays its chunk on its
  own ``/clock`` timer, so a command that reaches the monitor one tick late, followed by one on time, is
  credited 10 ms for a 20 ms step (twice the velocity, a large acceleration); two in the same tick, 0 ms.

This bench replays one smooth trajectory (every arm joint of the Panda at 40 % of its velocity limit, the
finger slower to stay in its range, all well within their acceleration limits) through the real ``SafetyMonitor`` with the ``panda`` profile, timed each
way, and prints the share of commands it limited and why. It needs no ROS and takes about a second.
"Stamp-timed" is what the monitor would report if it timed motion by the commands' header stamps instead
(the policy's own tick times); on a real robot arrival time is what the joints see, so that is a diagnostic,
not a proposed setting.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_safety.limits import load_limits
from vla_safety.monitor import JointCommand, JointStateSample, MonitorConfig, SafetyMonitor, Status

CLOCK_TICK = 0.01  # s: sim_node publishes /clock with every joint state, 100 per simulated second
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02])


def trajectory(limits, names: tuple[str, ...]):
    """q(t): each joint a sine at 0.4 Hz whose peak speed is 40 % of its velocity limit (phases differ)."""
    vmax = np.array([limits[n].max_velocity for n in names])
    amplitude = 0.4 * vmax / (2 * np.pi * 0.4)
    amplitude[-1] = min(amplitude[-1], 0.015)  # the finger: inside its 0–0.04 m range
    phase = np.arange(len(names))
    return lambda t: HOME + amplitude * np.sin(2 * np.pi * 0.4 * t + phase)


def run(
    late_ticks: list[int], *, hz: float, quantized: bool, stamp_timed: bool, commands: int, seed: int = 0
):
    """Share of commands the monitor limited, and the causes; ``late_ticks``: /clock ticks of delay, drawn."""
    names = tuple(PANDA_COMMAND_JOINTS)
    limits = load_limits("panda")
    q = trajectory(limits, names)
    rng = np.random.default_rng(seed)
    monitor = SafetyMonitor(limits, MonitorConfig(joints=names, heartbeat_timeout=0.0))
    monitor.arm(JointStateSample(names, list(q(0.0)), 0.0), 0.0)
    causes: Counter[str] = Counter()
    for k in range(1, commands + 1):
        t = k / hz
        stamp = round(t / CLOCK_TICK) * CLOCK_TICK if quantized else t  # policy_node's timer fires on /clock
        arrival = stamp + CLOCK_TICK * int(rng.choice(late_ticks))  # the monitor's clock when it arrives
        state = JointStateSample(names, list(q(t)), arrival)
        motion = stamp if stamp_timed else arrival
        decision = monitor.check(JointCommand(names, list(q(t)), stamp), state, arrival, arrival, motion)
        if decision.status is not Status.OK:
            causes.update(c.value for c in decision.causes)
    return monitor.counters.limited_fraction, dict(causes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, default=1000, help="commands per row")
    a = p.parse_args()
    rows = [
        ("env: exact sim time, 48 Hz (vla-eval --control-hz 48)", [0], 48.0, False, False),
        ("ROS timing, 50 Hz on /clock, every command on time", [0], 50.0, True, False),
        ("ROS timing, 1 command in 10 one tick late", [0] * 9 + [1], 50.0, True, False),
        ("ROS timing, 1 in 4 one tick late", [0, 0, 0, 1], 50.0, True, False),
        ("ROS timing, late by 0, 1 or 2 ticks", [0, 1, 2], 50.0, True, False),
        ("same, stamp-timed (diagnostic)", [0, 1, 2], 50.0, True, True),
    ]
    print(f"{'timing':<58} {'limited':>8}  causes")
    figures = {}
    for label, late, hz, quantized, stamp_timed in rows:
        share, causes = run(late, hz=hz, quantized=quantized, stamp_timed=stamp_timed, commands=a.commands)
        figures[label] = round(share, 4)
        print(f"{label:<58} {share:>7.1%}  {causes or '-'}")
    print(json.dumps({"limited_share": figures}))


if __name__ == "__main__":
    main()
