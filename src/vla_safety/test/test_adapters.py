"""Output adapters and message conversion (message types only, no node)."""

import math

import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory
from vla_safety.adapters import OutputConfig, OutputKind, command_from_msg, make_output, status_message
from vla_safety.monitor import Cause, Decision, Status

NAMES = ("a", "b")
STAMP = Time(sec=12, nanosec=500_000_000)


def test_joint_state_adapter():
    msg = make_output(OutputConfig(OutputKind.JOINT_STATE), NAMES, (0.1, 0.2), STAMP)
    assert isinstance(msg, JointState)
    assert list(msg.name) == ["a", "b"]
    assert list(msg.position) == [0.1, 0.2]
    assert msg.header.stamp == STAMP


def test_float64_multi_array_adapter_keeps_the_commanded_order():
    msg = make_output(
        OutputConfig("float64_multi_array", "/forward_position_controller/commands"), NAMES, (0.1, 0.2), STAMP
    )
    assert isinstance(msg, Float64MultiArray)
    assert list(msg.data) == [0.1, 0.2]
    assert msg.layout.dim[0].size == 2


def test_joint_trajectory_adapter_is_one_point_starting_now():
    msg = make_output(
        OutputConfig(OutputKind.JOINT_TRAJECTORY, time_from_start=1.25), NAMES, (0.1, 0.2), STAMP
    )
    assert isinstance(msg, JointTrajectory)
    assert list(msg.joint_names) == ["a", "b"]
    assert len(msg.points) == 1
    assert list(msg.points[0].positions) == [0.1, 0.2]
    assert (msg.points[0].time_from_start.sec, msg.points[0].time_from_start.nanosec) == (1, 250_000_000)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)


@pytest.mark.parametrize("kind", list(OutputKind))
def test_message_type_matches_the_adapter(kind):
    cfg = OutputConfig(kind)
    assert isinstance(make_output(cfg, NAMES, (0.0, 0.0), STAMP), cfg.message_type)


def test_bad_output_config_is_refused():
    with pytest.raises(ValueError):
        OutputConfig("ros1_topic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_from_start"):
        OutputConfig(OutputKind.JOINT_TRAJECTORY, time_from_start=0.0)


def test_command_conversion_keeps_nan_for_the_monitor_to_reject():
    msg = JointState()
    msg.header.stamp = STAMP
    msg.name = ["a"]
    msg.position = [math.nan]
    cmd = command_from_msg(msg)
    assert cmd.stamp == 12.5
    assert math.isnan(cmd.positions[0])


def test_status_message_names_status_joints_and_counters():
    d = Decision(Status.CLAMPED, (Cause.VELOCITY_LIMIT,), ("a",), "velocity_limit")
    msg = status_message(d, {"accepted": 3}, {"armed": "True"}, "safety", "panda")
    values = {kv.key: kv.value for kv in msg.values}
    assert values == {
        "status": "CLAMPED",
        "causes": "velocity_limit",
        "joints": "a",
        "armed": "True",
        "accepted": "3",
    }
    assert msg.message.startswith("CLAMPED")
