"""safety_node: rclpy wiring around :class:`vla_safety.monitor.SafetyMonitor`; the decisions live there.

Subscribes ``/policy/joint_commands`` (JointState), ``/joint_states``, ``/policy/heartbeat`` (Header),
``/safety/estop`` (Bool, True engages). Services ``/safety/estop`` and ``/safety/reset`` (std_srvs/Trigger).
Publishes the safe command (``output_topic``, adapter by ``output_adapter``), ``/safety/state``
(DiagnosticStatus, reliable + transient local) and ``/diagnostics``. One thread: callbacks never overlap.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from builtin_interfaces.msg import Time as TimeMsg  # type: ignore[import-untyped]
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # type: ignore[import-untyped]
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState  # type: ignore[import-untyped]
from std_msgs.msg import Bool, Header  # type: ignore[import-untyped]
from std_srvs.srv import Trigger  # type: ignore[import-untyped]
from vla_common.node import declare_parameters, run_node
from vla_common.robots import PANDA_COMMAND_JOINTS

from vla_safety.adapters import (
    OutputConfig,
    OutputKind,
    command_from_msg,
    make_output,
    state_from_msg,
    status_message,
)
from vla_safety.limits import load_limits
from vla_safety.monitor import Decision, JointStateSample, MonitorConfig, SafetyMonitor, Status

STATUS_NAME = "vla_safety: safety_monitor"

# Bounded queues everywhere: a flood can only drop messages, never grow memory.
COMMAND_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)  # type: ignore[no-untyped-call]
STATE_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)  # type: ignore[no-untyped-call]
LATCHED_QOS = QoSProfile(  # type: ignore[no-untyped-call]
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

# rclpy gives every publisher and subscription two QoS-event handlers (incompatible QoS / type warnings) that
# its executor visits on every wake-up, so every message pays for them (bench/safety_latency.py: 116 -> 86 us
# per wake-up without the ones below; a bare relay node: 67 us). They stay where a mismatch can silently cut
# the robot off (command in, e-stop in, command out); the best-effort volatile subscriptions are compatible
# with any publisher, and the reporting topics are not on the safety path.
NO_SUB_EVENTS = SubscriptionEventCallbacks(use_default_callbacks=False)
NO_PUB_EVENTS = PublisherEventCallbacks(use_default_callbacks=False)

# name -> (default, description). The one list of parameters (README documents the same).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "robot_profile": (
        "panda",
        "Robot profile name under config/robots/ (panda, ur5e, so101) or a YAML path; '' = none",
    ),
    "urdf_path": ("", "URDF whose <limit>s are merged in, most restrictive wins; '' = none"),
    "joints": (
        list(PANDA_COMMAND_JOINTS),
        "Commanded joints, in output order; every one needs finite position and velocity limits",
    ),
    "command_timeout": (0.25, "s without a valid policy command before decelerating to a hold"),
    "state_timeout": (0.25, "s without /joint_states before a latched fault"),
    "heartbeat_timeout": (
        0.5,
        "s without /policy/heartbeat before holding; 0 disables the heartbeat watchdog",
    ),
    "max_command_age": (0.5, "s: commands stamped older than this (node ROS clock) are rejected"),
    "max_future": (0.1, "s: commands stamped further in the future are rejected"),
    "max_step_dt": (0.1, "s: the most time one step is credited (step cap = max_velocity * max_step_dt)"),
    "velocity_scale": (1.0, "(0, 1]: fraction of each joint's velocity limit to allow"),
    "start_pose_tolerance": (
        0.2,
        "s of travel at the velocity limit: how near the first command must be to the pose",
    ),
    "far_outside_fraction": (0.05, "fraction of a joint's range beyond a hard limit that latches a fault"),
    "max_tracking_error": (
        0.25,
        "s of travel at the velocity limit: how far the command may lead the measured pose; 0 off",
    ),
    "max_joints": (64, "Commands with more joints (or names longer than 256 chars) are rejected"),
    "publish_while_holding": (True, "Keep publishing the hold command at `rate` after deceleration ends"),
    "auto_arm": (True, "Arm on the first valid /joint_states; if false, only /safety/reset arms"),
    "output_adapter": ("joint_state", "joint_state | float64_multi_array | joint_trajectory"),
    "output_topic": ("joint_commands", "Where the safe command goes"),
    "trajectory_time_from_start": (0.1, "s: time_from_start of the single point (joint_trajectory adapter)"),
    "rate": (50.0, "Hz: watchdog and hold-output rate"),
    "diagnostics_period": (1.0, "s between /diagnostics messages"),
    "log_throttle": (1.0, "s between repeated log lines of one kind"),
}


class SafetyNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safety_node", **kwargs)
        # Read once at start (limits cannot change while armed): `ros2 param set` is refused, not ignored.
        p = declare_parameters(self, PARAMETERS, read_only=True)
        self.monitor_config = MonitorConfig(
            joints=tuple(p["joints"]),
            **{k: p[k] for k in ("command_timeout", "state_timeout", "heartbeat_timeout", "max_command_age")},
            **{k: p[k] for k in ("max_future", "max_step_dt", "velocity_scale", "start_pose_tolerance")},
            far_outside_fraction=p["far_outside_fraction"],
            max_tracking_error=p["max_tracking_error"],
            max_joints=p["max_joints"],
            publish_while_holding=p["publish_while_holding"],
        )
        self.output_config = OutputConfig(
            OutputKind(p["output_adapter"]), p["output_topic"], p["trajectory_time_from_start"]
        )
        self.hardware_id = p["robot_profile"] or p["urdf_path"]
        # Raises LimitsError (the node refuses to start) unless every commanded joint is finitely limited.
        self.monitor = SafetyMonitor(load_limits(p["robot_profile"], p["urdf_path"]), self.monitor_config)
        self.log = self.get_logger()  # type: ignore[no-untyped-call]
        self.auto_arm = bool(p["auto_arm"])
        # Under sim time the robot lives on the ROS clock: time its motion limits there (watchdogs stay monotonic).
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        self.throttle = float(p["log_throttle"])
        self.state: JointStateSample | None = None
        self._published_state: tuple[object, ...] = ()
        self._last_log: dict[Status, float] = {}

        self.out_pub = self.create_publisher(self.output_config.message_type, self.output_config.topic, 10)
        self.state_pub = self.create_publisher(
            DiagnosticStatus, "safety/state", LATCHED_QOS, event_callbacks=NO_PUB_EVENTS
        )
        self.diag_pub = self.create_publisher(
            DiagnosticArray, "/diagnostics", 10, event_callbacks=NO_PUB_EVENTS
        )
        self.create_subscription(JointState, "policy/joint_commands", self.on_command, COMMAND_QOS)
        self.create_subscription(
            JointState, "joint_states", self.on_joint_states, STATE_QOS, event_callbacks=NO_SUB_EVENTS
        )
        self.create_subscription(
            Header, "policy/heartbeat", self.on_heartbeat, STATE_QOS, event_callbacks=NO_SUB_EVENTS
        )
        self.create_subscription(Bool, "safety/estop", self.on_estop_topic, 10)
        self.create_service(Trigger, "safety/estop", self.on_estop_service)
        self.create_service(Trigger, "safety/reset", self.on_reset_service)
        self.create_timer(1.0 / float(p["rate"]), self.on_tick)
        self.create_timer(float(p["diagnostics_period"]), self.on_diagnostics)
        self.publish_state(self.monitor.last_decision, force=True)
        lims = self.monitor.limits
        self.log.info(
            f"guarding {list(self.monitor_config.joints)} with limits from {self.hardware_id!r}; output "
            f"{self.output_config.kind.value} on {self.output_config.topic}; "
            + "; ".join(
                f"{n}: [{lim.lower:.4g}, {lim.upper:.4g}] v<={lim.max_velocity:.4g}"
                for n, lim in lims.items()
            )
        )

    # --- callbacks: a few lines each --------------------------------------------------------------

    def on_command(self, msg: JointState) -> None:
        clock_now = self.get_clock().now()  # one clock read: the stamp check and the output stamp
        ros_now = clock_now.nanoseconds * 1e-9
        motion_now = ros_now if self.sim_time else None
        decision = self.monitor.check(
            command_from_msg(msg), self.state, time.monotonic(), ros_now, motion_now
        )
        self.act(decision, stamp=clock_now.to_msg())

    def on_joint_states(self, msg: JointState) -> None:
        self.state = state_from_msg(msg, time.monotonic())
        if self.auto_arm and not self.monitor.armed:
            decision = self.monitor.arm(self.state, time.monotonic())
            self.auto_arm = decision.status is not Status.OK  # arm once; re-arming later is an explicit reset
            self.act(decision)

    def on_heartbeat(self, _msg: Header) -> None:
        self.monitor.heartbeat(time.monotonic())

    def on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self.act(self.monitor.engage_estop(time.monotonic(), "/safety/estop topic"))
        else:
            self.log.warning("/safety/estop False ignored: only /safety/reset clears the e-stop")

    def on_estop_service(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        decision = self.monitor.engage_estop(time.monotonic(), "/safety/estop service")
        self.act(decision)
        resp.success, resp.message = True, decision.reason
        return resp

    def on_reset_service(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        decision = self.monitor.reset(self.state, time.monotonic())
        self.act(decision)
        resp.success, resp.message = decision.status is Status.OK, decision.reason
        return resp

    def on_tick(self) -> None:
        motion_now = self.ros_now() if self.sim_time else None
        self.act(self.monitor.tick(self.state, time.monotonic(), motion_now), periodic=True)

    def on_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.status_msg(self.monitor.last_decision)]
        self.diag_pub.publish(array)
        self.publish_state(self.monitor.last_decision, force=True)

    # --- helpers ------------------------------------------------------------------------------------

    def ros_now(self) -> float:
        return float(self.get_clock().now().nanoseconds) * 1e-9

    def act(self, decision: Decision, periodic: bool = False, stamp: TimeMsg | None = None) -> None:
        """Send what the monitor decided, report a change of state, log (throttled) what was refused."""
        if decision.positions is not None:
            if stamp is None:
                stamp = self.get_clock().now().to_msg()
            self.out_pub.publish(
                make_output(self.output_config, self.monitor_config.joints, decision.positions, stamp)
            )
        changed = self.publish_state(decision)
        if (
            changed or not periodic
        ):  # the watchdog tick repeats the current state: log it only when it changes
            self.log_decision(decision, changed)

    def log_decision(self, decision: Decision, changed: bool) -> None:
        """Every entry into ESTOP/FAULT is logged at once; everything else at most once per throttle per status."""
        status = decision.status
        if status is Status.OK:
            return
        now = time.monotonic()
        urgent = changed and status in (Status.ESTOP, Status.FAULT)
        if not urgent and now - self._last_log.get(status, -math.inf) < self.throttle:
            return
        self._last_log[status] = now
        text = f"{status.name} {list(decision.joints) if decision.joints else ''}: {decision.reason}"
        if status in (Status.ESTOP, Status.FAULT):
            self.log.error(text)
        elif status is Status.REJECTED:
            self.log.warning(text)
        else:  # CLAMPED is the monitor doing its job; HOLD is also the idle state before a policy starts
            self.log.info(text)

    def status_msg(self, decision: Decision) -> DiagnosticStatus:
        extra = {
            "armed": str(self.monitor.armed),
            "estop_latched": str(self.monitor.estop_latched),
            "fault_latched": str(self.monitor.fault_latched),
        }
        if self.monitor.estop_since is not None:
            extra["estop_latched_for_s"] = f"{time.monotonic() - self.monitor.estop_since:.1f}"
        return status_message(decision, self.monitor.counters.as_dict(), extra, STATUS_NAME, self.hardware_id)

    def publish_state(self, decision: Decision, force: bool = False) -> bool:
        """Publish /safety/state when what the monitor does changed (or when forced); True if it changed."""
        key = (decision.status, decision.causes, decision.joints, self.monitor.armed)
        changed = key != self._published_state
        if force or changed:
            self._published_state = key
            self.state_pub.publish(self.status_msg(decision))
        return changed


def main(args: list[str] | None = None) -> int:
    # LimitsError and configuration errors (ValueError): refuse to start, say why, exit 1.
    return run_node(SafetyNode, "safety_node", args, refused_exit_code=1)


if __name__ == "__main__":
    sys.exit(main())
