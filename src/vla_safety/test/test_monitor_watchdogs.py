"""Watchdogs on the monotonic clock, the latched e-stop, resets, counters."""

import math

import numpy as np
import pytest
from factories import HOME, Rig, command, state
from vla_safety.monitor import Cause, Status


def moving_rig() -> tuple[Rig, float]:
    """A rig whose j1 is moving at about 0.5 rad/s, its pose following the output."""
    rig = Rig()
    x = 0.0
    for _ in range(10):
        rig.advance(0.02)
        d = rig.send((x + 0.01, 0.0, 0.02))
        assert d.positions is not None
        x = d.positions[0]
        rig.pose = list(d.positions)
    return rig, x


def test_command_timeout_decelerates_to_a_hold_and_never_repeats_the_target():
    rig, x = moving_rig()
    rig.advance(0.1)
    assert rig.tick().status is not Status.HOLD  # within the 0.25 s timeout
    outputs = []
    for _ in range(30):
        rig.advance(0.02)
        d = rig.tick()
        if d.status is Status.HOLD:
            assert d.causes == (Cause.COMMAND_TIMEOUT,)
            assert d.positions is not None
            outputs.append(d.positions[0])
    assert outputs, "no hold output"
    steps = np.diff([x, *outputs])
    assert (steps >= -1e-12).all()  # keeps the direction while braking
    assert (np.diff(steps) <= 1e-12).all()  # speed never grows
    assert steps[-1] == pytest.approx(0.0)  # at rest, holding
    assert outputs[-1] - x < 0.05  # stopped within the braking distance, not at some old target
    assert rig.monitor.counters.hold_events == 1


def test_commands_resume_after_a_timeout_hold():
    rig, _ = moving_rig()
    rig.advance(0.3)
    assert rig.tick().status is Status.HOLD
    rig.advance(0.02)
    assert rig.send(rig.pose).status in (Status.OK, Status.CLAMPED)


def test_silent_once_at_rest_when_not_publishing_while_holding():
    rig = Rig(publish_while_holding=False)
    assert rig.send(HOME).status is Status.OK
    rig.advance(0.3)
    d = rig.tick()
    assert d.status is Status.HOLD
    assert d.positions is None  # nothing was moving: nothing to send


def test_stale_joint_states_latch_a_fault_and_hold():
    rig = Rig()
    d = rig.send((0.05, 0.0, 0.02))
    rig.state_received = rig.t
    rig.advance(0.3)
    d = rig.tick()
    assert d.status is Status.FAULT
    assert d.causes == (Cause.STATE_STALE,)
    assert d.positions == (0.05, 0.0, 0.02)  # holds the last safe command
    rig.state_received = None
    rig.advance(0.02)
    assert rig.send((0.05, 0.0, 0.02)).status is Status.FAULT  # latched even though the state is fresh again
    assert rig.monitor.reset(rig.state(), rig.t).status is Status.OK


def test_joint_states_with_nan_latch_a_fault():
    rig = Rig()
    d = rig.monitor.check(command(HOME, rig.t), state((math.nan, 0.0, 0.02), rig.t), rig.t)
    assert d.status is Status.FAULT
    assert d.causes == (Cause.STATE_INVALID,)
    assert d.joints == ("j1",)


def test_joint_states_missing_a_commanded_joint_latch_a_fault():
    rig = Rig()
    d = rig.monitor.tick(state((0.0, 0.0), rig.t, names=("j1", "j2")), rig.t)
    assert d.status is Status.FAULT
    assert d.joints == ("grip",)


def test_no_joint_states_at_all_is_a_fault():
    rig = Rig()
    d = rig.monitor.tick(None, rig.t)
    assert d.causes == (Cause.STATE_MISSING,)


def test_lost_heartbeat_holds_and_recovers():
    rig, _ = moving_rig()
    rig.advance(0.3, heartbeat=False)
    rig.advance(0.3, heartbeat=False)
    d = rig.send(rig.pose)
    assert d.status is Status.HOLD
    assert d.causes == (Cause.HEARTBEAT_LOST,)
    assert d.positions is None
    assert rig.monitor.counters.dropped_hold == 1
    assert rig.tick().causes == (Cause.HEARTBEAT_LOST,)
    rig.advance(0.02)  # heartbeat back
    assert rig.send(rig.pose).status in (Status.OK, Status.CLAMPED)


