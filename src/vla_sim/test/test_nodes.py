"""sim_node and expert_node over real ROS topics: as separate processes, and sim_node driven by this test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_STATE_JOINTS
from vla_perception.codec import image_to_numpy

from vla_sim import robot

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class Probe:
    """A test node that records the simulator's outputs, spun in a background thread."""

    def __init__(self, *extra_nodes: Node) -> None:
        self.node = Node("sim_test_probe")
        self.lock = threading.RLock()
        self.joint_states: list[JointState] = []
        self.images: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.success: list[bool] = []
        self.instructions: list[str] = []
        self.scenes: list[dict] = []
        self.diagnostics: list[dict[str, str]] = []
        n = self.node
        n.create_subscription(
            JointState, "/joint_states", self._keep(self.joint_states), qos_profile_sensor_data
        )
        n.create_subscription(Image, "/camera/image_raw", self._keep(self.images), qos_profile_sensor_data)
        n.create_subscription(
            CameraInfo, "/camera/camera_info", self._keep(self.infos), qos_profile_sensor_data
        )
        n.create_subscription(Bool, "/sim/success", lambda m: self._add(self.success, m.data), LATCHED)
        n.create_subscription(
            String, "/task_instruction", lambda m: self._add(self.instructions, m.data), LATCHED
        )
        n.create_subscription(
            String, "/sim/scene", lambda m: self._add(self.scenes, json.loads(m.data)), LATCHED
        )
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        for node in (self.node, *extra_nodes):
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _add(self, store: list, value) -> None:
        with self.lock:
            store.append(value)

    def _keep(self, store: list) -> Callable:
        return lambda msg: self._add(store, msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "simulator" in status.name:
                self._add(self.diagnostics, {kv.key: kv.value for kv in status.values})

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def latest_positions(self) -> np.ndarray:
        with self.lock:
            msg = self.joint_states[-1]
        return np.array([dict(zip(msg.name, msg.position, strict=True))[n] for n in PANDA_COMMAND_JOINTS])

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def spawn(module: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"vla_sim.{module}", "--ros-args", *ros_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.stderr.read().decode(errors="replace") if process.stderr else ""


SMALL_CAMERA = ("-p", "camera_rate:=5.0", "-p", "camera_width:=64", "-p", "camera_height:=48")


def test_sim_and_expert_processes_reach_success_in_real_time(ros):
    sim = spawn("sim_node", "-p", "task:=pick up the red block", "-p", "seed:=4", *SMALL_CAMERA)
    expert = spawn("expert_node")
    probe = Probe()
    try:
        probe.wait_for(lambda: probe.instructions == ["pick up the red block"], 30, "the instruction")
        probe.wait_for(lambda: any(probe.success), 60, "success on /sim/success")
        probe.wait_for(lambda: probe.images and probe.infos, 5, "camera frames")
        with probe.lock:
            state, image, info = probe.joint_states[-1], probe.images[-1], probe.infos[-1]
        assert list(state.name) == list(PANDA_STATE_JOINTS)
        assert len(state.velocity) == 9 and state.position[7] == pytest.approx(state.position[8], abs=2e-3)
        pixels = image_to_numpy(image)
        assert pixels.shape == (48, 64, 3) and image.encoding == "rgb8" and pixels.std() > 5
        assert (info.width, info.height) == (64, 48) and info.k[0] > 0
        probe.wait_for(
            lambda: (
                probe.diagnostics
                and probe.diagnostics[-1]["success"] == "true"
                and int(probe.diagnostics[-1]["commands_accepted"]) > 0
            ),
            5,
            "success and accepted commands on /diagnostics",
        )
    finally:
        probe.close()
        logs = stop(expert) + stop(sim)
    assert "Traceback" not in logs, logs


def test_lockstep_sim_with_expert_on_sim_time(ros):
    sim = spawn("sim_node", "-p", "mode:=lockstep", "-p", "task:=stack", "-p", "seed:=2", *SMALL_CAMERA)
    expert = spawn("expert_node", "-p", "use_sim_time:=true")
    probe = Probe()
    try:
        probe.wait_for(lambda: probe.scenes, 30, "the scene description")
        probe.wait_for(lambda: any(probe.success), 90, "success on /sim/success")
    finally:
        probe.close()
        logs = stop(expert) + stop(sim)
    assert "Traceback" not in logs, logs


def _parameter(name: str, value: str) -> Parameter:
    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))


