"""ROS messages in and out of the monitor: input conversion, the output adapters for robot drivers, status.

Message types only, no rclpy node. Output adapters:

- ``joint_state``: ``sensor_msgs/JointState`` (name + position) on ``/joint_commands`` (our sim, Isaac Sim).
- ``float64_multi_array``: ``std_msgs/Float64MultiArray`` for ros2_control's forward_command_controller
  (e.g. ``/forward_position_controller/commands``); ``data`` is in the commanded-joint order, which must be
  the controller's ``joints`` order.
- ``joint_trajectory``: ``trajectory_msgs/JointTrajectory`` with one point reached after
  ``time_from_start`` for joint_trajectory_controller (``/joint_trajectory_controller/joint_trajectory``);
  the header stamp is zero, meaning "start now", so a late message cannot replay an old start time.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Duration, Time  # type: ignore[import-untyped]
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue  # type: ignore[import-untyped]
from sensor_msgs.msg import JointState  # type: ignore[import-untyped]
from std_msgs.msg import Float64MultiArray, MultiArrayDimension  # type: ignore[import-untyped]
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # type: ignore[import-untyped]

from vla_safety.monitor import Decision, JointCommand, JointStateSample, Status

# The ROS message classes are untyped (no stubs ship with the wheels): JointState | Float64MultiArray | JointTrajectory.
OutputMessage = Any


class OutputKind(enum.Enum):
    JOINT_STATE = "joint_state"
    FLOAT64_MULTI_ARRAY = "float64_multi_array"
    JOINT_TRAJECTORY = "joint_trajectory"


@dataclass(frozen=True)
class OutputConfig:
    kind: OutputKind
    topic: str = "/joint_commands"
    time_from_start: float = 0.1  # joint_trajectory only: when the single point is to be reached

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OutputKind(self.kind))
        if not self.topic:
            raise ValueError("OutputConfig.topic must not be empty")
        if not (math.isfinite(self.time_from_start) and self.time_from_start > 0.0):
            raise ValueError(f"OutputConfig.time_from_start must be > 0, got {self.time_from_start}")

    @property
    def message_type(self) -> Any:
        return {
            OutputKind.JOINT_STATE: JointState,
            OutputKind.FLOAT64_MULTI_ARRAY: Float64MultiArray,
            OutputKind.JOINT_TRAJECTORY: JointTrajectory,
        }[self.kind]


def seconds(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def command_from_msg(msg: JointState) -> JointCommand:
    return JointCommand(
        names=list(msg.name),
        positions=msg.position,
        stamp=seconds(msg.header.stamp),
        velocities=msg.velocity,
        efforts=msg.effort,
    )


def state_from_msg(msg: JointState, received: float) -> JointStateSample:
    return JointStateSample(names=list(msg.name), positions=msg.position, received=received)


def _duration(value: float) -> Duration:
    ns = round(value * 1e9)
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_output(
    config: OutputConfig, names: Sequence[str], positions: Sequence[float], stamp: Time
) -> OutputMessage:
    """The safe command as the configured driver expects it."""
    if config.kind is OutputKind.JOINT_STATE:
        js = JointState()
        js.header.stamp = stamp
        js.name = list(names)
        js.position = [float(p) for p in positions]
        return js
    if config.kind is OutputKind.FLOAT64_MULTI_ARRAY:
        arr = Float64MultiArray()
        arr.layout.dim = [MultiArrayDimension(label="joints", size=len(names), stride=len(names))]
        arr.data = [float(p) for p in positions]
        return arr
    traj = JointTrajectory()
    traj.joint_names = list(names)
    point = JointTrajectoryPoint()
    point.positions = [float(p) for p in positions]
    point.time_from_start = _duration(config.time_from_start)
    traj.points = [point]
    return traj


_LEVEL = {
    Status.OK: DiagnosticStatus.OK,
    Status.CLAMPED: DiagnosticStatus.OK,  # limiting is the monitor doing its job
    Status.REJECTED: DiagnosticStatus.WARN,
    Status.HOLD: DiagnosticStatus.WARN,
    Status.ESTOP: DiagnosticStatus.ERROR,
    Status.FAULT: DiagnosticStatus.ERROR,
}


def status_message(
    decision: Decision, counters: Mapping[str, int], extra: Mapping[str, str], name: str, hardware_id: str
) -> DiagnosticStatus:
    """``/safety/state`` and the ``/diagnostics`` entry: level, status name, joints concerned, counters."""
    status = DiagnosticStatus()
    status.level = _LEVEL[decision.status]
    status.name = name
    status.hardware_id = hardware_id
    status.message = decision.status.name + (f": {decision.reason}" if decision.reason else "")
    values = [
        KeyValue(key="status", value=decision.status.name),
        KeyValue(key="causes", value=",".join(c.value for c in decision.causes)),
        KeyValue(key="joints", value=",".join(decision.joints)),
    ]
    values += [KeyValue(key=k, value=v) for k, v in extra.items()]
    values += [KeyValue(key=k, value=str(v)) for k, v in counters.items()]
    status.values = values
    return status
