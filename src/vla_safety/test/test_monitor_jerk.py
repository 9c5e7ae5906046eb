"""Jerk limits: enforced one-sidedly on the motion sent, never at the cost of a stop or hold; no jerk, no change.

The bound: on every output step, every joint with a ``max_jerk`` that is still moving after the step has raised
its acceleration in its direction of motion by at most ``max_jerk * dt`` (``dt``: the time credited to the step,
as for velocity and acceleration). Braking harder and stopping are never jerk-limited.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from factories import HOME, JOINTS, LIMITS, Rig
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from no_jerk_trace import digest, run, streams
from vla_safety.adapters import status_message
from vla_safety.limits import JointLimits
from vla_safety.monitor import Cause, Status

JERK_LIMITS = {
    "j1": JointLimits(
        "j1", -2.0, 2.0, max_velocity=1.0, max_acceleration=10.0, max_jerk=100.0, position_margin=0.1
    ),
    # jerk without an acceleration limit
    "j2": JointLimits("j2", -1.0, 1.0, max_velocity=2.0, max_jerk=400.0),
    "grip": JointLimits("grip", 0.0, 0.04, max_velocity=0.2),  # neither
}
MAX_STEP_DT = 0.1
TRACE = Path(__file__).parent / "data" / "no_jerk_trace.json"


def ramp(rig: Rig, steps: int, lead: float = 0.2, dt: float = 0.02) -> list:
    """Command j1 ``lead`` ahead of the robot every ``dt``; the robot follows. Returns the decisions."""
    out = []
    for _ in range(steps):
        rig.advance(dt)
        d = rig.send((rig.pose[0] + lead, 0.0, 0.02))
        assert d.positions is not None, d
        rig.pose = list(d.positions)
        out.append(d)
    return out


def kinematics(positions: list[float], dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Velocities and accelerations of a position sequence that starts at rest."""
    v = np.diff(positions) / dt
    return v, np.diff(np.concatenate([[0.0], v])) / dt


# --- examples ------------------------------------------------------------------------------------------------


def test_acceleration_ramps_up_at_the_jerk_limit_then_the_acceleration_limit_takes_over():
    rig = Rig(limits=JERK_LIMITS)
    assert rig.send(HOME).status is Status.OK
    decisions = ramp(rig, 8)
    _, a = kinematics([0.0, *(d.positions[0] for d in decisions)], 0.02)
    # 100 rad/s^3 * 0.02 s = 2 rad/s^2 more per step, until the 10 rad/s^2 acceleration limit, then the
    # 1 rad/s velocity limit.
    assert a == pytest.approx([2.0, 4.0, 6.0, 8.0, 10.0, 10.0, 10.0, 0.0], abs=1e-6)
    causes = [d.causes for d in decisions]
    assert causes[:4] == [(Cause.JERK_LIMIT,)] * 4, causes  # (the fifth is a tie with the acceleration limit)
    assert causes[5:] == [(Cause.ACCELERATION_LIMIT,)] * 2 + [(Cause.VELOCITY_LIMIT,)], causes
    assert decisions[0].status is Status.CLAMPED and decisions[0].joints == ("j1",)


def test_jerk_interventions_are_counted_as_clamps_and_reported_as_a_cause():
    rig = Rig(limits=JERK_LIMITS)
    assert rig.send(HOME).status is Status.OK
    before = rig.monitor.counters.clamped
    decisions = ramp(rig, 3)
    assert rig.monitor.counters.clamped == before + 3
    status = status_message(decisions[-1], rig.monitor.counters.as_dict(), {}, "safety", "test")
    values = {kv.key: kv.value for kv in status.values}
    assert values["status"] == "CLAMPED"
    assert values["causes"] == "jerk_limit"
    assert values["joints"] == "j1"
    assert values["clamped"] == str(before + 3)


def test_stopping_is_never_jerk_limited():
    rig = Rig(limits=JERK_LIMITS)
    assert rig.send(HOME).status is Status.OK
    x = ramp(rig, 10)[-1].positions[0]
    rig.advance(0.02)
    d = rig.send((x, 0.0, 0.02))  # stop here, now: from 10 rad/s^2 of acceleration
    assert d.status is Status.OK
    assert d.positions[0] == x