def test_no_heartbeat_ever_means_hold():
    rig = Rig()
    rig.monitor._last_heartbeat = None  # a policy that never announced itself
    assert rig.send(HOME).causes == (Cause.HEARTBEAT_LOST,)


def test_heartbeat_watchdog_can_be_disabled():
    rig = Rig(heartbeat_timeout=0.0)
    rig.advance(0.2, heartbeat=False)
    rig.advance(0.2, heartbeat=False)
    assert rig.send(HOME).status is Status.OK


def test_estop_latches_drops_and_counts_until_reset():
    rig = Rig()
    assert rig.send((0.05, 0.0, 0.02)).status is Status.OK
    d = rig.monitor.engage_estop(rig.t, "test")
    assert d.status is Status.ESTOP
    assert d.positions == (0.05, 0.0, 0.02)  # hold the last safe command at once
    for _ in range(3):
        rig.advance(0.02)
        assert rig.send((0.06, 0.0, 0.02)).status is Status.ESTOP
        assert rig.tick().positions == (0.05, 0.0, 0.02)
    assert rig.monitor.counters.dropped_estop == 3
    assert rig.monitor.estop_latched
    rig.advance(1.0)
    assert rig.tick().status is Status.ESTOP  # time alone never clears it


def test_reset_rearms_without_moving():
    rig = Rig()
    assert rig.send((0.05, 0.0, 0.02)).status is Status.OK
    rig.monitor.engage_estop(rig.t, "test")
    rig.pose = [0.05, 0.0, 0.02]
    rig.advance(0.02)
    d = rig.monitor.reset(rig.state(), rig.t)
    assert d.status is Status.OK
    assert d.positions is None  # a reset sends nothing
    assert not rig.monitor.estop_latched
    assert rig.tick().positions is None  # and nothing is sent until the next command
    assert rig.monitor.counters.resets == 2  # the rig's arming + this one


def test_reset_refused_while_joint_states_are_stale():
    rig = Rig()
    rig.monitor.engage_estop(rig.t, "test")
    rig.state_received = rig.t
    rig.advance(1.0)
    d = rig.monitor.reset(rig.state(), rig.t)
    assert d.status is Status.FAULT
    assert rig.monitor.estop_latched


def test_reset_refused_far_outside_limits():
    rig = Rig()
    rig.monitor.engage_estop(rig.t, "test")
    rig.pose = [3.0, 0.0, 0.02]
    d = rig.monitor.reset(rig.state(), rig.t)
    assert d.causes == (Cause.FAR_OUTSIDE,)
    assert rig.monitor.estop_latched


def test_automatic_arming_never_clears_a_latched_estop():
    from factories import LIMITS, config
    from vla_safety.monitor import SafetyMonitor

    monitor = SafetyMonitor(LIMITS, config())
    monitor.engage_estop(1.0, "before the first /joint_states")
    d = monitor.arm(state(HOME, 1.0), 1.0)
    assert d.status is Status.ESTOP
    assert not monitor.armed and monitor.estop_latched
    assert monitor.reset(state(HOME, 1.0), 1.0).status is Status.OK
    assert monitor.armed and not monitor.estop_latched


def test_one_state_sample_checked_once_is_still_judged_stale_later():
    """The monitor validates a /joint_states sample once and reuses its positions: its age is re-checked."""
    rig = Rig()
    sample = state(HOME, rig.t)
    assert rig.monitor.check(command(HOME, rig.t), sample, rig.t).status is Status.OK
    rig.advance(0.02)
    d = rig.monitor.check(command((0.001, 0.0, 0.02), rig.t), sample, rig.t)  # same sample, still fresh
    assert d.status in (Status.OK, Status.CLAMPED) and d.positions is not None
    rig.advance(0.3)  # the same sample is now older than state_timeout (0.25 s)
    d = rig.monitor.check(command((0.002, 0.0, 0.02), rig.t), sample, rig.t)
    assert d.status is Status.FAULT
    assert d.causes == (Cause.STATE_STALE,)
