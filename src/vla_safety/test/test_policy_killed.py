"""Fault test: the policy is a real process; SIGKILL it mid-motion and the robot must come to rest within the
command timeout plus the braking time, holding where it stopped (never an old target)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from ros_harness import HOME, Running, wait_for

pytestmark = pytest.mark.ros
COMMAND_TIMEOUT = 0.25


@pytest.fixture(scope="module", autouse=True)
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_robot_holds_within_the_timeout_when_the_policy_process_dies():
    r = Running(heartbeat=False, command_timeout=COMMAND_TIMEOUT, heartbeat_timeout=0.5)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("policy_process.py"))])
    try:
        robot = r.robot
        wait_for(lambda: r.safety.monitor.armed, 10.0, "arming")
        wait_for(lambda: robot.pose[0] > HOME[0] + 0.05, 20.0, "the policy process moving joint 1")
        with robot.lock:
            at_kill = robot.pose[0]
        proc.kill()
        killed = time.monotonic()
        took = wait_for(lambda: robot.status() == "HOLD", 3.0, "HOLD after the policy died")
        print(f"HOLD reported {took:.3f} s after SIGKILL (command_timeout {COMMAND_TIMEOUT} s)")
        assert took < COMMAND_TIMEOUT + 0.5, f"hold took {took:.3f} s"
        time.sleep(0.6)
        with robot.lock:
            after = [p[0] for t, p in robot.outputs if t > killed]
            rest = [p for t, p in robot.outputs if t > killed + took + 0.3]
        # Without new commands only the braking ramp moves it: 0.3 rad/s for at most the timeout + v^2/2a.
        assert max(after) - at_kill < 0.3 * (COMMAND_TIMEOUT + 0.3) + 0.01
        assert len(rest) >= 5 and all(p == rest[-1] for p in rest), "not holding still"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        r.close()
