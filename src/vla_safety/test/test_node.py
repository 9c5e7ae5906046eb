"""safety_node over real topics: pass-through, e-stop latch (service and topic) and reset, watchdog hold."""

import math
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_harness import HOME, Running, wait_for
from std_msgs.msg import Bool
from vla_safety.safety_node import LATCHED_QOS

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module", autouse=True)
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def running():
    r = Running()
    yield r
    r.close()


def drive(r: Running, seconds: float, delta: float = 0.0) -> None:
    """Send commands at 20 Hz, moving joint 1 by ``delta`` per command from where the robot is."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with r.robot.lock:
            target = list(r.robot.pose)
        target[0] += delta
        r.robot.command(target)
        time.sleep(0.05)


def test_commands_pass_then_estop_latches_until_an_explicit_reset(running):
    r = running
    robot = r.robot
    wait_for(lambda: r.safety.monitor.armed, 10.0, "the monitor to arm on /joint_states")
    drive(r, 0.5, delta=0.01)
    wait_for(lambda: len(robot.outputs) >= 3, 5.0, "safe commands on /joint_commands")
    assert robot.outputs[-1][1][0] > HOME[0]

    resp = robot.call(robot.estop_cli)
    assert resp.success
    wait_for(lambda: robot.status() == "ESTOP", 5.0, "/safety/state ESTOP")
    with robot.lock:
        held = list(robot.pose)
    drive(r, 0.5, delta=0.05)  # the policy keeps pushing: dropped and counted
    with robot.lock:
        during = [p for t, p in robot.outputs[-5:]]
    assert all(p == held for p in during), "output moved while the e-stop was latched"
    assert r.safety.monitor.counters.dropped_estop >= 5

    robot.estop_pub.publish(Bool(data=False))
    time.sleep(0.5)
    assert robot.status() == "ESTOP"  # False on the topic never clears it; time neither

    with robot.lock:
        before = len(robot.states)
    resp = robot.call(robot.reset_cli)
    assert resp.success, resp.message
    assert not r.safety.monitor.estop_latched

    def reported_ok() -> bool:
        with robot.lock:
            return any(s.message.startswith("OK") for s in robot.states[before:])

    wait_for(reported_ok, 5.0, "/safety/state OK after reset")
    n = len(robot.outputs)
    time.sleep(0.5)
    assert len(robot.outputs) == n, "a reset must not send anything (re-arm without moving)"

    drive(r, 0.3, delta=0.01)
    wait_for(lambda: len(robot.outputs) > n, 5.0, "commands flowing again after reset")

    robot.estop_pub.publish(Bool(data=True))
    wait_for(lambda: robot.status() == "ESTOP", 5.0, "/safety/state ESTOP from the topic")
    assert r.safety.monitor.counters.estops == 2


def test_state_is_latched_for_late_subscribers(running):
    r = running
    wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
    r.robot.call(r.robot.estop_cli)
    got = []
    late = rclpy.create_node("late_joiner")
    late.create_subscription(DiagnosticStatus, "/safety/state", got.append, LATCHED_QOS)
    deadline = time.monotonic() + 5.0
    while not got and time.monotonic() < deadline:
        rclpy.spin_once(late, timeout_sec=0.05)
    late.destroy_node()
    assert got, "no latched /safety/state"
    assert got[-1].message.startswith("ESTOP")
    assert got[-1].level == DiagnosticStatus.ERROR


def test_watchdog_decelerates_to_a_hold_when_commands_stop(running):
    r = running
    robot = r.robot
    wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
    drive(r, 1.0, delta=0.02)
    stopped = time.monotonic()
    took = wait_for(lambda: robot.status() == "HOLD", 3.0, "HOLD after the command timeout")
    assert took < 0.25 + 0.5  # command_timeout plus scheduling slack on a loaded machine
    time.sleep(0.6)
    with robot.lock:
        tail = [p for t, p in robot.outputs if t > stopped + took + 0.4]
    assert len(tail) >= 5, "a decelerating hold keeps publishing"
    assert all(p == tail[-1] for p in tail), "not at rest 0.4 s into the hold"


def test_lost_heartbeat_holds(running):
    r = running
    robot = r.robot
    wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
    drive(r, 0.4, delta=0.01)
    robot.heartbeat_on = False
    drive(r, 1.0, delta=0.01)
    assert robot.status() == "HOLD"
    assert r.safety.monitor.last_decision.causes[0].value == "heartbeat_lost"
    assert r.safety.monitor.counters.dropped_hold > 0


def test_stale_joint_states_fault(running):
    r = running
    robot = r.robot
    wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
    drive(r, 0.3, delta=0.01)
    robot.state_on = False
    wait_for(lambda: robot.status() == "FAULT", 3.0, "FAULT on stale /joint_states")
    robot.state_on = True
    time.sleep(0.3)
    assert robot.status() == "FAULT"  # latched
    assert robot.call(robot.reset_cli).success


def test_joint_trajectory_adapter_over_a_real_topic():
    from trajectory_msgs.msg import JointTrajectory

    r = Running(output_adapter="joint_trajectory", output_topic="/test/joint_trajectory")
    try:
        got = []
        r.robot.create_subscription(JointTrajectory, "/test/joint_trajectory", got.append, 10)
        wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
        drive(r, 0.5, delta=0.0)
        wait_for(lambda: len(got) > 0, 5.0, "a JointTrajectory from the adapter")
        assert tuple(got[-1].joint_names) == r.safety.monitor_config.joints
        assert len(got[-1].points) == 1
        assert got[-1].points[0].positions[0] == pytest.approx(HOME[0])
    finally:
        r.close()


def test_node_refuses_to_start_without_limits_for_a_commanded_joint():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "vla_safety.safety_node", "--ros-args", "-p", "joints:=[panda_joint1, wheel]"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "refusing to start" in proc.stderr
    assert "wheel" in proc.stderr


def test_nan_command_over_a_topic_is_rejected_and_nothing_is_sent(running):
    r = running
    robot = r.robot
    wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
    drive(r, 0.3, delta=0.0)
    with robot.lock:
        target = list(robot.pose)
        before = len(robot.outputs)
    target[3] = float("nan")
    robot.command(target)
    wait_for(lambda: r.safety.monitor.counters.rejected >= 1, 5.0, "the NaN command to be rejected")
    wait_for(lambda: robot.status() in ("REJECTED", "HOLD"), 5.0, "/safety/state REJECTED (then HOLD)")
    with robot.lock:
        sent = [p for _, p in robot.outputs[before:]]
    assert all(math.isfinite(v) for p in sent for v in p), "NaN reached /joint_commands"


def test_parameters_are_read_only_while_running(running):
    """Limits and timeouts are read once at start: `ros2 param set` is refused, not silently ignored."""
    r = running
    client = r.robot.create_client(SetParameters, "/safety_node/set_parameters")
    assert client.wait_for_service(timeout_sec=5.0)
    request = SetParameters.Request()
    request.parameters = [Parameter("velocity_scale", value=0.5).to_parameter_msg()]
    future = client.call_async(request)
    wait_for(future.done, 5.0, "the set_parameters reply")
    (result,) = future.result().results
    assert not result.successful
    assert "read-only" in result.reason
    assert r.safety.get_parameter("velocity_scale").value == 1.0