def test_easing_off_a_hard_braking_is_jerk_limited_so_the_joint_stops_short():
    rig = Rig(limits=JERK_LIMITS)
    assert rig.send(HOME).status is Status.OK
    x = ramp(rig, 12)[-1].positions[0]  # about 0.84 rad/s
    rig.advance(0.02)
    braked = rig.send((x + 0.004, 0.0, 0.02)).positions[0]  # brake to 0.2 rad/s: 32 rad/s^2, never limited
    rig.pose[0] = braked
    rig.advance(0.02)
    d = rig.send((braked + 0.004, 0.0, 0.02))  # cruise at 0.2 rad/s: acceleration 32 -> 0 in one step
    assert d.causes == (Cause.JERK_LIMIT,)
    assert 0.0 <= d.positions[0] - braked < 0.004  # keeps braking (at most 2 rad/s^2 less), never further


def test_a_jerk_limited_command_never_breaks_the_other_limits():
    rig = Rig(limits=JERK_LIMITS)
    assert rig.send(HOME).status is Status.OK
    decisions = ramp(rig, 150, lead=5.0)  # far beyond the position limit and the tracking tolerance
    x = [0.0, *(d.positions[0] for d in decisions)]
    v, _ = kinematics(x, 0.02)
    assert max(x) <= JERK_LIMITS["j1"].upper + 1e-12
    assert np.abs(v).max() <= 1.0 + 1e-9
    assert x[-1] == pytest.approx(JERK_LIMITS["j1"].upper)  # at the limit, and stopped there
    causes = {c for d in decisions for c in d.causes}
    assert {Cause.JERK_LIMIT, Cause.TRACKING_LIMIT, Cause.POSITION_LIMIT} <= causes


def test_hold_still_decelerates_to_rest_with_jerk_limits():
    rig = Rig(limits=JERK_LIMITS)
    assert rig.send(HOME).status is Status.OK
    x = ramp(rig, 10)[-1].positions[0]
    outputs = [x]
    rig.advance(0.26)  # past the command timeout
    for _ in range(40):
        d = rig.tick()
        assert d.status is Status.HOLD and d.causes == (Cause.COMMAND_TIMEOUT,)
        outputs.append(d.positions[0])
        rig.advance(0.02)
    steps = np.diff(outputs)
    assert (steps >= -1e-12).all() and (np.diff(steps[1:]) <= 1e-12).all()  # direction kept, never faster
    assert steps[-1] == 0.0  # at rest
    assert rig.monitor.counters.hold_events == 1


def test_hold_after_a_hard_braking_keeps_braking_at_least_that_hard():
    """The policy brakes at 20 rad/s^2 (braking is never limited), then falls silent: the hold may ease off
    that braking only at the jerk limit, so it stops sooner than the acceleration-limited ramp would."""
    rig = Rig(limits=JERK_LIMITS, command_timeout=0.015)
    assert rig.send(HOME).status is Status.OK
    outputs = [0.0, *(d.positions[0] for d in ramp(rig, 12))]  # at the 1 rad/s velocity limit
    rig.advance(0.02)
    d = rig.send((outputs[-1] + 0.6 * 0.02, 0.0, 0.02))  # brake to 0.6 rad/s in one step
    assert d.status is Status.OK
    outputs.append(d.positions[0])
    rig.pose = list(d.positions)
    for _ in range(4):
        rig.advance(0.02)
        d = rig.tick()
        assert d.status is Status.HOLD and d.causes == (Cause.COMMAND_TIMEOUT,)
        outputs.append(d.positions[0])
    v, a = kinematics(outputs, 0.02)
    assert v[11:13] == pytest.approx([1.0, 0.6])
    assert a[12] == pytest.approx(-20.0)
    # The hold alone would brake at 10 rad/s^2 (0.6 -> 0.4 -> 0.2 -> 0); easing off -20 by at most
    # 100 rad/s^3 * 0.02 s = 2 rad/s^2 gives 0.6 -> 0.24 -> 0 instead.
    assert v[13:] == pytest.approx([0.24, 0.0, 0.0, 0.0])
    assert a[13] == pytest.approx(-18.0)


# --- a profile without jerk limits behaves exactly as before ----------------------------------------------


