"""Relative topic names: ``-r __ns:=/arm2`` hosts a second arm, and the default graph keeps its absolute names.

Two safety monitors run side by side in /arm1 and /arm2, each with its own fake robot and policy, over real
rclpy topics (the test runner gives the process its own ROS_DOMAIN_ID). Each arm's commands reach only its
own monitor, and only that monitor's output moves that arm; nothing appears on the default graph's
/joint_commands.
"""

import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from ros_harness import HOME, Running, wait_for
from sensor_msgs.msg import JointState

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module", autouse=True)
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def names(node):
    return (
        {s.topic_name for s in node.subscriptions},
        {p.topic_name for p in node.publishers},
        {node.resolve_service_name(s.srv_name) for s in node.services},  # srv_name is the name as given
    )


def test_the_default_graph_keeps_todays_absolute_names():
    r = Running()
    try:
        subscriptions, publishers, services = names(r.safety)
        assert subscriptions == {
            "/policy/joint_commands",
            "/joint_states",
            "/policy/heartbeat",
            "/safety/estop",
        }
        assert {"/joint_commands", "/safety/state", "/diagnostics"} <= publishers
        assert {"/safety/estop", "/safety/reset"} <= services
    finally:
        r.close()


def drive(r: Running, seconds: float, delta: float) -> int:
    """Commands at 20 Hz moving joint 1 by ``delta`` each from where this arm is; returns how many were sent."""
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with r.robot.lock:
            target = list(r.robot.pose)
        target[0] += delta
        r.robot.command(target)
        sent += 1
        time.sleep(0.05)
    return sent


def joint1(r: Running) -> list[float]:
    with r.robot.lock:
        return [p[0] for _, p in r.robot.outputs]


def test_two_namespaced_monitors_each_pass_only_their_own_arms_commands():
    arms = {ns: Running(namespace=ns) for ns in ("/arm1", "/arm2")}
    heard_on_default_graph: list[JointState] = []
    listener = rclpy.create_node("default_graph_listener")
    listener.create_subscription(JointState, "/joint_commands", heard_on_default_graph.append, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    arm1, arm2 = arms["/arm1"], arms["/arm2"]
    try:
        for ns, r in arms.items():
            subscriptions, publishers, services = names(r.safety)
            assert subscriptions == {f"{ns}/policy/joint_commands", f"{ns}/joint_states", f"{ns}/policy/heartbeat",
                                     f"{ns}/safety/estop"}  # fmt: skip
            assert {f"{ns}/joint_commands", f"{ns}/safety/state"} <= publishers
            assert "/diagnostics" in publishers  # diagnostics stay global, as diagnostic_updater's do
            assert {f"{ns}/safety/estop", f"{ns}/safety/reset"} <= services
            wait_for(
                lambda r=r: r.safety.monitor.armed, 10.0, f"the {ns} monitor to arm on {ns}/joint_states"
            )

        # arm1 moves joint 1 up; arm2's monitor hears none of it and arm2 stays where it is.
        received2 = arm2.safety.monitor.counters.received
        sent1 = drive(arm1, 0.6, delta=+0.01)
        wait_for(
            lambda: max(joint1(arm1)) > HOME[0] + 0.01, 5.0, "arm1's safe commands on /arm1/joint_commands"
        )
        assert arm1.safety.monitor.counters.received >= sent1 - 1  # the last one may still be in flight
        assert arm2.safety.monitor.counters.received == received2
        assert all(abs(q - HOME[0]) < 1e-9 for q in joint1(arm2)), "arm2 moved on arm1's commands"

        # arm2 moves joint 1 down; arm1's monitor hears none of it and arm1 never goes below home.
        received1 = arm1.safety.monitor.counters.received
        drive(arm2, 0.6, delta=-0.01)
        wait_for(
            lambda: min(joint1(arm2)) < HOME[0] - 0.01, 5.0, "arm2's safe commands on /arm2/joint_commands"
        )
        assert arm1.safety.monitor.counters.received == received1
        assert min(joint1(arm1)) >= HOME[0] - 1e-9, "arm1 moved on arm2's commands"
        assert max(joint1(arm2)) <= HOME[0] + 1e-9, "arm2 moved on arm1's commands"

        time.sleep(0.2)
        assert heard_on_default_graph == [], "a namespaced monitor published on the default graph"
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        listener.destroy_node()
        for r in arms.values():
            r.close()
