"""Every bad input, one named test each: rejected (never repaired), and the next good command still works."""

import math

import pytest
from factories import HOME, JOINTS, LIMITS, Rig, command, config, state
from vla_safety.monitor import Cause, SafetyMonitor, Status


def rejected(decision, cause):
    assert decision.status is Status.REJECTED, decision
    assert decision.causes == (cause,)
    assert decision.positions is None
    return decision


def test_good_command_passes_unchanged():
    rig = Rig()
    d = rig.send((0.05, -0.05, 0.02))
    assert d.status is Status.OK
    assert d.positions == (0.05, -0.05, 0.02)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_position_without_clamping(bad):
    rig = Rig()
    d = rejected(rig.send((bad, 0.0, 0.02)), Cause.NON_FINITE)
    assert d.joints == ("j1",)
    assert rig.monitor.counters.rejected == 1
    rig.advance(0.02)
    assert rig.send((0.01, 0.0, 0.02)).status is Status.OK


def test_rejects_nan_in_velocity_field():
    rig = Rig()
    rejected(rig.send(HOME, velocities=[0.0, math.nan, 0.0]), Cause.NON_FINITE)


def test_rejects_inf_in_effort_field():
    rig = Rig()
    rejected(rig.send(HOME, efforts=[math.inf, 0.0, 0.0]), Cause.NON_FINITE)


def test_rejects_effort_beyond_limit():
    rig = Rig()
    d = rejected(rig.send(HOME, efforts=[51.0, 0.0, 0.0]), Cause.EFFORT_LIMIT)
    assert d.joints == ("j1",)


def test_rejects_unknown_joint():
    rig = Rig()
    d = rejected(rig.send((*HOME, 0.0), names=(*JOINTS, "elbow")), Cause.UNKNOWN_JOINT)
    assert d.joints == ("elbow",)


def test_rejects_missing_joint():
    rig = Rig()
    d = rejected(rig.send((0.0, 0.0), names=("j1", "j2")), Cause.MISSING_JOINT)
    assert d.joints == ("grip",)


def test_rejects_duplicate_joint():
    rig = Rig()
    d = rejected(rig.send((0.0, 0.0, 0.0), names=("j1", "j1", "grip")), Cause.DUPLICATE_JOINT)
    assert d.joints == ("j1",)


def test_rejects_position_field_of_wrong_length():
    rig = Rig()
    rejected(rig.send((0.0, 0.0)), Cause.FIELD_LENGTH)


def test_rejects_velocity_field_of_wrong_length():
    rig = Rig()
    rejected(rig.send(HOME, velocities=[0.0]), Cause.FIELD_LENGTH)


def test_matches_joints_by_name_not_order():
    rig = Rig()
    d = rig.send((0.02, 0.05, -0.05), names=("grip", "j1", "j2"))
    assert d.status is Status.OK
    assert d.positions == (0.05, -0.05, 0.02)


def test_rejects_oversized_message():
    rig = Rig(max_joints=4)
    names = [*JOINTS, "a", "b"]
    rejected(rig.send([0.0] * 5, names=names), Cause.TOO_LARGE)


def test_rejects_overlong_joint_name():
    rig = Rig()
    rejected(rig.send((*HOME, 0.0), names=(*JOINTS, "x" * 300)), Cause.TOO_LARGE)


def test_rejects_unstamped_command():
    rig = Rig()
    rejected(rig.send(HOME, stamp=0.0), Cause.UNSTAMPED)


def test_rejects_nan_stamp():
    rig = Rig()
    rejected(rig.send(HOME, stamp=math.nan), Cause.UNSTAMPED)


def test_rejects_old_stamp():
    rig = Rig()
    rejected(rig.send(HOME, stamp=rig.t - 0.6), Cause.STALE_STAMP)


def test_rejects_future_stamp():
    rig = Rig()
    rejected(rig.send(HOME, stamp=rig.t + 0.2), Cause.FUTURE_STAMP)


def test_rejects_backwards_stamp():
    rig = Rig()
    assert rig.send(HOME, stamp=rig.t).status is Status.OK
    rig.advance(0.02)
    rejected(rig.send(HOME, stamp=rig.t - 0.03), Cause.BACKWARDS_STAMP)


def test_rejects_repeated_stamp_as_zero_dt():
    rig = Rig()
    stamp = rig.t
    assert rig.send(HOME, stamp=stamp).status is Status.OK
    rig.advance(0.02)
    rejected(rig.send(HOME, stamp=stamp), Cause.ZERO_DT)


def test_stamps_are_checked_against_the_ros_clock_not_the_monotonic_one():
    """With use_sim_time the ROS clock can be anywhere; only stamps vs ROS time matter."""
    rig = Rig()
    sim_now = 12.5
    d = rig.monitor.check(command(HOME, sim_now - 0.01), rig.state(), rig.t, ros_now=sim_now)
    assert d.status is Status.OK
    rejected(
        rig.monitor.check(command(HOME, rig.t), rig.state(), rig.t + 0.02, ros_now=sim_now),
        Cause.FUTURE_STAMP,
    )


def test_rejects_commands_before_arming():
    monitor = SafetyMonitor(LIMITS, config())
    rejected(monitor.check(command(HOME, 1.0), state(HOME, 1.0), 1.0), Cause.NOT_ARMED)


def test_rejects_first_command_far_from_the_current_pose():
    rig = Rig()
    d = rejected(rig.send((0.5, 0.0, 0.02)), Cause.START_POSE)
    assert d.joints == ("j1",)
    rig.advance(0.02)
    assert (
        rig.send((0.05, 0.0, 0.02)).status is Status.OK
    )  # near the pose: accepted, and now armed for motion
