"""policy_node notices dropped camera frames: a camera throttled to 50 % of its CameraInfo rate, through real
topics, gives one warning naming the fix and /diagnostics WARN; at full rate again, OK.

(collector_node's twin of this test is in vla_collector's test_collector_node.py.) The policy behind the node
is served by vla-serve's PolicyServer (remote backend), so no model is trained or loaded here.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest  # noqa: E402
from vla_perception.codec import numpy_to_image  # noqa: E402
from vla_policy.serve import PolicyServer  # noqa: E402

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")
TOKEN = "frame-drop-test-token"
POLICY = "policy_node: policy"


class IdlePolicy:
    """Never asked: without /joint_states the node holds before its first inference."""

    def reset(self):
        pass

    def infer(self, observation):
        raise AssertionError("no inference expected in this test")


class ThrottledCamera:
    """20 Hz: CameraInfo for every frame, the image for every frame or (throttled) every other one."""

    def __init__(self, node, rate_hz=20.0):
        self.image_pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        self.node, self.period = node, 1.0 / rate_hz
        self.throttled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        pixels = np.zeros((48, 64, 3), np.uint8)
        k, next_t = 0, time.monotonic()
        while not self._stop.is_set():
            stamp = self.node.get_clock().now().to_msg()
            if not self.throttled or k % 2 == 0:
                self.image_pub.publish(numpy_to_image(pixels, "rgb8", stamp))
            info = CameraInfo(width=64, height=48)
            info.header.stamp = stamp
            self.info_pub.publish(info)
            k += 1
            next_t = max(next_t + self.period, time.monotonic())
            time.sleep(max(0.0, next_t - time.monotonic()))


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout} s still waiting for {what}")
        time.sleep(0.05)


def test_policy_node_warns_once_when_half_the_frames_arrive():
    manifest = EmbodimentManifest(
        robot_type="panda",
        joint_names=JOINTS,
        action_names=JOINTS,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=(CameraSpec("front", 48, 64),),
        joint_units=tuple("m" if "finger" in j else "rad" for j in JOINTS),
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("policy_frame_rate_test", context=context)
    reports = []  # (level, message, values) of every policy status, in order

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name == POLICY:
                reports.append((status.level, status.message, {kv.key: kv.value for kv in status.values}))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def check():
        return reports[-1][2].get("front_frame_rate_check") if reports else None

    proc = None
    try:
        with PolicyServer(IdlePolicy(), manifest, TOKEN, host="127.0.0.1", port=0) as server:
            args = [
                sys.executable, "-m", "vla_policy.policy_node", "--ros-args",
                "-p", "backend:=remote", "-p", f"remote_uri:=ws://127.0.0.1:{server.port}",
            ]  # fmt: skip
            env = {**os.environ, "VLA_REMOTE_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            with ThrottledCamera(node) as camera:
                wait_for(
                    lambda: check() == "ok" or proc.poll() is not None, 60, "the full-rate camera judged ok"
                )
                assert proc.poll() is None, proc.communicate()[0]
                camera.throttled = True
                low_from = len(reports)
                wait_for(lambda: check() == "low", 30, "the throttled camera judged low")
                wait_for(lambda: len(reports) >= low_from + 4, 30, "more reports while throttled")
                level, message, values = reports[-1]
                # WARN (not the holding-for-/joint_states WARN alone): the message names the lost frames
                assert level == DiagnosticStatus.WARN and "frames/s arrive" in message, reports[-1]
                assert 0.35 <= float(values["front_received_ratio"]) <= 0.65, values
                camera.throttled = False
                wait_for(lambda: check() == "ok", 30, "the camera at full rate again judged ok")
                assert "frames/s arrive" not in reports[-1][1], reports[-1]
    finally:
        output = ""
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                output, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate(timeout=10)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    checks = [r[2].get("front_frame_rate_check") for r in reports]
    # the node logs as it reports, so each turn to low in the report sequence is one warning: once per change
    into_low = sum(1 for a, b in itertools.pairwise(checks) if b == "low" and a != "low")
    warnings = [line for line in output.splitlines() if "frames are lost before this node" in line]
    assert len(warnings) == into_low >= 1, (checks, warnings)
    assert "WARN" in warnings[0] and "/camera/image_raw" in warnings[0]
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" in warnings[0] and "vla-up" in warnings[0]
