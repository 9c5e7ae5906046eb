"""A fake robot and policy over real topics: publishes /joint_states (the robot follows the safe command
exactly), the heartbeat and policy commands; records /joint_commands and /safety/state; calls the services."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger
from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_STATE_JOINTS
from vla_safety.safety_node import LATCHED_QOS, SafetyNode

HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02]


class FakeRobot(Node):
    """``prefix``: the arm's namespace ("" = the default graph's absolute names; "/arm2": /arm2/joint_states...)."""

    def __init__(self, heartbeat: bool = True, prefix: str = "") -> None:
        super().__init__("fake_robot_and_policy")
        self.pose = list(HOME)
        self.outputs: list[tuple[float, list[float]]] = []
        self.states: list[DiagnosticStatus] = []
        self.lock = threading.Lock()
        self.heartbeat_on = heartbeat
        self.state_on = True
        self.js_pub = self.create_publisher(JointState, f"{prefix}/joint_states", 10)
        self.cmd_pub = self.create_publisher(JointState, f"{prefix}/policy/joint_commands", 10)
        self.hb_pub = self.create_publisher(Header, f"{prefix}/policy/heartbeat", 10)
        self.estop_pub = self.create_publisher(Bool, f"{prefix}/safety/estop", 10)
        self.create_subscription(JointState, f"{prefix}/joint_commands", self.on_output, 50)
        self.create_subscription(DiagnosticStatus, f"{prefix}/safety/state", self.on_state, LATCHED_QOS)
        self.estop_cli = self.create_client(Trigger, f"{prefix}/safety/estop")
        self.reset_cli = self.create_client(Trigger, f"{prefix}/safety/reset")
        self.create_timer(0.01, self.publish_state)
        self.create_timer(0.05, self.publish_heartbeat)

    def on_output(self, msg: JointState) -> None:
        with self.lock:
            self.outputs.append((time.monotonic(), list(msg.position)))
            self.pose = list(msg.position)

    def on_state(self, msg: DiagnosticStatus) -> None:
        with self.lock:
            self.states.append(msg)

    def publish_state(self) -> None:
        if not self.state_on:
            return
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(PANDA_STATE_JOINTS)
        with self.lock:
            msg.position = [*self.pose, self.pose[-1]]
        self.js_pub.publish(msg)

    def publish_heartbeat(self) -> None:
        if self.heartbeat_on:
            msg = Header()
            msg.stamp = self.get_clock().now().to_msg()
            self.hb_pub.publish(msg)

    def command(self, positions: Sequence[float]) -> None:
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(PANDA_COMMAND_JOINTS)
        msg.position = [float(p) for p in positions]
        self.cmd_pub.publish(msg)

    def status(self) -> str:
        with self.lock:
            if not self.states:
                return ""
            return next(kv.value for kv in self.states[-1].values if kv.key == "status")

    def counter(self, key: str) -> int:
        with self.lock:
            return int(next(kv.value for kv in self.states[-1].values if kv.key == key))

    def call(self, client: object, timeout: float = 5.0) -> Trigger.Response:
        if not client.wait_for_service(timeout_sec=timeout):  # type: ignore[attr-defined]
            raise TimeoutError("service not available")
        future = client.call_async(Trigger.Request())  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("service call timed out")
            time.sleep(0.01)
        return future.result()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until true; returns the seconds it took. Raises with ``what`` on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


class Running:
    """Safety node + fake robot spinning in one background executor thread."""

    def __init__(self, heartbeat: bool = True, namespace: str = "", **params: object) -> None:
        """``namespace``: both nodes in it, the monitor started as with ``-r __ns:=<namespace>``."""
        defaults: dict[str, object] = {"rate": 50.0, "diagnostics_period": 0.5}
        overrides = [Parameter(k, value=v) for k, v in {**defaults, **params}.items()]
        cli_args = ["--ros-args", "-r", f"__ns:={namespace}"] if namespace else None
        self.safety = SafetyNode(parameter_overrides=overrides, cli_args=cli_args)
        self.robot = FakeRobot(heartbeat=heartbeat, prefix=namespace)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.safety)
        self.executor.add_node(self.robot)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.safety.destroy_node()
        self.robot.destroy_node()


def init_ros() -> None:
    if not rclpy.ok():
        rclpy.init()