def test_profile_without_jerk_limits_decides_exactly_as_before():
    """Replays the streams recorded with the monitor before jerk enforcement (see no_jerk_trace.py)."""
    recorded = json.loads(TRACE.read_text())
    for name, (joints, limits) in streams().items():
        assert all(lim.max_jerk is None for lim in limits.values())
        for key in [k for k in recorded if k.startswith(f"{name}/")]:
            trace = run(joints, limits, int(key.split("/")[1]))
            expected = recorded[key]
            assert len(trace) == len(expected), key
            for i, (entry, want) in enumerate(zip(trace[:-1], expected[:-1], strict=True)):
                assert digest(entry) == want, f"{key}: decision {i} differs from the recording: {entry}"
            assert trace[-1] == expected[-1], key  # counters


def test_limits_without_jerk_never_report_a_jerk_limit():
    assert all(lim.max_jerk is None for lim in LIMITS.values())
    for name, (joints, limits) in streams().items():
        trace = run(joints, limits, 7)
        assert not any("jerk_limit" in entry[1] for entry in trace[:-1]), name


# --- properties ---------------------------------------------------------------------------------------------

LOWER = np.array([JERK_LIMITS[n].lower for n in JOINTS])
UPPER = np.array([JERK_LIMITS[n].upper for n in JOINTS])
VMAX = np.array([JERK_LIMITS[n].max_velocity for n in JOINTS])
AMAX = np.array([math.inf if (a := JERK_LIMITS[n].max_acceleration) is None else a for n in JOINTS])
JMAX = np.array([math.inf if (j := JERK_LIMITS[n].max_jerk) is None else j for n in JOINTS])
SPAN = UPPER - LOWER

