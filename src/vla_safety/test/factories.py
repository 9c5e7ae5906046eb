"""Fake-input factories: commands, joint states and a ready-armed monitor with a controllable clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vla_safety.limits import JointLimits
from vla_safety.monitor import Decision, JointCommand, JointStateSample, MonitorConfig, SafetyMonitor

JOINTS = ("j1", "j2", "grip")
LIMITS = {
    "j1": JointLimits(
        "j1", -2.0, 2.0, max_velocity=1.0, max_acceleration=10.0, max_effort=50.0, position_margin=0.1
    ),
    "j2": JointLimits("j2", -1.0, 1.0, max_velocity=2.0, max_acceleration=20.0),
    "grip": JointLimits("grip", 0.0, 0.04, max_velocity=0.2),
}
HOME = (0.0, 0.0, 0.02)


def config(**overrides: object) -> MonitorConfig:
    return MonitorConfig(joints=JOINTS, **overrides)  # type: ignore[arg-type]


def command(
    positions: Sequence[float], stamp: float, names: Sequence[str] = JOINTS, **kw: object
) -> JointCommand:
    return JointCommand(names=list(names), positions=list(positions), stamp=stamp, **kw)  # type: ignore[arg-type]


def state(
    positions: Sequence[float] = HOME, received: float = 0.0, names: Sequence[str] = JOINTS
) -> JointStateSample:
    return JointStateSample(names=list(names), positions=list(positions), received=received)


class Rig:
    """An armed monitor at t=100 s with fresh state and heartbeat. ``advance`` moves the monotonic clock
    (ROS time is the same clock here); ``state_received`` pins /joint_states to an old arrival time."""

    def __init__(
        self, pose: Sequence[float] = HOME, limits: Mapping[str, JointLimits] = LIMITS, **overrides: object
    ) -> None:
        self.t = 100.0
        self.monitor = SafetyMonitor(limits, config(**overrides))
        self.pose = list(pose)
        self.state_received: float | None = None
        self.monitor.heartbeat(self.t)
        decision = self.monitor.reset(self.state(), self.t)
        if decision.positions is not None or not self.monitor.armed:
            raise RuntimeError(f"rig failed to arm: {decision}")

    def state(self) -> JointStateSample:
        return state(self.pose, self.t if self.state_received is None else self.state_received)

    def advance(self, dt: float, heartbeat: bool = True) -> None:
        self.t += dt
        if heartbeat:
            self.monitor.heartbeat(self.t)

    def send(self, positions: Sequence[float], stamp: float | None = None, **kw: object) -> Decision:
        cmd = command(positions, self.t if stamp is None else stamp, **kw)
        return self.monitor.check(cmd, self.state(), self.t)

    def tick(self) -> Decision:
        return self.monitor.tick(self.state(), self.t)
