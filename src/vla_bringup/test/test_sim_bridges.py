"""Contract test of each simulator profile over real topics.

For every ``sim:=`` profile the plan's safety_node (its real parameters: adapter, output topic) drives a
simulator that listens where that simulator's bridge listens, in that message type: Gazebo's
forward_position_controller (Float64MultiArray), Isaac Sim's /joint_command (JointState), and our own sim.
Our sim_node speaks all three (as ros2_control's controllers and Isaac's bridge do), so it stands in for
Gazebo and Isaac here; they cannot be installed on these machines. The arm must follow a policy command.
"""

import io
import threading
import time

import pytest
from vla_bringup.plan import SIM_BRIDGES, NodeSpec, Plan, Sim, build_plan
from vla_bringup.runner import Supervisor, resolve

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

JOINTS = [*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1"]


def stand_in_simulator(sim: Sim) -> NodeSpec:
    bridge = SIM_BRIDGES[sim]
    remaps = ()
    if bridge.adapter == "joint_state":
        remaps = (("/joint_commands", bridge.command_topic),)
    return NodeSpec(
        "sim_node", "vla_sim", "sim_node", parameters={"camera_rate": 0.0, "task": "pick"}, remappings=remaps
    )


@pytest.mark.parametrize("sim", list(Sim))
def test_safety_output_reaches_the_simulator_through_its_bridge(sim):
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Header

    safety = build_plan("sim", {"sim": sim.value, "use_sim_time": "false"}).node("safety_node")
    plan = Plan("contract", {"log_level": "warn"}, (stand_in_simulator(sim), safety))
    out = io.StringIO()
    supervisor = Supervisor(resolve(plan), grace_s=10.0, out=out)
    runner = threading.Thread(target=supervisor.run, daemon=True)
    runner.start()

    rclpy.init()
    node = rclpy.create_node("bridge_contract")
    latest = {}
    node.create_subscription(
        JointState, "/joint_states", lambda m: latest.update(zip(m.name, m.position, strict=True)), 10
    )
    commands = node.create_publisher(JointState, "/policy/joint_commands", 10)
    heartbeat = node.create_publisher(Header, "/policy/heartbeat", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60
        while "panda_joint1" not in latest and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "panda_joint1" in latest, "no /joint_states from the simulator:\n" + out.getvalue()[-2000:]
        start = [latest[j] for j in JOINTS]
        target = list(start)
        moved = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not moved:
            # a slow ramp (0.2 rad/s on joint 1), like a policy would send, stamped when sent
            target[0] = min(target[0] + 0.004, start[0] + 0.3)
            msg = JointState(name=JOINTS, position=target)
            msg.header.stamp = node.get_clock().now().to_msg()
            commands.publish(msg)
            heartbeat.publish(Header(stamp=msg.header.stamp))
            moved = latest["panda_joint1"] - start[0] > 0.15
            time.sleep(0.02)
        assert moved, (
            f"{sim.value}: the arm did not follow through {SIM_BRIDGES[sim]}:\n" + out.getvalue()[-3000:]
        )
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        supervisor.request_stop("test done")
        runner.join(30)