def _call(node: Node, client, request, timeout: float = 10.0):
    if not client.wait_for_service(timeout_sec=timeout):
        raise AssertionError(f"service {client.srv_name} not available")
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not future.done():
        raise AssertionError(f"no answer from {client.srv_name}")
    return future.result()


def test_commands_services_and_rejections_through_topics(ros):
    from vla_sim.sim_node import SimNode

    sim = SimNode(
        parameter_overrides=[
            rclpy.parameter.Parameter("camera_rate", value=2.0),
            rclpy.parameter.Parameter("camera_width", value=40),
            rclpy.parameter.Parameter("camera_height", value=30),
            rclpy.parameter.Parameter("wrist_camera", value=True),
        ]
    )
    probe = Probe(sim)
    node = probe.node
    wrist: list[Image] = []
    node.create_subscription(
        Image, "/wrist_camera/image_raw", lambda m: probe._add(wrist, m), qos_profile_sensor_data
    )
    commands = node.create_publisher(JointState, "/joint_commands", 10)
    arrays = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    trajectories = node.create_publisher(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10)
    set_task = node.create_publisher(String, "/sim_node/set_task", 10)
    reset = node.create_client(Trigger, "/sim_node/reset")
    set_parameters = node.create_client(SetParameters, "/sim_node/set_parameters")
    try:
        probe.wait_for(lambda: len(probe.joint_states) > 5, 15, "joint states")
        home = probe.latest_positions()
        # Bad commands: rejected, counted, and the arm holds still.
        for bad in (
            JointState(name=["panda_joint1", "shoulder_pan_joint"], position=[0.5, 0.5]),
            JointState(name=["panda_joint1"], position=[float("nan")]),
            JointState(name=["panda_joint1", "panda_joint2"], position=[0.5]),
        ):
            commands.publish(bad)
        arrays.publish(Float64MultiArray(data=[0.5] * 7))
        probe.wait_for(
            lambda: probe.diagnostics and int(probe.diagnostics[-1]["commands_rejected"]) >= 4,
            10,
            "4 rejections",
        )
        np.testing.assert_allclose(probe.latest_positions(), home, atol=2e-3)

        # JointState by name (a subset), then an array, then a trajectory.
        commands.publish(JointState(name=["panda_joint1"], position=[0.4]))
        probe.wait_for(lambda: abs(probe.latest_positions()[0] - 0.4) < 0.01, 10, "joint1 at 0.4")
        target = home.copy()
        target[0], target[7] = -0.2, 0.01
        arrays.publish(Float64MultiArray(data=target.tolist()))
        probe.wait_for(lambda: np.allclose(probe.latest_positions(), target, atol=0.01), 10, "array target")
        trajectory = JointTrajectory(joint_names=["panda_joint1", "panda_joint2"])
        trajectory.points = [
            JointTrajectoryPoint(positions=[0.0, -0.5], time_from_start=Duration(sec=0, nanosec=300_000_000)),
            JointTrajectoryPoint(positions=[0.2, -0.4], time_from_start=Duration(sec=0, nanosec=600_000_000)),
        ]
        trajectories.publish(trajectory)
        probe.wait_for(
            lambda: np.allclose(probe.latest_positions()[:2], [0.2, -0.4], atol=0.01),
            10,
            "trajectory end point",
        )

        # Task parameter + reset service; a bad task is refused.
        answer = _call(
            node, set_parameters, SetParameters.Request(parameters=[_parameter("task", "fly to the moon")])
        )
        assert not answer.results[0].successful
        answer = _call(
            node,
            set_parameters,
            SetParameters.Request(parameters=[_parameter("task", "put the red block in the bowl")]),
        )
        assert answer.results[0].successful
        response = _call(node, reset, Trigger.Request())
        assert response.success and response.message == "put the red block in the bowl"
        probe.wait_for(
            lambda: probe.instructions[-1:] == ["put the red block in the bowl"], 5, "new instruction"
        )
        probe.wait_for(
            lambda: "red" in probe.scenes[-1]["objects"] and "bowl" in probe.scenes[-1]["objects"], 5, "scene"
        )
        np.testing.assert_allclose(probe.latest_positions(), robot.HOME_POSITIONS, atol=0.01)  # arm back home

        probe.wait_for(lambda: wrist, 10, "a wrist camera frame")
        assert image_to_numpy(wrist[-1]).shape == (30, 40, 3)

        set_task.publish(String(data="push"))
        probe.wait_for(lambda: probe.scenes[-1]["family"] == "push", 10, "a push task after ~/set_task")
        assert probe.instructions[-1] == probe.scenes[-1]["instruction"]
    finally:
        probe.close()
        sim.destroy_node()


