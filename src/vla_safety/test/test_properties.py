"""Property-based: whatever the input sequence, every output is finite, inside the limits (or, from outside,
no further out), and no step exceeds the velocity limit over the time since the previous output."""

import math

import numpy as np
from factories import JOINTS, LIMITS, Rig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vla_safety.monitor import Status

LOWER = np.array([LIMITS[n].lower for n in JOINTS])
UPPER = np.array([LIMITS[n].upper for n in JOINTS])
VMAX = np.array([LIMITS[n].max_velocity for n in JOINTS])
SPAN = np.array([LIMITS[n].max_position - LIMITS[n].min_position for n in JOINTS])
MAX_STEP_DT = 0.1

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-3.0, max_value=3.0),
    st.floats(min_value=-0.2, max_value=0.2),  # offsets near the current pose, most of them acceptable
)
event = st.tuples(
    st.sampled_from(
        [
            "near",
            "near",
            "push",
            "push",
            "raw",
            "tick",
            "tick",
            "estop",
            "reset",
            "skip_heartbeat",
            "freeze_state",
        ]
    ),
    st.floats(min_value=0.0, max_value=0.4),
    st.lists(values, min_size=3, max_size=3),
    st.floats(min_value=-1.0, max_value=1.0),  # stamp offset
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.lists(st.floats(min_value=-0.02, max_value=0.02), min_size=3, max_size=3),
    events=st.lists(event, min_size=1, max_size=60),
)
def test_outputs_never_violate_limits_and_never_hold_nan(start, events):
    # Start anywhere within the hard range, even inside the margin band (outside the enforced bounds).
    pose = np.clip(np.array([1.95, 0.0, 0.0]) + np.array(start) * SPAN, -1e9, 1e9)
    pose = np.clip(pose, [LIMITS[n].min_position for n in JOINTS], [LIMITS[n].max_position for n in JOINTS])
    rig = Rig(pose=pose.tolist())
    last_out = pose.copy()
    last_out_t = rig.t
    fresh_session = True  # the first output after (re-)arming is credited max_step_dt
    state_frozen = False
    # Start the session with a command at the current pose, so later pushes are not all start-pose rejections.
    events = [("near", 0.02, [0.0, 0.0, 0.0], 0.0), *events]
    for kind, dt, vals, stamp_offset in events:
        rig.advance(dt, heartbeat=kind != "skip_heartbeat")
        if kind == "freeze_state" and not state_frozen:
            rig.state_received, state_frozen = rig.t, True
        if kind == "push":  # drive every joint hard towards (and past) one of its limits
            d = rig.send((last_out + np.copysign(0.5, stamp_offset) * SPAN).tolist())
        elif kind in ("near", "raw"):
            base = last_out if kind == "near" else np.zeros(3)
            target = [b + v if math.isfinite(v) else v for b, v in zip(base.tolist(), vals, strict=True)]
            stamp = rig.t + (0.0 if kind == "near" else stamp_offset)
            d = rig.send(target, stamp=stamp)
        elif kind == "estop":
            d = rig.monitor.engage_estop(rig.t, "property")
        elif kind == "reset":
            rig.state_received, state_frozen = None, False
            d = rig.monitor.reset(rig.state(), rig.t)
            if d.status is Status.OK:
                fresh_session = True
        else:
            d = rig.tick()
        if d.positions is None:
            continue
        out = np.array(d.positions)
        assert np.isfinite(out).all(), d
        allowed_lo = np.minimum(LOWER, last_out) - 1e-12
        allowed_hi = np.maximum(UPPER, last_out) + 1e-12
        assert (out >= allowed_lo).all() and (out <= allowed_hi).all(), (d, last_out)
        credit = MAX_STEP_DT if fresh_session else min(rig.t - last_out_t, MAX_STEP_DT)
        assert (np.abs(out - last_out) <= VMAX * credit + 1e-9).all(), (d, last_out, credit)
        last_out, last_out_t, fresh_session = out, rig.t, False
        rig.pose = out.tolist()  # the robot follows its commands
