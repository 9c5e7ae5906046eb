"""The shipped Fast DDS profile carries 640x480 rgb8 at 30 Hz between two processes without loss.

Heavy (about 15 s): run with  python -m pytest test -m heavy  or  scripts/test.sh --pytest-args -m heavy.
bench/perception_transport.py measures the same for 60 s, side by side with the default transport.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "fastdds_profile.xml")

SUBSCRIBER = r"""
import json, sys, threading
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from vla_perception.codec import image_to_rgb8
from vla_perception.pattern import read_counter

rclpy.init()
node = rclpy.create_node("transport_test_subscriber")
seen = set()
node.create_subscription(Image, "/transport_test_camera/image_raw",
                         lambda m: seen.add(read_counter(image_to_rgb8(m))), qos_profile_sensor_data)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
executor = SingleThreadedExecutor()
executor.add_node(node)
print("READY", flush=True)
while not stop.is_set():
    executor.spin_once(timeout_sec=0.1)
print(json.dumps({"received": len(seen), "span": max(seen) - min(seen) + 1 if seen else 0}), flush=True)
"""


@pytest.mark.heavy
@pytest.mark.ros
def test_profile_carries_vga_rgb8_at_30hz_between_processes():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTDDS_", "FASTRTPS_"))}
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = os.path.normpath(PROFILE)
    sub = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    exe = shutil.which("camera_node")
    command = ([exe] if exe else [sys.executable, "-m", "vla_perception.camera_node"]) + [
        "--ros-args",
        "-r",
        "__node:=transport_test_camera",
        "--log-level",
        "warn",
        "-p",
        "camera_name:=transport_test",
        "-p",
        "width:=640",
        "-p",
        "height:=480",
        "-p",
        "fps:=30.0",
    ]
    camera = None
    try:
        assert sub.stdout.readline().strip() == "READY"
        camera = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(10.0)
        camera.send_signal(signal.SIGINT)
        assert camera.wait(timeout=15) == 0
        out, err = sub.communicate(input="", timeout=30)
    finally:
        for proc in (camera, sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["span"] >= 150, (result, err[-2000:])  # at least 5 s of 30 Hz after discovery
    assert result["received"] / result["span"] >= 0.99, result
