"""Position, velocity, step and acceleration limits, start pose, far-outside fault; limits frozen while armed."""

import numpy as np
import pytest
from factories import LIMITS, Rig, command
from vla_safety.limits import JointLimits, LimitsError
from vla_safety.monitor import Cause, Decision, Status

NO_ACCEL = {
    n: JointLimits(n, lim.min_position, lim.max_position, lim.max_velocity) for n, lim in LIMITS.items()
}


def test_clamps_to_the_position_limit_minus_margin():
    rig = Rig(pose=(1.85, 0.0, 0.02))
    d = rig.send((1.95, 0.0, 0.02))
    assert d.status is Status.CLAMPED
    assert Cause.POSITION_LIMIT in d.causes
    assert d.joints == ("j1",)
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(1.9)


def test_from_outside_the_limit_only_inward_motion_is_allowed():
    rig = Rig(pose=(1.95, 0.0, 0.02))  # inside the hard limit (2.0), outside the margin (1.9)
    d = rig.send((1.97, 0.0, 0.02))
    assert d.status is Status.CLAMPED
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(1.95)  # no further out
    rig.advance(0.05)
    d = rig.send((1.94, 0.0, 0.02))
    assert d.status is Status.OK
    assert d.positions[0] == pytest.approx(1.94)  # inward is fine


def test_far_outside_the_limits_latches_a_fault():
    rig = Rig(pose=(1.85, 0.0, 0.02))
    assert rig.send((1.85, 0.0, 0.02)).status is Status.OK
    rig.pose = [2.25, 0.0, 0.02]  # measured beyond 2.2: 5% of the 4 rad range past the hard limit 2.0
    rig.advance(0.02)
    d = rig.send((1.85, 0.0, 0.02))
    assert d.status is Status.FAULT
    assert d.causes == (Cause.FAR_OUTSIDE,)
    assert d.joints == ("j1",)
    assert rig.monitor.fault_latched
    rig.advance(0.02)
    assert rig.send((2.0, 0.0, 0.02)).status is Status.FAULT
    assert rig.monitor.counters.dropped_fault == 1


def test_velocity_limit_scales_the_whole_step_keeping_its_direction():
    rig = Rig(limits=NO_ACCEL)
    assert rig.send((0.0, 0.0, 0.02)).status is Status.OK
    rig.advance(0.02)
    d = rig.send((0.1, 0.1, 0.02))  # j1 may move 1.0 * 0.02 = 0.02 rad: the step is scaled by 0.2
    assert d.status is Status.CLAMPED
    assert d.causes == (Cause.VELOCITY_LIMIT,)
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.02)
    assert d.positions[1] == pytest.approx(0.02)  # j2's own limit (0.04) is not binding: same direction kept
    assert set(d.joints) == {"j1", "j2"}


def test_step_cap_bounds_a_step_after_a_gap():
    rig = Rig(limits=NO_ACCEL)
    assert rig.send((0.0, 0.0, 0.02)).status is Status.OK
    rig.advance(0.2)  # longer than max_step_dt (0.1 s), shorter than the command timeout
    d = rig.send((0.2, 0.0, 0.02))
    assert d.causes == (Cause.STEP_LIMIT,)
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.1)  # 1.0 rad/s * 0.1 s, not * 0.2 s


def test_acceleration_limited_against_the_previous_command():
    rig = Rig()
    assert rig.send((0.0, 0.0, 0.02)).status is Status.OK
    rig.advance(0.02)
    d = rig.send((0.02, 0.0, 0.02))  # from rest, j1 may reach 10 rad/s^2 * 0.02 s = 0.2 rad/s: 0.004 rad
    assert d.causes == (Cause.ACCELERATION_LIMIT,)
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.004)
    rig.advance(0.02)
    d = rig.send((0.04, 0.0, 0.02))  # now up to 0.4 rad/s: 0.008 rad further
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.012)


def test_braking_is_never_limited():
    rig = Rig(velocity_scale=1.0)
    x = 0.0
    for _ in range(10):  # ramp up to speed
        rig.advance(0.02)
        d = rig.send((x + 0.02, 0.0, 0.02))
        assert d.positions is not None
        x = d.positions[0]
    rig.advance(0.02)
    d = rig.send((x, 0.0, 0.02))  # stop now: allowed even though it exceeds the deceleration limit
    assert d.status is Status.OK
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(x)


