"""expert_node: the scripted expert as a teleoperator, through topics only.

Subscribes
  /joint_states (sensor_msgs/JointState), /sim/object_poses (geometry_msgs/PoseArray) and /sim/scene
  (std_msgs/String JSON: which pose is which object), all published by sim_node;
  /task_instruction (std_msgs/String, reliable + transient local) unless the ``task`` parameter is set.
Publishes
  /joint_commands (sensor_msgs/JointState: the 8 command joints, absolute position targets) at control_rate;
  remap it to /policy/joint_commands when a safety monitor sits between (``-r /joint_commands:=/policy/joint_commands``).
  /diagnostics (1 Hz).
It commands nothing while it has no task, the instruction is empty, or joint states / object poses are older
than state_timeout_s (the robot then holds its last target). With sim_node in lockstep mode, run it with
use_sim_time:=true so its control timer follows /clock.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from vla_common.node import declare_parameters, run_node
from vla_common.robots import PANDA_COMMAND_JOINTS

from vla_sim.bridge import parse_scene_message
from vla_sim.experts import DriverStatus, ExpertConfig, ExpertDriver

PARAMETERS: dict[str, tuple[Any, str]] = {
    "task": ("", "instruction to carry out; empty = follow /task_instruction"),
    "control_rate": (10.0, "commands per second (of ROS time: sim time with use_sim_time)"),
    "max_speed": (0.3, "top speed of the grasp point, m/s"),
    "state_timeout_s": (0.5, "wall seconds after which joint states / object poses count as stale"),
    "enabled": (True, "publish commands (false: compute and report only)"),
}
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class ExpertNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("expert_node", **node_kwargs)
        p = declare_parameters(self, PARAMETERS, floats_take_ints=True)
        rate = float(p["control_rate"])
        if not rate > 0:
            raise ValueError(f"control_rate must be positive, got {rate}")
        self.driver = ExpertDriver(
            ExpertConfig(control_hz=rate, max_speed=float(p["max_speed"])), float(p["state_timeout_s"])
        )
        self.fixed_task = str(p["task"])
        if self.fixed_task:
            self.driver.set_instruction(self.fixed_task)
            if self.driver.task is None:
                raise ValueError(f"task {self.fixed_task!r} matches no task template")
        self.status = DriverStatus.NO_TASK
        self.sent = 0
        self.command_pub = self.create_publisher(JointState, "joint_commands", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, "joint_states", self._on_joint_states, qos_profile_sensor_data)
        self.create_subscription(PoseArray, "sim/object_poses", self._on_poses, qos_profile_sensor_data)
        self.create_subscription(String, "sim/scene", self._on_scene, LATCHED)
        self.create_subscription(String, "task_instruction", self._on_instruction, LATCHED)
        self.create_timer(1.0 / rate, self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_joint_states(self, msg: JointState) -> None:
        self.driver.update_joints(msg.name, msg.position, time.monotonic())

    def _on_poses(self, msg: PoseArray) -> None:
        poses = [
            (
                (p.position.x, p.position.y, p.position.z),
                (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w),
            )
            for p in msg.poses
        ]
        self.driver.update_poses(poses, time.monotonic())

    def _on_scene(self, msg: String) -> None:
        try:
            self.driver.set_scene(parse_scene_message(msg.data))
        except (ValueError, json.JSONDecodeError) as error:
            self.get_logger().warning(f"bad /sim/scene message: {error}", throttle_duration_sec=2.0)

    def _on_instruction(self, msg: String) -> None:
        if not self.fixed_task and self.driver.set_instruction(msg.data) is DriverStatus.BAD_TASK:
            self.get_logger().warning(
                f"no scripted expert for instruction {msg.data!r}", throttle_duration_sec=2.0
            )

    def _on_tick(self) -> None:
        self.status, target = self.driver.decide(time.monotonic())
        if target is None:
            if self.status is not DriverStatus.IDLE:
                self.get_logger().info(f"holding: {self.status.value}", throttle_duration_sec=5.0)
            return
        if not self.get_parameter("enabled").value:
            return
        msg = JointState(name=list(PANDA_COMMAND_JOINTS), position=[float(v) for v in target])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.command_pub.publish(msg)
        self.sent += 1

    def _publish_diagnostics(self) -> None:
        acting = self.status in (DriverStatus.ACTING, DriverStatus.IDLE)
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        task = self.driver.task
        array.status.append(
            DiagnosticStatus(
                level=DiagnosticStatus.OK if acting else DiagnosticStatus.WARN,
                name=f"{self.get_name()}: scripted expert",
                message=self.status.value,
                hardware_id="scripted_expert",
                values=[
                    KeyValue(key="task", value=task.instruction if task else ""),
                    KeyValue(key="commands_sent", value=str(self.sent)),
                    KeyValue(key="command_topic", value=self.command_pub.topic_name),
                ],
            )
        )
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        self.driver.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(ExpertNode, "expert_node", args)


if __name__ == "__main__":
    sys.exit(main())
