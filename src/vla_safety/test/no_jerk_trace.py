"""Golden trace: the monitor's decisions on fixed pseudo-random command streams, with limits that set no jerk.

``data/no_jerk_trace.json`` was recorded with the monitor as it was before jerk enforcement (commit 73d8d63), and
re-recorded once for an intended change: a step credited no time (e.g. the sim clock paused) no longer resets
the acceleration limit's velocity record to zero (which had let the next step brake beyond max_acceleration).
Per stream: a short SHA-256 of every decision (status, causes, joints, exact positions) and the final counters.
``test_monitor_jerk.py`` replays the same streams and requires the same digests, so a profile without jerk
limits behaves exactly as before, bit for bit. Rerecord only for an intended behaviour change:
``python no_jerk_trace.py OUT.json`` (from this directory, with the package importable).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from factories import JOINTS, LIMITS
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_safety.limits import JointLimits, load_profile
from vla_safety.monitor import Decision, JointCommand, JointStateSample, MonitorConfig, SafetyMonitor

SEEDS = (1, 2, 3)
STEPS = 300
KINDS = ("near",) * 8 + ("push",) * 3 + ("stop", "raw", "nan", "tick", "tick", "old_stamp", "no_heartbeat",
         "freeze_state", "estop", "reset", "reset", "sim_time", "pause")  # fmt: skip
DTS = (0.0, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.02, 0.02, 0.05, 0.1, 0.15, 0.3)


def without_jerk(limits: Mapping[str, JointLimits]) -> dict[str, JointLimits]:
    return {n: replace(lim, max_jerk=None) for n, lim in limits.items()}


def streams() -> dict[str, tuple[tuple[str, ...], dict[str, JointLimits]]]:
    return {
        "small": (JOINTS, dict(LIMITS)),
        "panda_without_jerk": (PANDA_COMMAND_JOINTS, without_jerk(load_profile("panda"))),
    }


def encode(d: Decision) -> list[Any]:
    return [d.status.name, [c.value for c in d.causes], list(d.joints),
            None if d.positions is None else list(d.positions)]  # fmt: skip


def run(joints: Sequence[str], limits: Mapping[str, JointLimits], seed: int) -> list[Any]:
    """Decisions (and the final counters) for one stream; the robot follows the output most of the time."""
    rng = random.Random(seed)
    lims = [limits[n] for n in joints]
    span = [lim.upper - lim.lower for lim in lims]
    mon = SafetyMonitor(limits, MonitorConfig(joints=tuple(joints)))
    t, sim = 100.0, 50.0
    pose = [lim.lower + 0.5 * s for lim, s in zip(lims, span, strict=True)]
    frozen: float | None = None

    def state() -> JointStateSample:
        return JointStateSample(list(joints), list(pose), t if frozen is None else frozen)

    mon.heartbeat(t)
    trace: list[Any] = [encode(mon.reset(state(), t))]
    for _ in range(STEPS):
        kind, dt = rng.choice(KINDS), rng.choice(DTS)
        t += dt
        sim += dt * rng.choice((0.0, 0.5, 1.0))
        if kind != "no_heartbeat":
            mon.heartbeat(t)
        if kind == "freeze_state" and frozen is None:
            frozen = t
        base = list(pose)
        if kind in ("near", "sim_time", "old_stamp", "no_heartbeat", "freeze_state"):
            target = [b + rng.uniform(-0.05, 0.05) * s for b, s in zip(base, span, strict=True)]
        elif kind == "push":
            sign = rng.choice((-1.0, 1.0))
            target = [b + sign * 0.6 * s for b, s in zip(base, span, strict=True)]
        elif kind == "stop":
            target = base
        elif kind == "raw":
            target = [lim.lower + rng.uniform(-0.1, 1.1) * (lim.upper - lim.lower) for lim in lims]
        elif kind == "nan":
            target = [math.nan, *base[1:]]
        else:
            target = []
        if kind == "pause":  # no commands: the command timeout's hold ramp, one tick per 20 ms
            for _ in range(20):
                t += 0.02
                mon.heartbeat(t)
                trace.append(encode(mon.tick(state(), t)))
            d = mon.tick(state(), t)
        elif kind == "tick":
            d = mon.tick(state(), t)
        elif kind == "estop":
            d = mon.engage_estop(t, "trace")
        elif kind == "reset":
            frozen = None
            d = mon.reset(state(), t)
        else:
            stamp = t - 1.0 if kind == "old_stamp" else t
            motion = sim if kind == "sim_time" else None
            d = mon.check(JointCommand(list(joints), target, stamp), state(), t, None, motion)
        trace.append(encode(d))
        if d.positions is not None and rng.random() < 0.9:
            pose = list(d.positions)
    trace.append(mon.counters.as_dict())
    return trace


def digest(entry: Any) -> str:
    return hashlib.sha256(json.dumps(entry).encode()).hexdigest()[:12]


def record() -> dict[str, list[Any]]:
    """Per stream: the digest of each decision, then the final counters (in the clear)."""
    out: dict[str, list[Any]] = {}
    for name, (joints, limits) in streams().items():
        for seed in SEEDS:
            trace = run(joints, limits, seed)
            out[f"{name}/{seed}"] = [*(digest(e) for e in trace[:-1]), trace[-1]]
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(record(), f, indent=0)
