"""A stand-in policy process for the kill test: waits for /joint_states, then streams commands at 20 Hz that
move joint 1 steadily (0.3 rad/s) from where the robot is, with a heartbeat. Killed with SIGKILL by the test."""

import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from vla_common.robots import PANDA_COMMAND_JOINTS


class Policy(Node):
    def __init__(self) -> None:
        super().__init__("killable_policy")
        self.base: list[float] | None = None
        self.start = 0.0
        self.cmd = self.create_publisher(JointState, "/policy/joint_commands", 10)
        self.hb = self.create_publisher(Header, "/policy/heartbeat", 10)
        self.create_subscription(JointState, "/joint_states", self.on_state, 10)
        self.create_timer(0.05, self.step)

    def on_state(self, msg: JointState) -> None:
        if self.base is None:
            lookup = dict(zip(msg.name, msg.position, strict=True))
            self.base = [lookup[n] for n in PANDA_COMMAND_JOINTS]
            self.start = time.monotonic()

    def step(self) -> None:
        if self.base is None:
            return
        hb = Header()
        hb.stamp = self.get_clock().now().to_msg()
        self.hb.publish(hb)
        target = list(self.base)
        target[0] += 0.3 * (time.monotonic() - self.start)
        msg = JointState()
        msg.header.stamp = hb.stamp
        msg.name = list(PANDA_COMMAND_JOINTS)
        msg.position = target
        self.cmd.publish(msg)


def main() -> None:
    rclpy.init()
    rclpy.spin(Policy())


if __name__ == "__main__":
    main()
