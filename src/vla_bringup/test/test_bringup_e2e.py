"""vla-up starts the real sim plan: simulator, safety monitor and scripted expert as separate processes talking
over real topics; an observer sees the traffic, then SIGINT stops everything cleanly."""

import os
import signal
import subprocess
import threading
import time

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")


def vla_up():
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        return os.path.join(get_package_prefix("vla_bringup"), "lib", "vla_bringup", "vla-up")
    except PackageNotFoundError:
        pytest.skip("needs the built workspace: source scripts/env.sh")


def test_vla_up_runs_the_sim_plan_and_stops_cleanly(tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    log = open(tmp_path / "stack.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [vla_up(), "sim", "commander:=expert", "task:=pick", "seed:=3", "--grace", "15"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    rclpy.init()
    node = rclpy.create_node("e2e_observer")
    seen = {"joint_states": 0, "joint_commands": 0, "images": 0, "instruction": ""}
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )

    def count(key):
        return lambda _msg: seen.__setitem__(key, seen[key] + 1)

    node.create_subscription(JointState, "/joint_states", count("joint_states"), qos_profile_sensor_data)
    node.create_subscription(JointState, "/joint_commands", count("joint_commands"), 10)
    node.create_subscription(Image, "/camera/image_raw", count("images"), qos_profile_sensor_data)
    node.create_subscription(
        String, "/task_instruction", lambda m: seen.__setitem__("instruction", m.data), latched
    )
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                seen["joint_states"] > 20
                and seen["joint_commands"] > 5
                and seen["images"] > 2
                and seen["instruction"]
            ):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "vla-up exited early:\n" + (tmp_path / "stack.log").read_text()[-3000:]
        assert seen["joint_states"] > 20, f"no /joint_states from sim_node: {seen}"
        assert seen["joint_commands"] > 5, f"no safe commands from safety_node: {seen}"
        assert seen["images"] > 2 and seen["instruction"], seen
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(10)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        log.close()
    text = (tmp_path / "stack.log").read_text()
    assert code == 0, "vla-up did not stop cleanly:\n" + text[-3000:]
    for name in ("sim_node", "safety_node", "expert_node"):
        assert f"started {name}" in text
    assert "exit codes:" in text
    stray = subprocess.run(
        ["pgrep", "-f", "lib/vla_sim/sim_node"], capture_output=True, text=True, check=False
    )
    assert str(proc.pid) not in stray.stdout
