"""Recording load: 2 cameras at 640x480 and 30 Hz plus joint states and commands at 100 Hz into collector_node.

The benchmark starts collector_node as its own process (as in deployment), calls ~/start, publishes for the
duration (60 s; --quick: 10 s) from this process, waits for in-flight messages, calls ~/stop and measures:

* frames recorded / published per camera (from the raw bag's metadata; target 1.0), and joint messages too
* the dataset episode: frames written vs. fps x duration, dropped frames, the real rate (from episode.json)
* CPU use of collector_node during recording (percent of one core; the machine has 2) and its peak RSS
* bytes per minute: the raw MCAP bag (lz4 chunks) and the dataset episode (parquet + AV1 mp4s)
* time to finalize: the ~/stop call (flush the encoders, write parquet/metadata, close the bag)

Frames are synthetic: a moving scene with sensor-like noise, pre-rendered so publishing costs little.
Images travel over Fast DDS shared memory with vla_perception's 16 MB segment profile
(src/vla_perception/config/fastdds_profile.xml): the default 512 KB segment drops most 640x480 frames.

Usage: python bench/collector_record.py [--quick] [--seconds S] [--codec libsvtav1|libx264] [--compression lz4|zstd|none]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml
from vla_common.robots import PANDA_COMMAND_JOINTS

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "src" / "vla_perception" / "config" / "fastdds_profile.xml"
JOINTS = list(PANDA_COMMAND_JOINTS)
CAMERAS = {"front": "/camera/image_raw", "wrist": "/wrist_camera/image_raw"}


def render_frames(count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for k in range(count):
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (xx * 255 // width).astype(np.uint8)
        img[..., 1] = (yy * 255 // height).astype(np.uint8)
        img[..., 2] = 90
        x0 = 40 + 10 * k
        img[200:280, x0 : x0 + 80] = (220, 30, 30)
        noise = rng.integers(-3, 4, size=img.shape, dtype=np.int16)
        frames.append(np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--codec", default="libsvtav1", choices=["libsvtav1", "libx264"])
    parser.add_argument(
        "--compression", default="lz4", choices=["lz4", "zstd", "none"], help="raw MCAP chunks"
    )
    parser.add_argument("--keep", action="store_true", help="keep the output directory")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", tempfile.gettempdir() + "/roslog_collector_bench")
    if PROFILE.is_file():
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import SetBool, Trigger
    from vla_perception.codec import numpy_to_image

    work = Path(tempfile.mkdtemp(prefix="collector_bench_"))
    dataset = work / "ds"
    node_cmd = [
        sys.executable, "-m", "vla_collector.collector_node", "--ros-args",
        "-p", f"dataset_root:={dataset}", "-p", "default_task:=benchmark",
        "-p", "cameras:=[front, wrist]", "-p", f"camera_topics:=[{CAMERAS['front']}, {CAMERAS['wrist']}]",
        "-p", f"video_codec:={args.codec}", "-p", "image_qos_depth:=30", "-p", f"mcap_compression:={args.compression}",
    ]  # fmt: skip
    collector = subprocess.Popen(node_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(collector.pid)

    rclpy.init()
    node = rclpy.create_node("collector_bench")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    image_pubs = {c: node.create_publisher(Image, t, qos_profile_sensor_data) for c, t in CAMERAS.items()}
    state_pub = node.create_publisher(JointState, "/joint_states", 100)
    cmd_pub = node.create_publisher(JointState, "/joint_commands", 100)
    frames = {c: [numpy_to_image(f) for f in render_frames(30, 480, 640, i)] for i, c in enumerate(CAMERAS)}

    def call(srv_type, name, request, timeout=600.0):
        client = node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"{name} not available: {collector.stderr.read() if collector.poll() else ''}")
        future = client.call_async(request)
        t0 = time.monotonic()
        while not future.done():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{name} timed out")
            time.sleep(0.005)
        return future.result(), time.monotonic() - t0

    published = {c: 0 for c in CAMERAS} | {"joint_states": 0, "joint_commands": 0}
    try:
        started, _ = call(Trigger, "/collector_node/start", Trigger.Request())
        if not started.success:
            raise RuntimeError(f"start failed: {started.message}")
        time.sleep(1.0)  # image subscriptions matched
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        peak_rss = 0
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            stamp = node.get_clock().now().to_msg()
            t = k * 0.01
            pos = [0.3 * np.sin(t + i) for i in range(8)]
            for pub, name, key in (
                (state_pub, JointState, "joint_states"),
                (cmd_pub, JointState, "joint_commands"),
            ):
                msg = name(name=JOINTS, position=pos if key == "joint_states" else [p + 0.01 for p in pos])
                msg.header.stamp = stamp
                pub.publish(msg)
                published[key] += 1
            if k % 10 in (0, 3, 6):  # 30 Hz
                for cam, pub in image_pubs.items():
                    img = frames[cam][published[cam] % 30]
                    img.header.stamp = stamp
                    pub.publish(img)
                    published[cam] += 1
            if k % 100 == 0:
                peak_rss = max(peak_rss, proc.memory_info().rss)
            k += 1
            time.sleep(max(0.0, t0 + k * 0.01 - time.monotonic()))
        time.sleep(0.2)  # in-flight messages
        stopped, finalize_s = call(SetBool, "/collector_node/stop", SetBool.Request(data=True))
        cpu1, wall1 = proc.cpu_times(), time.monotonic()
    finally:
        collector.send_signal(signal.SIGINT)
        try:
            collector.wait(30)
        except subprocess.TimeoutExpired:
            collector.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    raw = sorted((work / "ds.raw").glob("episode_*"))[-1]
    meta = yaml.safe_load((raw / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    recorded = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    episode = json.loads((raw / "episode.json").read_text())
    report = episode.get("report", {})
    raw_bytes = sum(f.stat().st_size for f in raw.glob("*.mcap"))
    data_bytes = sum(f.stat().st_size for f in dataset.rglob("*") if f.is_file() and "meta" not in f.parts)
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (wall1 - wall0) * 100
    minutes = seconds / 60
    ratios = {c: recorded.get(CAMERAS[c], 0) / max(1, published[c]) for c in CAMERAS}
    figures = {
        "seconds": seconds,
        "codec": args.codec,
        "mcap_compression": args.compression,
        "frames_recorded_over_published": {c: round(r, 4) for c, r in ratios.items()},
        "frames_recorded_over_published_min": round(min(ratios.values()), 4),
        "joint_states_recorded_over_published": round(
            recorded.get("/joint_states", 0) / published["joint_states"], 4
        ),
        "dataset_frames": report.get("frames"),
        "dataset_frames_expected": int(seconds * 10),
        "dataset_dropped_frames": report.get("dropped_frames"),
        "dataset_real_rate_hz": report.get("real_rate_hz"),
        "episode_verdict": report.get("verdict"),
        "collector_cpu_percent_of_one_core": round(cpu, 1),
        "collector_peak_rss_mb": round(peak_rss / 2**20, 1),
        "raw_mcap_mb_per_min": round(raw_bytes / 2**20 / minutes, 1),
        "dataset_mb_per_min": round(data_bytes / 2**20 / minutes, 2),
        "finalize_s": round(finalize_s, 3),
        "stop_ok": stopped.success,
    }
    print(
        f"collector_record: 2 x 640x480 rgb8 @ 30 Hz + joints @ 100 Hz for {seconds:.0f} s "
        f"(video {args.codec}, raw MCAP {args.compression})"
    )
    print(f"  {'camera':8s} {'published':>10s} {'recorded':>10s} {'ratio':>7s}")
    for cam, topic in CAMERAS.items():
        print(f"  {cam:8s} {published[cam]:10d} {recorded.get(topic, 0):10d} {ratios[cam]:7.4f}")
    print(
        f"  joint_states {published['joint_states']} published, {recorded.get('/joint_states', 0)} recorded"
    )
    print(
        f"  dataset episode: {report.get('frames')} frames (expected ~{int(seconds * 10)}), "
        f"{report.get('dropped_frames')} dropped, real rate {report.get('real_rate_hz')} Hz, {report.get('verdict')}"
    )
    print(f"  collector CPU {cpu:.0f}% of one core, peak RSS {peak_rss / 2**20:.0f} MB")
    print(
        f"  raw MCAP {raw_bytes / 2**20 / minutes:.0f} MB/min, dataset {data_bytes / 2**20 / minutes:.2f} MB/min"
    )
    print(f"  finalize (~/stop) {finalize_s:.2f} s: {stopped.message}")
    if args.keep:
        print(f"  output kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