def _double(name: str, value: float) -> Parameter:
    return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))


def test_camera_rate_changes_at_runtime_and_zero_stops_the_camera(ros):
    """camera_rate through ~/set_parameters: 0 stops the frames (a camera failure), a rate brings them back;
    a negative rate or one above physics_hz is refused and the camera keeps its rate."""
    from vla_sim.sim_node import SimNode

    sim = SimNode(
        parameter_overrides=[
            rclpy.parameter.Parameter("camera_rate", value=10.0),
            rclpy.parameter.Parameter("camera_width", value=32),
            rclpy.parameter.Parameter("camera_height", value=24),
        ]
    )
    probe = Probe(sim)
    set_parameters = probe.node.create_client(SetParameters, "/sim_node/set_parameters")

    def frames() -> int:
        with probe.lock:
            return len(probe.images)

    try:
        probe.wait_for(lambda: len(probe.images) > 3, 20, "camera frames at 10 Hz")
        for bad in (-1.0, 1000.0):
            answer = _call(
                probe.node, set_parameters, SetParameters.Request(parameters=[_double("camera_rate", bad)])
            )
            assert not answer.results[0].successful and "camera_rate" in answer.results[0].reason
        assert sim.config.camera_rate == 10.0 and sim.get_parameter("camera_rate").value == 10.0

        # All or nothing: a valid task beside a bad camera rate in one atomic request changes neither.
        from rcl_interfaces.srv import SetParametersAtomically

        atomically = probe.node.create_client(SetParametersAtomically, "/sim_node/set_parameters_atomically")
        task_before = sim.task_request
        answer = _call(
            probe.node,
            atomically,
            SetParametersAtomically.Request(
                parameters=[_parameter("task", "put the red block in the bowl"), _double("camera_rate", -1.0)]
            ),
        )
        assert not answer.result.successful and "camera_rate" in answer.result.reason
        assert (
            sim.task_request == task_before
            and sim.get_parameter("task").value != "put the red block in the bowl"
        )
        assert sim.config.camera_rate == 10.0

        answer = _call(
            probe.node, set_parameters, SetParameters.Request(parameters=[_double("camera_rate", 0.0)])
        )
        assert answer.results[0].successful, answer.results[0].reason
        assert sim.get_parameter("camera_rate").value == 0.0
        # Frames rendered before the switch may still be on the way: let 0.2 s of joint states pass first.
        states_at = len(probe.joint_states)
        probe.wait_for(lambda: len(probe.joint_states) > states_at + 20, 20, "0.2 s of joint states")
        stopped_at, states_at = frames(), len(probe.joint_states)
        probe.wait_for(lambda: len(probe.joint_states) > states_at + 100, 20, "1 s of joint states")
        assert frames() == stopped_at, "camera frames kept coming after camera_rate:=0"

        answer = _call(
            probe.node, set_parameters, SetParameters.Request(parameters=[_double("camera_rate", 10.0)])
        )
        assert answer.results[0].successful, answer.results[0].reason
        probe.wait_for(lambda: len(probe.images) > stopped_at + 3, 20, "frames again after camera_rate:=10")
    finally:
        probe.close()
        sim.destroy_node()