KINDS = (
    ["near"] * 6 + ["push"] * 3 + ["run", "run_then_pause", "pause", "pause", "tick", "stop", "raw", "nan"]
)
KINDS += ["skip_heartbeat", "estop", "reset", "freeze_state"]
step_event = st.tuples(
    st.sampled_from(KINDS),
    st.one_of(
        st.sampled_from([0.0, 0.001, 0.01, 0.02, 0.02, 0.05, 0.12]), st.floats(min_value=0.0, max_value=0.3)
    ),
    st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=3, max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.lists(st.floats(min_value=0.05, max_value=0.95), min_size=3, max_size=3),
    events=st.lists(step_event, min_size=1, max_size=60),
)
def test_jerk_bound_and_all_other_limits_hold_on_every_output_step(start, events):
    """Random command streams, holds, e-stops and resets. Velocity and acceleration are those of the outputs
    over the time credited to each step (time since the previous output, capped at max_step_dt; the first step
    after arming is credited max_step_dt from rest). A step credited no time (up to 1 ns) must not move."""
    pose = LOWER + np.array(start) * SPAN
    rig = Rig(pose=pose.tolist(), limits=JERK_LIMITS, command_timeout=0.03)  # holds start while moving
    x, t_out = pose.copy(), rig.t
    v, a = np.zeros(3), np.zeros(3)
    fresh = accel_record_exact = True
    events = [("near", 0.02, [0.0, 0.0, 0.0]), *events]
    for kind, dt, vals in events:
        rig.advance(dt, heartbeat=kind != "skip_heartbeat")
        decisions = []  # (decision, when it was made, whether an e-stop or fault was latched then)

        def record(d, decisions=decisions):
            decisions.append((d, rig.t, rig.monitor.estop_latched or rig.monitor.fault_latched))
            if d.positions is not None:
                rig.pose = list(d.positions)  # the robot follows its commands

        if kind == "freeze_state" and rig.state_received is None:
            rig.state_received = rig.t
        if kind in ("near", "freeze_state", "skip_heartbeat"):
            record(rig.send((x + 0.05 * np.array(vals) * SPAN).tolist()))
        elif kind == "push":
            record(rig.send((x + np.copysign(0.6, vals[0]) * SPAN).tolist()))
        elif kind == "stop":
            record(rig.send(x.tolist()))
        elif kind == "raw":
            record(rig.send((LOWER + (np.array(vals) + 1.0) / 2.0 * SPAN).tolist()))
        elif kind == "nan":
            record(rig.send([math.nan, *x[1:].tolist()]))
        elif kind == "estop":
            record(rig.monitor.engage_estop(rig.t, "property"))
        elif kind == "reset":
            rig.state_received = None
            d = rig.monitor.reset(rig.state(), rig.t)
            if d.status is Status.OK:
                fresh, v, a, accel_record_exact = True, np.zeros(3), np.zeros(3), True
            record(d)
        elif kind == "tick":
            record(rig.tick())
        elif kind in ("run", "run_then_pause"):  # speed up: a command every 10 ms, far ahead per joint
            for _ in range(int(abs(vals[1]) * 20) + 5):
                rig.advance(0.01)
                record(rig.send((np.array(rig.pose) + np.sign(vals) * 0.3 * SPAN).tolist()))
        if kind in ("pause", "run_then_pause"):  # silence: the hold ramp, one tick per 20 ms
            for _ in range(int(vals[0] * 10) + 15):
                rig.advance(0.02)
                record(rig.tick())
        for d, t, latched in decisions:
            if d.positions is None or latched:
                continue  # nothing sent, or an e-stop/fault hold (frozen at once; a reset starts afresh)
            out = np.array(d.positions)
            credit = MAX_STEP_DT if fresh else min(t - t_out, MAX_STEP_DT)
            step = out - x
            assert np.isfinite(out).all(), d
            assert (out >= np.minimum(LOWER, x) - 1e-12).all() and (out <= np.maximum(UPPER, x) + 1e-12).all()
            if credit <= 1e-9:  # no time credited (the monitor's threshold): no motion, and no new kinematics
                assert (np.abs(step) <= VMAX * credit + 1e-15).all(), (d, x)
                x, t_out, fresh = out, t, False
                continue
            v_new = step / credit
            a_new = (v_new - v) / credit
            # The output is rounded to a float (|x| <= 2: an ulp <= 4.5e-16), so a step's velocity is exact only
            # to ulp/dt and its acceleration to ulp/dt^2: that matters at (sub)microsecond steps.
            v_tol, a_tol = 1e-12 + 1e-15 / credit, 1e-9 * (1.0 + np.abs(a)) + 1e-15 / credit**2
            assert (np.abs(v_new) <= VMAX + v_tol).all(), (d, v_new)
            moving = step != 0.0
            sign = np.sign(v_new)
            # Acceleration: speed along the motion rises by at most max_acceleration*dt (braking is free). Checked
            # where the acceleration limit's own velocity record is the motion sent: it counts a joint the hold
            # clipped at a limit as at rest (a step credited no time leaves the record as it was).
            if accel_record_exact:
                along_v = np.where(moving, sign * v_new - np.maximum(sign * v + AMAX * credit, 0.0), 0.0)
                assert (along_v <= v_tol).all(), (d, v, v_new, credit)
            clipped = moving & ((out == LOWER) | (out == UPPER))
            accel_record_exact = not (d.status is Status.HOLD and clipped.any())
            # Jerk: acceleration along the motion rises by at most max_jerk*dt (braking, stopping are free).
            along_a = np.where(moving & np.isfinite(JMAX), sign * (a_new - a) - JMAX * credit, 0.0)
            assert (along_a <= a_tol).all(), (d, a, a_new, credit)
            if Cause.JERK_LIMIT in d.causes:
                event("jerk-limited command")
            if d.status is Status.HOLD and moving.any():
                event("hold ramp step")
            x, v, a, t_out, fresh = out, v_new, a_new, t, False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["near", "near", "push", "stop", "tick", "pause"]),
            st.floats(min_value=0.001, max_value=0.2),
            st.floats(min_value=-1.0, max_value=1.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_jerk_limit_that_never_binds_changes_nothing(events):
    """The jerk code path is inert unless it binds: a huge jerk limit decides exactly like none."""
    huge = {n: JointLimits(**{**lim.__dict__, "max_jerk": 1e15}) for n, lim in LIMITS.items()}
    rigs = [Rig(limits=LIMITS), Rig(limits=huge)]
    for kind, dt, val in events:
        results = []
        for rig in rigs:
            rig.advance(dt)
            x = np.array(rig.pose)
            if kind == "near":
                ds = [rig.send((x + np.array([0.05, -0.03, 0.0]) * val).tolist())]
            elif kind == "push":
                ds = [rig.send((x + np.array([val, val, 0.01])).tolist())]
            elif kind == "stop":
                ds = [rig.send(x.tolist())]
            elif kind == "tick":
                ds = [rig.tick()]
            else:
                ds = []
                for _ in range(15):
                    rig.advance(0.02)
                    ds.append(rig.tick())
            for d in ds:
                if d.positions is not None:
                    rig.pose = list(d.positions)
            results.append([(d.status, d.causes, d.joints, d.positions) for d in ds])
        assert results[0] == results[1]
