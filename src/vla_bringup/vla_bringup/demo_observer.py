"""vla-demo's observer node: rclpy wiring only, imported by ``vla_bringup.demo.run`` when the demo starts
(so that importing ``vla_bringup.demo`` needs no rclpy)."""

from __future__ import annotations

import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import SetBool, Trigger
from vla_common.robots import PANDA_ARM_JOINTS

from vla_bringup.demo import call
from vla_bringup.scoring import EpisodeRecord

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class DemoObserver(Node):
    """What vla-demo watches and drives: the sim clock and success, the commander's and the monitor's
    commands (the safety path's latency), the monitor's counters, and the services that reset, pause and
    record."""

    def __init__(self) -> None:
        super().__init__("vla_demo")
        self.lock = threading.Lock()
        self.sim_time = 0.0
        self.success = False
        self.success_sim_time: float | None = None
        self.recording: EpisodeRecord | None = None
        self.episode_start_sim = 0.0
        self.counters: dict[str, int] = {}
        self.heartbeats = 0
        self.pending: dict[tuple[float, ...], float] = {}  # commander command -> wall receive time
        self.latencies_ms: list[float] = []
        self.joint_states = 0
        self.create_subscription(Clock, "/clock", self.on_clock, 10)
        self.create_subscription(Bool, "/sim/success", self.on_success, LATCHED)
        self.create_subscription(JointState, "/joint_commands", self.on_safe_command, 50)
        self.create_subscription(JointState, "/policy/joint_commands", self.on_commander, 50)
        self.create_subscription(DiagnosticStatus, "/safety/state", self.on_safety_state, LATCHED)
        self.create_subscription(Header, "/policy/heartbeat", self.on_heartbeat, qos_profile_sensor_data)
        self.create_subscription(JointState, "/joint_states", self.on_joint_states, qos_profile_sensor_data)
        self.set_params = self.create_client(SetParameters, "/sim_node/set_parameters")
        self.reset_sim = self.create_client(Trigger, "/sim_node/reset")
        self.reset_safety = self.create_client(Trigger, "/safety/reset")
        self.enable_policy = self.create_client(SetBool, "/policy_node/enable")
        self.record_start = self.create_client(Trigger, "/collector_node/start")
        self.record_stop = self.create_client(SetBool, "/collector_node/stop")

    # --- callbacks -------------------------------------------------------------------------------
    def on_clock(self, msg: Any) -> None:
        self.sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9

    def on_joint_states(self, _msg: Any) -> None:
        self.joint_states += 1

    def on_heartbeat(self, _msg: Any) -> None:
        self.heartbeats += 1

    def on_success(self, msg: Any) -> None:
        with self.lock:
            if msg.data and self.recording is not None and not self.success:
                self.success, self.success_sim_time = True, self.sim_time

    def on_commander(self, msg: Any) -> None:
        key = tuple(round(p, 6) for p in msg.position)
        with self.lock:
            self.pending[key] = time.monotonic()
            if len(self.pending) > 200:
                self.pending.pop(next(iter(self.pending)))

    def on_safe_command(self, msg: Any) -> None:
        now = time.monotonic()
        key = tuple(round(p, 6) for p in msg.position)
        with self.lock:
            sent = self.pending.pop(key, None)
            if sent is not None:  # passed unmodified: the latency of the safety path
                self.latencies_ms.append((now - sent) * 1e3)
            if self.recording is not None:
                index = {n: i for i, n in enumerate(msg.name)}
                if all(j in index for j in PANDA_ARM_JOINTS):
                    self.recording.command_times.append(self.sim_time)
                    self.recording.commands.append([msg.position[index[j]] for j in PANDA_ARM_JOINTS])

    def on_safety_state(self, msg: Any) -> None:
        values = {kv.key: kv.value for kv in msg.values}
        with self.lock:
            self.counters = {k: int(v) for k, v in values.items() if v.isdigit()}

    # --- service helpers ---------------------------------------------------------------------------
    def set_task(self, family: str, seed: int) -> None:
        request = SetParameters.Request()
        request.parameters = [
            Parameter(
                name="task", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=family)
            ),
            Parameter(
                name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
            ),
        ]
        result = call(self.set_params, request)
        failed = [r.reason for r in result.results if not r.successful]
        if failed:
            raise RuntimeError(f"sim_node refused the task parameters: {failed}")
