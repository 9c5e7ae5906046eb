"""Embedded simulator speed: physics steps/s, camera frames/s, and the ROS bridge's real-time factor.

    python bench/sim_perf.py            # full run
    python bench/sim_perf.py --quick    # shorter windows
1. Physics: stepping a full scene (Panda + blocks + bowl) with the arm holding a pose, no rendering.
2. Camera: ER_TINY_RENDERER (CPU) frames/s at 224x224 and 640x480 (front camera).
3. ROS bridge: sim_node as a separate process in real-time mode (camera 15 Hz at 224x224, joint states
   100 Hz); this script counts /joint_states, /camera/image_raw and /clock over a window and reports the
   real-time factor (simulated seconds per wall second, from /clock) and the delivered rates.
Last line: one JSON object with the figures. Run it with ROS_DOMAIN_ID set to a domain of your own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from vla_sim.scene import CameraConfig, Scene
from vla_sim.tasks import sample_task


def physics_steps_per_s(seconds: float) -> float:
    scene = Scene()
    rng = np.random.default_rng(0)
    scene.reset(sample_task("stack_two", rng), rng)
    scene.set_command(scene.command)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        scene.step_physics(240)
        steps += 240
    rate = steps / (time.perf_counter() - started)
    scene.close()
    return rate


def camera_fps(width: int, height: int, seconds: float) -> float:
    scene = Scene()
    rng = np.random.default_rng(0)
    scene.reset(sample_task("place", rng), rng)
    camera = CameraConfig(width=width, height=height)
    scene.render(camera)  # warm-up
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        scene.render(camera)
        frames += 1
    rate = frames / (time.perf_counter() - started)
    scene.close()
    return rate


def bridge(seconds: float) -> dict[str, float]:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_sim.sim_node",
            "--ros-args",
            "-p",
            "task:=stack",
            "-p",
            "camera_rate:=15.0",
            "-p",
            "joint_state_rate:=100.0",
            "-p",
            "camera_width:=224",
            "-p",
            "camera_height:=224",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    rclpy.init()
    node = Node("sim_perf_probe")
    counts = {"joint_states": 0, "images": 0}
    clock: list[float] = []
    node.create_subscription(
        JointState,
        "/joint_states",
        lambda _m: counts.__setitem__("joint_states", counts["joint_states"] + 1),
        qos_profile_sensor_data,
    )
    node.create_subscription(
        Image,
        "/camera/image_raw",
        lambda _m: counts.__setitem__("images", counts["images"] + 1),
        qos_profile_sensor_data,
    )
    node.create_subscription(
        Clock, "/clock", lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 10
    )
    try:
        deadline = time.monotonic() + 30
        while not clock and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        if not clock:
            raise RuntimeError("sim_node published no /clock within 30 s")
        for _ in range(20):  # settle: let discovery and the first frames pass
            rclpy.spin_once(node, timeout_sec=0.05)
        counts.update(joint_states=0, images=0)
        sim_start, wall_start = clock[-1], time.monotonic()
        while time.monotonic() - wall_start < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        wall = time.monotonic() - wall_start
        sim = clock[-1] - sim_start
    finally:
        node.destroy_node()
        rclpy.shutdown()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return {
        "real_time_factor": sim / wall,
        "joint_states_hz": counts["joint_states"] / wall,
        "camera_hz": counts["images"] / wall,
        "window_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short measuring windows")
    parser.add_argument("--no-ros", action="store_true", help="skip the ROS bridge measurement")
    args = parser.parse_args()
    window = 2.0 if args.quick else 5.0
    figures: dict[str, object] = {
        "physics_steps_per_s": physics_steps_per_s(window),
        "camera_fps_224x224": camera_fps(224, 224, window),
        "camera_fps_640x480": camera_fps(640, 480, window),
    }
    if not args.no_ros:
        figures["bridge"] = bridge(5.0 if args.quick else 15.0)
    print(f"{'measure':<34} {'value':>10}")
    print(f"{'physics steps/s (240 Hz = 1x)':<34} {figures['physics_steps_per_s']:>10.0f}")
    print(f"{'camera frames/s 224x224 (tiny)':<34} {figures['camera_fps_224x224']:>10.1f}")
    print(f"{'camera frames/s 640x480 (tiny)':<34} {figures['camera_fps_640x480']:>10.1f}")
    if "bridge" in figures:
        b = figures["bridge"]
        print(f"{'bridge real-time factor':<34} {b['real_time_factor']:>10.3f}")
        print(f"{'bridge /joint_states Hz (100)':<34} {b['joint_states_hz']:>10.1f}")
        print(f"{'bridge /camera/image_raw Hz (15)':<34} {b['camera_hz']:>10.1f}")
    print(json.dumps({"benchmark": "sim_perf", "cpu_count": os.cpu_count(), **figures}))


if __name__ == "__main__":
    main()
