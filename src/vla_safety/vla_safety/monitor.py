"""The safety monitor: every policy command passes :meth:`SafetyMonitor.check` before it may reach the robot.

Pure Python (no rclpy). Time is passed in: ``now`` is a monotonic clock reading in seconds (watchdogs,
intervals) and ``ros_now`` the node's ROS clock (stamps, sim time included), so tests control both.

It fails closed. A command that is malformed (non-finite, unknown/missing/duplicate joints, wrong field lengths,
oversized, old/future/backwards stamps) is rejected, never repaired. A valid command is limited in this order:
position (clamped into the limits; from outside only inward motion), then one scale factor on the whole step
vector (velocity, step cap, acceleration, jerk), so the direction of motion is kept. Braking is never limited:
the monitor prefers stopping short of a target to overshooting it. When commands stop, the heartbeat is lost or
``/joint_states`` goes stale, it holds: it decelerates the last safe command to rest and never repeats a stale
policy target. Faults and the e-stop latch until :meth:`SafetyMonitor.reset`.

Jerk (optional ``max_jerk`` per joint) is limited like acceleration, one-sidedly: a joint that keeps moving may
raise its acceleration in its direction of motion by at most ``max_jerk * dt`` per step. Braking harder and
stopping are never jerk-limited (safety wins over smoothness: the monitor never moves further, faster or longer
to keep the jerk down).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from vla_safety.limits import JointLimits, LimitsError, LimitTable, check_armable

FloatArray = npt.NDArray[np.float64]


class Status(enum.Enum):
    """What happened to a command, or what the monitor is doing."""

    OK = 0  # passed unchanged
    CLAMPED = 1  # passed, limited
    REJECTED = 2  # dropped: invalid input; the robot keeps its last safe command
    HOLD = 3  # holding (decelerating to) the last safe command: no command, no heartbeat, not armed
    ESTOP = 4  # e-stop latched: holding, commands dropped until reset
    FAULT = 5  # fault latched (stale/invalid /joint_states, far outside limits): holding until reset


class Cause(enum.Enum):
    """Why a decision is what it is (one or more per decision)."""

    NOT_ARMED = "not_armed"
    TOO_LARGE = "too_large"
    FIELD_LENGTH = "field_length"
    DUPLICATE_JOINT = "duplicate_joint"
    UNKNOWN_JOINT = "unknown_joint"
    MISSING_JOINT = "missing_joint"
    NON_FINITE = "non_finite"
    EFFORT_LIMIT = "effort_limit"
    UNSTAMPED = "unstamped"
    STALE_STAMP = "stale_stamp"
    FUTURE_STAMP = "future_stamp"
    BACKWARDS_STAMP = "backwards_stamp"
    ZERO_DT = "zero_dt"
    START_POSE = "start_pose"
    TRACKING_LIMIT = "tracking_limit"
    POSITION_LIMIT = "position_limit"
    VELOCITY_LIMIT = "velocity_limit"
    STEP_LIMIT = "step_limit"
    ACCELERATION_LIMIT = "acceleration_limit"
    JERK_LIMIT = "jerk_limit"
    COMMAND_TIMEOUT = "command_timeout"
    HEARTBEAT_LOST = "heartbeat_lost"
    STATE_MISSING = "state_missing"
    STATE_STALE = "state_stale"
    STATE_INVALID = "state_invalid"
    FAR_OUTSIDE = "far_outside"
    ESTOP = "estop"
    FAULT_LATCHED = "fault_latched"


@dataclass(frozen=True)
class JointCommand:
    """A policy command as received; deliberately unvalidated (validation is the monitor's job).

    ``stamp`` is the header stamp in seconds of ROS time (0 = unstamped). ``velocities``/``efforts`` may be
    empty; when present they must match ``names`` and be finite (they are checked, not forwarded).
    """

    names: Sequence[str]
    positions: Sequence[float]
    stamp: float
    velocities: Sequence[float] = ()
    efforts: Sequence[float] = ()


@dataclass(frozen=True)
class JointStateSample:
    """The latest ``/joint_states`` as received; ``received`` is the monotonic time of arrival.

    Treated as immutable (its fields included): the monitor validates a sample once and then re-checks only its
    age, so a new reading is a new sample.
    """

    names: Sequence[str]
    positions: Sequence[float]
    received: float


@dataclass(frozen=True)
class Decision:
    """The monitor's answer. ``positions`` (in ``MonitorConfig.joints`` order) is what to send, None = nothing."""

    status: Status
    causes: tuple[Cause, ...] = ()
    joints: tuple[str, ...] = ()
    reason: str = ""
    positions: tuple[float, ...] | None = None


@dataclass
class Counters:
    """Monotone event counts since start (reported on /diagnostics and /safety/state)."""

    received: int = 0
    accepted: int = 0
    clamped: int = 0
    rejected: int = 0
    dropped_estop: int = 0
    dropped_fault: int = 0
    dropped_hold: int = 0
    estops: int = 0
    faults: int = 0
    resets: int = 0
    hold_events: int = 0
    heartbeats: int = 0

    @property
    def limited_fraction(self) -> float:
        """Share of the commands received that were limited (clamped) or refused."""
        return (self.clamped + self.rejected) / max(self.received, 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the monitor enforces besides the limits. Times in seconds.

    ``max_step_dt`` is the step cap: a step is never credited more than this much time, so after a gap a
    command moves at most ``max_velocity * max_step_dt``. ``start_pose_tolerance`` is in seconds of travel at
    each joint's velocity limit (unit-free across revolute and prismatic joints). ``far_outside_fraction`` is
    the distance beyond a hard position limit, as a fraction of the joint's range, that counts as a fault.
    ``heartbeat_timeout`` 0 disables the heartbeat watchdog (only for drivers of tests/experts without one).
    ``max_tracking_error`` (seconds of travel at the velocity limit, 0 disables) keeps the command from running
    away from a robot that does not follow (blocked by contact): no step takes the output further than that
    from the measured position.
    """

    joints: tuple[str, ...]
    command_timeout: float = 0.25
    state_timeout: float = 0.25
    heartbeat_timeout: float = 0.5
    max_command_age: float = 0.5
    max_future: float = 0.1
    max_step_dt: float = 0.1
    velocity_scale: float = 1.0
    start_pose_tolerance: float = 0.2
    far_outside_fraction: float = 0.05
    max_tracking_error: float = 0.25
    max_joints: int = 64
    max_name_length: int = 256
    publish_while_holding: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "joints", tuple(self.joints))
        if not self.joints:
            raise ValueError("MonitorConfig.joints: at least one commanded joint is required")
        if len(set(self.joints)) != len(self.joints):
            raise ValueError(f"MonitorConfig.joints has duplicates: {list(self.joints)}")
        if len(self.joints) > self.max_joints:
            raise ValueError(f"{len(self.joints)} commanded joints exceed max_joints={self.max_joints}")
        for name in ("command_timeout", "state_timeout", "max_command_age", "max_future", "max_step_dt"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"MonitorConfig.{name} must be positive and finite, got {value}")
        if not (math.isfinite(self.heartbeat_timeout) and self.heartbeat_timeout >= 0.0):
            raise ValueError(
                f"MonitorConfig.heartbeat_timeout must be >= 0 (0 disables), got {self.heartbeat_timeout}"
            )
        if not (0.0 < self.velocity_scale <= 1.0):
            raise ValueError(f"MonitorConfig.velocity_scale must be in (0, 1], got {self.velocity_scale}")
        if not (math.isfinite(self.start_pose_tolerance) and self.start_pose_tolerance > 0.0):
            raise ValueError(
                f"MonitorConfig.start_pose_tolerance must be > 0, got {self.start_pose_tolerance}"
            )
        if not (0.0 < self.far_outside_fraction < 1.0):
            raise ValueError(
                f"MonitorConfig.far_outside_fraction must be in (0, 1), got {self.far_outside_fraction}"
            )
        if not (math.isfinite(self.max_tracking_error) and self.max_tracking_error >= 0.0):
            raise ValueError(
                f"MonitorConfig.max_tracking_error must be >= 0 (0 disables), got {self.max_tracking_error}"
            )
        if self.max_joints < 1 or self.max_name_length < 1:
            raise ValueError("MonitorConfig.max_joints and max_name_length must be >= 1")


def _optional(values: Sequence[float | None]) -> FloatArray:
    return np.array([math.inf if v is None else v for v in values], dtype=np.float64)


class SafetyMonitor:
    """Stateful gate between policy commands and the robot. Not thread-safe: call from one thread."""

    def __init__(self, limits: LimitTable, config: MonitorConfig) -> None:
        check_armable(
            limits, config.joints
        )  # refuse to exist without finite limits for every commanded joint
        self.config = config
        self.counters = Counters()
        self._limits: dict[str, JointLimits] = {}
        self._index = {name: i for i, name in enumerate(config.joints)}
        self._armed = False
        self._estop_reason = ""
        self._fault_reason = ""
        self.estop_since: float | None = None  # monotonic time the current e-stop latched
        self._last: Decision = Decision(Status.HOLD, (Cause.NOT_ARMED,), reason="not armed yet")
        self._reset_motion()
        self._last_heartbeat: float | None = None
        # The last /joint_states sample that passed validation, and its positions: a sample is immutable, so
        # the commands that follow it (several per sample at 500 Hz) re-check only its age.
        self._valid_state: tuple[JointStateSample, FloatArray] | None = None
        self.set_limits(limits)

    # --- configuration -----------------------------------------------------------------------------

    def set_limits(self, limits: LimitTable) -> None:
        """Replace the limits; refused while armed (limits must not change under a moving robot)."""
        if self._armed:
            raise LimitsError("limits cannot change while the monitor is armed")
        check_armable(limits, self.config.joints)
        self._limits = {n: limits[n] for n in self.config.joints}
        lims = [self._limits[n] for n in self.config.joints]
        self._lower = np.array([lim.lower for lim in lims])
        self._upper = np.array([lim.upper for lim in lims])
        span = np.array([lim.max_position - lim.min_position for lim in lims])
        self._fault_lower = (
            np.array([lim.min_position for lim in lims]) - self.config.far_outside_fraction * span
        )
        self._fault_upper = (
            np.array([lim.max_position for lim in lims]) + self.config.far_outside_fraction * span
        )
        self._vmax = np.array([lim.max_velocity for lim in lims]) * self.config.velocity_scale
        self._amax = _optional([lim.max_acceleration for lim in lims])
        self._jmax = _optional([lim.max_jerk for lim in lims])
        self._effort_max = _optional([lim.max_effort for lim in lims])
        self._start_tol = np.array([lim.max_velocity for lim in lims]) * self.config.start_pose_tolerance
        tracking = self.config.max_tracking_error
        self._track_tol = np.array([lim.max_velocity for lim in lims]) * (
            tracking if tracking > 0 else np.inf
        )
        self._per_joint: tuple[list[float], ...] = tuple(
            a.tolist()
            for a in (self._lower, self._upper, self._track_tol, self._vmax, self._amax, self._jmax)
        )

    @property
    def limits(self) -> dict[str, JointLimits]:
        return dict(self._limits)

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def estop_latched(self) -> bool:
        return bool(self._estop_reason)

    @property
    def fault_latched(self) -> bool:
        return bool(self._fault_reason)

    @property
    def last_decision(self) -> Decision:
        """The most recent decision that changed what the monitor is doing (for /safety/state)."""
        return self._last

    def _reset_motion(self) -> None:
        n = len(self.config.joints)
        self._last_output: FloatArray | None = None
        self._last_velocity: FloatArray = np.zeros(n)
        # The jerk limit's record of what was actually sent (see _record_motion).
        self._motion_velocity: FloatArray = np.zeros(n)
        self._motion_acceleration: FloatArray = np.zeros(n)
        self._last_output_time = 0.0
        self._last_command_time = 0.0
        self._last_stamp: float | None = None
        self._holding = False

    # --- events ------------------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        self.counters.heartbeats += 1
        self._last_heartbeat = now

    def engage_estop(self, now: float, source: str) -> Decision:
        """Latch the e-stop: hold the last safe command at once (no deceleration ramp). ``now``: monotonic."""
        if not self._estop_reason:
            self.counters.estops += 1
            self.estop_since = now
        self._estop_reason = f"e-stop engaged by {source}"
        self._last_velocity = np.zeros(len(self.config.joints))
        self._stop_motion_record()
        return self._remember(
            Decision(Status.ESTOP, (Cause.ESTOP,), reason=self._estop_reason, positions=self._out())
        )

    def arm(self, state: JointStateSample | None, now: float) -> Decision:
        """Arm if nothing is latched (automatic arming); a latched e-stop or fault needs :meth:`reset`."""
        if self._estop_reason or self._fault_reason:
            status, cause = (
                (Status.ESTOP, Cause.ESTOP) if self._estop_reason else (Status.FAULT, Cause.FAULT_LATCHED)
            )
            return Decision(status, (cause,), reason="not arming: latched, only a reset clears it")
        return self.reset(state, now)

    def reset(self, state: JointStateSample | None, now: float) -> Decision:
        """Arm, or re-arm after an e-stop or fault. Moves nothing: the next command must start near the state.

        Refused (latches kept) while ``/joint_states`` is missing, stale, invalid or far outside the limits.
        """
        positions, problem = self._state_positions(state, now)
        if problem is not None:
            return problem
        if positions is None:  # unreachable: _state_positions returns one of both
            raise RuntimeError("joint state check returned nothing")
        far = self._far_outside(positions)
        if far:
            return Decision(
                Status.FAULT, (Cause.FAR_OUTSIDE,), far, "reset refused: joints far outside limits"
            )
        was = "re-armed" if self._armed else "armed"
        self._estop_reason = ""
        self._fault_reason = ""
        self.estop_since = None
        self._armed = True
        self._reset_motion()
        self._last_command_time = now
        self.counters.resets += 1
        return self._remember(
            Decision(Status.OK, reason=f"{was}; the first command must start near the current pose")
        )

    def disarm(self) -> None:
        """Stop guarding (e.g. before changing limits). Commands are rejected until the next reset/arm."""
        self._armed = False
        self._reset_motion()
        self._last = Decision(Status.HOLD, (Cause.NOT_ARMED,), reason="disarmed")

    # --- the check ---------------------------------------------------------------------------------

    def check(
        self,
        command: JointCommand,
        state: JointStateSample | None,
        now: float,
        ros_now: float | None = None,
        motion_now: float | None = None,
    ) -> Decision:
        """Decide what to send for one policy command.

        ``now``: monotonic (watchdogs). ``ros_now``: the node's ROS clock (stamps). ``motion_now``: the robot's
        clock for velocity/acceleration (sim time under ``use_sim_time``, so limits hold in simulated seconds
        even when the sim runs slower than real time). Both default to ``now``.
        """
        return self._remember(self._check(command, state, now, ros_now, motion_now))

    def _check(
        self,
        command: JointCommand,
        state: JointStateSample | None,
        now: float,
        ros_now: float | None,
        motion_now: float | None,
    ) -> Decision:
        self.counters.received += 1
        if self._estop_reason:
            self.counters.dropped_estop += 1
            return Decision(Status.ESTOP, (Cause.ESTOP,), reason=f"command dropped: {self._estop_reason}")
        if self._fault_reason:
            self.counters.dropped_fault += 1
            return Decision(
                Status.FAULT, (Cause.FAULT_LATCHED,), reason=f"command dropped: {self._fault_reason}"
            )
        if not self._armed:
            self.counters.rejected += 1
            return Decision(
                Status.REJECTED, (Cause.NOT_ARMED,), reason="not armed: waiting for /joint_states or a reset"
            )

        positions, problem = self._state_positions(state, now)
        if problem is not None:
            return problem
        if positions is None:
            raise RuntimeError("joint state check returned nothing")
        far = self._far_outside(positions)
        if far:
            return self._latch_fault(Cause.FAR_OUTSIDE, far, "joints far outside their limits")

        invalid = self._validate(command, now if ros_now is None else ros_now)
        if invalid is not None:
            self.counters.rejected += 1
            return invalid

        if self._heartbeat_lost(now):
            self.counters.dropped_hold += 1  # the tick() watchdog owns the hold output; nothing to send here
            return Decision(
                Status.HOLD, (Cause.HEARTBEAT_LOST,), reason="command dropped: policy heartbeat lost"
            )

        target = self._ordered(command)
        if self._last_output is None:  # first command after arming: it must start near where the robot is
            off = np.abs(target - positions) > self._start_tol
            if off.any():
                self.counters.rejected += 1
                names = self._names(off)
                return Decision(
                    Status.REJECTED,
                    (Cause.START_POSE,),
                    names,
                    f"first command after arming is too far from the current pose at {list(names)} "
                    f"(tolerance {self.config.start_pose_tolerance} s at each joint's velocity limit)",
                )
            self._last_output = positions.copy()
            self._last_velocity = np.zeros(len(target))
            self._stop_motion_record()
            dt = self.config.max_step_dt
        else:
            dt = (now if motion_now is None else motion_now) - self._last_output_time

        out, causes = self._enforce(self._last_output, target, dt, positions)
        self._commit(out, now if motion_now is None else motion_now, dt)
        self._last_stamp = float(command.stamp)
        self._last_command_time = now
        self._holding = False
        self.counters.accepted += 1
        changed = np.abs(out - target) > 1e-12
        if changed.any():
            self.counters.clamped += 1
            decision = Decision(
                Status.CLAMPED,
                causes,
                self._names(changed),
                ", ".join(c.value for c in causes),
                tuple(out.tolist()),
            )
        else:
            decision = Decision(Status.OK, positions=tuple(out.tolist()))
        return self._remember(decision)

    def tick(self, state: JointStateSample | None, now: float, motion_now: float | None = None) -> Decision:
        """Watchdogs, called periodically. Returns the hold command to send while holding, else none.

        ``now`` is monotonic; ``motion_now`` (default ``now``) times the deceleration ramp, as in :meth:`check`.
        """
        motion = now if motion_now is None else motion_now
        if not self._armed:
            return Decision(self._last.status, self._last.causes, self._last.joints, self._last.reason)
        if self._estop_reason or self._fault_reason:
            status, cause = (
                (Status.ESTOP, Cause.ESTOP) if self._estop_reason else (Status.FAULT, Cause.FAULT_LATCHED)
            )
            pos = self._out() if self.config.publish_while_holding else None
            return Decision(status, (cause,), self._last.joints, self._last.reason, pos)
        positions, problem = self._state_positions(state, now)
        if problem is not None:
            return problem
        if positions is not None:
            far = self._far_outside(positions)
            if far:
                return self._latch_fault(Cause.FAR_OUTSIDE, far, "joints far outside their limits")
        if self._heartbeat_lost(now):
            return self._hold(motion, Cause.HEARTBEAT_LOST, "policy heartbeat lost")
        if now - self._last_command_time > self.config.command_timeout:
            return self._hold(
                motion, Cause.COMMAND_TIMEOUT, f"no valid command for {self.config.command_timeout} s"
            )
        return Decision(self._last.status, self._last.causes, self._last.joints, self._last.reason)

    # --- internals ---------------------------------------------------------------------------------

    def _names(self, mask: npt.NDArray[np.bool_]) -> tuple[str, ...]:
        return tuple(n for n, m in zip(self.config.joints, mask.tolist(), strict=True) if m)

    def _out(self) -> tuple[float, ...] | None:
        return None if self._last_output is None else tuple(self._last_output.tolist())

    def _remember(self, decision: Decision) -> Decision:
        self._last = decision
        return decision

    def _latch_fault(self, cause: Cause, joints: tuple[str, ...], what: str) -> Decision:
        if not self._fault_reason:
            self.counters.faults += 1
        self._fault_reason = f"{what}{': ' + ', '.join(joints) if joints else ''}"
        self._last_velocity = np.zeros(len(self.config.joints))
        self._stop_motion_record()
        return self._remember(Decision(Status.FAULT, (cause,), joints, self._fault_reason, self._out()))

    def _heartbeat_lost(self, now: float) -> bool:
        if self.config.heartbeat_timeout <= 0.0:
            return False
        return self._last_heartbeat is None or now - self._last_heartbeat > self.config.heartbeat_timeout

    def _state_positions(
        self, state: JointStateSample | None, now: float
    ) -> tuple[FloatArray | None, Decision | None]:
        """The measured positions of the commanded joints, or the fault decision (latched when armed)."""

        def fault(cause: Cause, joints: tuple[str, ...], what: str) -> tuple[None, Decision]:
            if self._armed:
                return None, self._latch_fault(cause, joints, what)
            return None, Decision(Status.FAULT, (cause,), joints, what)

        if state is None:
            return fault(Cause.STATE_MISSING, (), "no /joint_states received")
        age = now - state.received
        if age > self.config.state_timeout:
            return fault(
                Cause.STATE_STALE, (), f"/joint_states stale ({age:.3f} s > {self.config.state_timeout} s)"
            )
        if self._valid_state is not None and self._valid_state[0] is state:
            return self._valid_state[1], None
        if len(state.names) != len(state.positions) or len(state.names) > 4 * self.config.max_joints:
            return fault(
                Cause.STATE_INVALID, (), "/joint_states has mismatched or oversized name/position fields"
            )
        if len(set(state.names)) != len(state.names):
            return fault(Cause.STATE_INVALID, (), "/joint_states has duplicate joint names")
        lookup = dict(zip(state.names, state.positions, strict=True))
        missing = tuple(n for n in self.config.joints if n not in lookup)
        if missing:
            return fault(Cause.STATE_INVALID, missing, "/joint_states lacks commanded joints")
        try:
            positions = np.array([float(lookup[n]) for n in self.config.joints])
        except (TypeError, ValueError):
            return fault(Cause.STATE_INVALID, (), "/joint_states positions are not numbers")
        bad = ~np.isfinite(positions)
        if bad.any():
            return fault(Cause.STATE_INVALID, self._names(bad), "/joint_states holds non-finite positions")
        positions.flags.writeable = False  # shared by every check against this sample
        self._valid_state = (state, positions)
        return positions, None

    def _far_outside(self, positions: FloatArray) -> tuple[str, ...]:
        return self._names((positions < self._fault_lower) | (positions > self._fault_upper))

    def _validate(self, command: JointCommand, ros_now: float) -> Decision | None:
        """A REJECTED decision for a malformed command, else None. Never repairs anything."""
        cfg = self.config

        def reject(cause: Cause, what: str, joints: Sequence[str] = ()) -> Decision:
            return Decision(Status.REJECTED, (cause,), tuple(joints), what)

        names = command.names
        if len(names) > cfg.max_joints or any(len(n) > cfg.max_name_length for n in names):
            return reject(
                Cause.TOO_LARGE,
                f"command has {len(names)} joints or over-long names (limits {cfg.max_joints}, {cfg.max_name_length})",
            )
        n = len(names)
        for label, values in (
            ("position", command.positions),
            ("velocity", command.velocities),
            ("effort", command.efforts),
        ):
            if len(values) != n and not (label != "position" and len(values) == 0):
                return reject(Cause.FIELD_LENGTH, f"command has {len(values)} {label} values for {n} names")
        if len(set(names)) != n:
            dups = sorted({x for x in names if names.count(x) > 1})
            return reject(Cause.DUPLICATE_JOINT, f"duplicate joint names {dups}", dups)
        unknown = [x for x in names if x not in self._index]
        if unknown:
            return reject(
                Cause.UNKNOWN_JOINT, f"unknown joints {unknown} (commanded: {list(cfg.joints)})", unknown
            )
        present = set(names)
        missing = [x for x in cfg.joints if x not in present]
        if missing:
            return reject(Cause.MISSING_JOINT, f"command lacks joints {missing}", missing)
        for label, values in (
            ("position", command.positions),
            ("velocity", command.velocities),
            ("effort", command.efforts),
        ):
            if not len(values):  # optional fields may be empty (lengths were checked above)
                continue
            try:
                joints = [x for x, v in zip(names, values, strict=True) if not math.isfinite(v)]
            except TypeError:
                return reject(Cause.NON_FINITE, f"command {label}s are not numbers")
            if joints:
                return reject(
                    Cause.NON_FINITE, f"non-finite {label} for {joints}: rejected, never clamped", joints
                )
        if len(command.efforts):
            over = [
                x
                for x, e in zip(names, command.efforts, strict=True)
                if abs(e) > self._effort_max[self._index[x]]
            ]
            if over:
                return reject(Cause.EFFORT_LIMIT, f"commanded effort beyond the limit for {over}", over)
        stamp = command.stamp
        if not (math.isfinite(stamp) and stamp > 0.0):
            return reject(Cause.UNSTAMPED, f"command stamp {stamp} is unset or invalid")
        if ros_now - stamp > cfg.max_command_age:
            return reject(
                Cause.STALE_STAMP, f"command is {ros_now - stamp:.3f} s old (max {cfg.max_command_age} s)"
            )
        if stamp - ros_now > cfg.max_future:
            return reject(
                Cause.FUTURE_STAMP,
                f"command stamp is {stamp - ros_now:.3f} s in the future (max {cfg.max_future} s)",
            )
        if self._last_stamp is not None:
            if stamp < self._last_stamp:
                return reject(
                    Cause.BACKWARDS_STAMP, f"command stamp went backwards by {self._last_stamp - stamp:.6f} s"
                )
            if stamp == self._last_stamp:
                return reject(Cause.ZERO_DT, "command stamp equals the previous one (dt <= 0)")
        return None

    def _ordered(self, command: JointCommand) -> FloatArray:
        out = np.empty(len(self.config.joints))
        for name, value in zip(command.names, command.positions, strict=True):
            out[self._index[name]] = value
        return out

    def _enforce(
        self, prev: FloatArray, target: FloatArray, dt: float, measured: FloatArray
    ) -> tuple[FloatArray, tuple[Cause, ...]]:
        """Position first (per joint), then one scale factor on the step (velocity, step cap, acceleration, jerk).

        Plain floats, not numpy: for a handful of joints the loop is several times faster than array calls.
        """
        lower, upper, track, vmax, amax, jmax = self._per_joint
        prev_l, target_l, measured_l = prev.tolist(), target.tolist(), measured.tolist()
        v_prev = self._last_velocity.tolist()
        v_sent, a_sent = self._motion_velocity.tolist(), self._motion_acceleration.tolist()
        dt_eff = min(max(dt, 0.0), self.config.max_step_dt)
        position_hit = tracking_hit = False
        s_vel = s_acc = s_jerk = math.inf
        goal = [0.0] * len(prev_l)
        for i, (p, t, m) in enumerate(zip(prev_l, target_l, measured_l, strict=True)):
            # From inside: clamp into [lower, upper]. From outside: only inward (into [p, upper] or [lower, p]).
            g = min(max(t, min(lower[i], p)), max(upper[i], p))
            position_hit |= g != t
            # Never further from the measured pose than the tracking tolerance (never pulled back either).
            tracked = min(max(g, min(p, m - track[i])), max(p, m + track[i]))
            tracking_hit |= tracked != g
            goal[i] = tracked
            step = tracked - p
            if step == 0.0 or dt_eff <= 1e-9:
                continue
            s_vel = min(s_vel, vmax[i] * dt_eff / abs(step))
            # Allowed new velocity: within max_acceleration*dt of the last one, or anywhere between it and 0.
            v_req, dv = step / dt_eff, amax[i] * dt_eff
            if v_req > 0.0:
                s_acc = min(s_acc, max(v_prev[i] + dv, 0.0) / v_req)
            else:
                s_acc = min(s_acc, min(v_prev[i] - dv, 0.0) / v_req)
            # Jerk, the same way one derivative up (on the motion actually sent): the acceleration in the
            # direction of motion may rise by at most max_jerk*dt over the last one. Precedence: like the other
            # limits it only lowers the one scale factor, never raises it, and 0 (stop here) is always allowed,
            # so braking harder or stopping is never jerk-limited and positions, velocity and acceleration stay
            # within their limits. Safety wins over smoothness.
            if jmax[i] != math.inf:
                da = jmax[i] * dt_eff
                if v_req > 0.0:
                    s_jerk = min(s_jerk, max(v_sent[i] + (a_sent[i] + da) * dt_eff, 0.0) / v_req)
                else:
                    s_jerk = min(s_jerk, min(v_sent[i] + (a_sent[i] - da) * dt_eff, 0.0) / v_req)
        causes: list[Cause] = []
        if position_hit:
            causes.append(Cause.POSITION_LIMIT)
        if tracking_hit:
            causes.append(Cause.TRACKING_LIMIT)
        out = np.array(goal)
        if goal == prev_l:
            return out, tuple(causes)
        if dt_eff <= 1e-9:  # no time has passed since the last output: nothing may move yet
            causes.append(Cause.VELOCITY_LIMIT)
            return prev.copy(), tuple(causes)
        s = min(1.0, s_vel, s_acc, s_jerk)
        if s < 1.0:
            if s_jerk < min(1.0, s_vel, s_acc):
                causes.append(Cause.JERK_LIMIT)
            elif s_acc < min(1.0, s_vel):
                causes.append(Cause.ACCELERATION_LIMIT)
            else:
                causes.append(Cause.STEP_LIMIT if dt > self.config.max_step_dt else Cause.VELOCITY_LIMIT)
            out = prev + max(s, 0.0) * (out - prev)
        return out, tuple(causes)

    def _commit(self, out: FloatArray, now: float, dt: float) -> None:
        prev = self._last_output if self._last_output is not None else out
        credit = min(max(dt, 0.0), self.config.max_step_dt)  # the time _enforce credited this step
        # A step credited no time (e.g. the sim clock paused) moved nothing: the robot's velocity is unchanged.
        if credit > 1e-9:
            self._last_velocity = (out - prev) / credit
        self._record_motion(out - prev, credit)
        self._last_output = out
        self._last_output_time = now

    def _record_motion(self, step: FloatArray, dt: float) -> None:
        """The jerk limit's record: velocity and acceleration of the outputs sent, over the time credited.

        Kept apart from ``_last_velocity`` (the acceleration limit's and the hold's record, which counts a joint
        clipped by the hold as at rest): jerk is judged on the motion actually sent. A step credited no time
        moves nothing and changes neither record.
        """
        if dt > 1e-9:
            velocity = step / dt
            self._motion_acceleration = (velocity - self._motion_velocity) / dt
            self._motion_velocity = velocity

    def _stop_motion_record(self) -> None:
        n = len(self.config.joints)
        self._motion_velocity, self._motion_acceleration = np.zeros(n), np.zeros(n)

    def _hold(self, motion_now: float, cause: Cause, what: str) -> Decision:
        """Decelerate the last safe command to rest (all joints together, keeping the direction), then hold.

        Precedence: the hold brakes at least at each joint's acceleration limit, and harder where the jerk limit
        forbids easing off an earlier, harder braking that fast. Jerk can only make the hold stop sooner, never
        later: a stop or hold always wins over smoothness.
        """
        if not self._holding:
            self.counters.hold_events += 1
            self._holding = True
        if self._last_output is None:
            return self._remember(Decision(Status.HOLD, (cause,), reason=what))
        dt = min(max(motion_now - self._last_output_time, 0.0), self.config.max_step_dt)
        v = self._last_velocity
        decelerating = bool(np.any(v != 0.0))
        if decelerating and dt > 0.0:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                ratio = np.where(v != 0.0, np.abs(v) / (self._amax * dt), 0.0)
                # The largest factor on v the jerk limit allows: no easing off an earlier, harder braking by more
                # than max_jerk*dt. It can only lower the factor (brake harder, stop sooner), never raise it.
                sign = np.sign(v)
                reach = (
                    sign * self._motion_velocity + (sign * self._motion_acceleration + self._jmax * dt) * dt
                )
                jerk_factor = np.where(v != 0.0, reach / np.abs(v), np.inf)
            r = float(np.max(ratio))
            factor = min(1.0 - 1.0 / r if r > 1.0 else 0.0, float(np.min(jerk_factor)))
            v_new = v * factor if factor > 0.0 else np.zeros_like(v)
            lo = np.minimum(self._lower, self._last_output)
            hi = np.maximum(self._upper, self._last_output)
            out = np.clip(self._last_output + v_new * dt, lo, hi)
            self._last_velocity = np.where(out == self._last_output + v_new * dt, v_new, 0.0)
            self._record_motion(out - self._last_output, dt)
            self._last_output = out
        else:
            self._record_motion(np.zeros_like(v), dt)  # at rest (or no time passed: nothing changes)
        self._last_output_time = motion_now
        send = decelerating or self.config.publish_while_holding
        return self._remember(
            Decision(Status.HOLD, (cause,), reason=what, positions=self._out() if send else None)
        )