def test_velocity_scale_slows_every_joint():
    rig = Rig(limits=NO_ACCEL, velocity_scale=0.5)
    assert rig.send((0.0, 0.0, 0.02)).status is Status.OK
    rig.advance(0.02)
    d = rig.send((0.1, 0.0, 0.02))
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.01)


def test_start_pose_check_applies_after_every_reset():
    rig = Rig()
    assert rig.send((0.05, 0.0, 0.02)).status is Status.OK
    rig.monitor.engage_estop(rig.t, "test")
    rig.advance(0.02)
    assert rig.monitor.reset(rig.state(), rig.t).status is Status.OK
    d = rig.send((0.5, 0.0, 0.02))
    assert d.causes == (Cause.START_POSE,)


def test_limits_cannot_change_while_armed():
    rig = Rig()
    with pytest.raises(LimitsError, match="while the monitor is armed"):
        rig.monitor.set_limits(NO_ACCEL)
    rig.monitor.disarm()
    rig.monitor.set_limits(NO_ACCEL)
    assert rig.monitor.limits["j1"].max_acceleration is None


def test_output_never_aliases_internal_state():
    rig = Rig()
    d = rig.send((0.05, 0.0, 0.02))
    assert isinstance(d.positions, tuple)
    assert np.isfinite(d.positions).all()


def test_command_cannot_run_away_from_a_blocked_robot():
    rig = Rig(limits=NO_ACCEL)  # the robot never follows: rig.pose stays at home (blocked by contact)
    x = 0.0
    for _ in range(40):
        rig.advance(0.05)
        d = rig.send((x + 0.05, 0.0, 0.02))
        assert d.positions is not None
        x = d.positions[0]
    assert x == pytest.approx(0.25)  # 0.25 s of travel at 1 rad/s from the measured 0.0, and no further
    assert Cause.TRACKING_LIMIT in d.causes
    rig.advance(0.05)
    d = rig.send((x - 0.05, 0.0, 0.02))  # backing off is always allowed
    assert d.status is Status.OK


def test_tracking_limit_can_be_disabled():
    rig = Rig(limits=NO_ACCEL, max_tracking_error=0.0)
    x = 0.0
    for _ in range(20):
        rig.advance(0.05)
        d = rig.send((x + 0.05, 0.0, 0.02))
        x = d.positions[0]
    assert x == pytest.approx(1.0)


def test_motion_limits_follow_the_robot_clock_under_sim_time():
    """A sim running at half real time: 20 ms of wall time is 10 ms of robot time, so half the step."""
    rig = Rig(limits=NO_ACCEL)
    sim = 50.0
    m = rig.monitor
    assert m.check(command((0.0, 0.0, 0.02), rig.t), rig.state(), rig.t, motion_now=sim).status is Status.OK
    rig.advance(0.02)
    sim += 0.01
    d = m.check(command((0.1, 0.0, 0.02), rig.t), rig.state(), rig.t, motion_now=sim)
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.01)  # 1 rad/s * 10 ms of sim time, not 20 ms of wall time
    rig.advance(0.02)
    d = m.check(command((0.1, 0.0, 0.02), rig.t), rig.state(), rig.t, motion_now=sim)  # sim paused
    assert d.positions is not None
    assert d.positions[0] == pytest.approx(0.01)  # no robot time passed: no motion


def test_a_paused_sim_clock_keeps_the_velocity_the_acceleration_limit_judges_against():
    """A step credited no robot time moves nothing and leaves the velocity record alone: after the pause, a
    joint moving at 0.4 rad/s may brake to rest but not reverse (that would take more than max_acceleration)."""
    rig = Rig()
    m = rig.monitor
    sim = 50.0

    def send(j1: float) -> Decision:
        rig.advance(0.02)
        d = m.check(command((j1, 0.0, 0.02), rig.t), rig.state(), rig.t, motion_now=sim)
        assert d.positions is not None, d
        return d

    assert send(0.0).status is Status.OK
    for _ in range(2):  # accelerate j1 at the limit: 0.2 then 0.4 rad/s
        sim += 0.02
        x = send(1.0).positions[0]
    assert x == pytest.approx(0.004 + 0.008)
    assert send(1.0).positions[0] == x  # the sim clock paused: no robot time, no motion
    sim += 0.02
    d = send(-1.0)  # reverse: from 0.4 rad/s, 20 ms at 10 rad/s^2 only brakes to rest
    assert d.positions[0] >= x - 1e-12, "reversed faster than max_acceleration allows"
    assert Cause.ACCELERATION_LIMIT in d.causes
