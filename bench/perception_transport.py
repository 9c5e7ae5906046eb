"""Camera-sized images between two processes: how many arrive, per DDS transport setting.

640x480 rgb8 (921,600 bytes) at 30 Hz, sensor-data QoS (best effort, keep last 5), one publisher process
and one subscriber process, for each transport configuration side by side:

  default     Fast DDS built-in transports (UDPv4 + shared memory with its 512 KB default segment)
  large_data  FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (UDP for discovery only; SHM + TCP for data)
  profile     FASTRTPS_DEFAULT_PROFILES_FILE=src/vla_perception/config/fastdds_profile.xml
              (the documented setting: a 16 MB shared-memory segment plus UDPv4)
  (+ any --env NAME=VALUE configuration given on the command line)
  camera_node+profile   the real camera_node (test pattern) as the publisher, with the profile; frames
              counted by the counter drawn into each frame

Latency is receive time minus header stamp (both ROS time on one host).

Usage: python bench/perception_transport.py [--quick] [--seconds S] [--rate HZ]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

WIDTH, HEIGHT = 640, 480
PROFILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "src", "vla_perception", "config", "fastdds_profile.xml"
)
CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "large_data": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
    # the documented setting: the workspace's env script exports this
    "profile": {"FASTRTPS_DEFAULT_PROFILES_FILE": os.path.normpath(PROFILE)},
}
TRANSPORT_VARS = (
    "FASTDDS_BUILTIN_TRANSPORTS",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_DEFAULT_PROFILES_FILE",
)


def run_publisher(seconds: float, rate: float, topic: str) -> None:
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from vla_perception.codec import numpy_to_image

    rclpy.init()
    node = rclpy.create_node("bench_image_publisher")
    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    if pub.get_subscription_count() < 1:
        print(json.dumps({"error": "no subscriber matched within 20 s"}), flush=True)
        sys.exit(2)
    time.sleep(1.0)  # let discovery settle on both sides (SHM/TCP locators)
    frames = [np.full((HEIGHT, WIDTH, 3), value, np.uint8) for value in (40, 120, 200)]
    count = int(seconds * rate)
    period = 1.0 / rate
    start = time.monotonic()
    late = 0
    for seq in range(count):
        target = start + seq * period
        now = time.monotonic()
        if now < target:
            time.sleep(target - now)
        elif now - target > period:
            late += 1
        msg = numpy_to_image(
            frames[seq % 3], "rgb8", stamp=node.get_clock().now().to_msg(), frame_id=f"bench_{seq}"
        )
        pub.publish(msg)
    elapsed = time.monotonic() - start
    time.sleep(1.0)  # keep the writer alive while the last samples drain
    print(json.dumps({"published": count, "elapsed_s": elapsed, "late": late}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(topic: str, pattern: bool) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from vla_perception.codec import image_to_rgb8
    from vla_perception.pattern import read_counter

    rclpy.init()
    node = rclpy.create_node("bench_image_subscriber")
    seqs: set[int] = set()
    stamps: dict[int, int] = {}
    latencies: list[float] = []
    sizes_ok = [True]

    def on_image(msg: Image) -> None:
        now_ns = node.get_clock().now().nanoseconds
        # camera_node frames carry their counter in the test pattern; the bench publisher's in frame_id
        seq = read_counter(image_to_rgb8(msg)) if pattern else int(msg.header.frame_id.removeprefix("bench_"))
        seqs.add(seq)
        stamps[seq] = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        latencies.append((now_ns - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)
        sizes_ok[0] &= len(msg.data) == WIDTH * HEIGHT * 3

    node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    latencies.sort()
    pick = (
        (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))])
        if latencies
        else (lambda q: None)
    )
    print(
        json.dumps(
            {
                "received": len(seqs),
                "span": (max(seqs) - min(seqs) + 1) if seqs else 0,
                # publish rate from the stamps of the first and last frame seen
                "stamped_hz": (max(seqs) - min(seqs)) / ((stamps[max(seqs)] - stamps[min(seqs)]) / 1e9)
                if len(seqs) > 1 and stamps[max(seqs)] > stamps[min(seqs)]
                else 0.0,
                "latency_ms_p50": pick(0.5),
                "latency_ms_p95": pick(0.95),
                "sizes_ok": sizes_ok[0],
            }
        ),
        flush=True,
    )
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in output:\n{text[-2000:]}")


def measure(name: str, extra_env: dict[str, str], seconds: float, rate: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TRANSPORT_VARS}
    env.update(extra_env)
    topic = "/bench/perception_transport/" + "".join(c if c.isalnum() else "_" for c in name)
    script = os.path.abspath(__file__)
    sub = subprocess.Popen(
        [sys.executable, script, "--role", "sub", "--topic", topic],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if sub.stdout is None or sub.stdout.readline().strip() != "READY":
            raise RuntimeError(f"subscriber did not start: {sub.stdout.read() if sub.stdout else ''}")
        pub = subprocess.run(
            [
                sys.executable,
                script,
                "--role",
                "pub",
                "--topic",
                topic,
                "--seconds",
                str(seconds),
                "--rate",
                str(rate),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        published = last_json(pub.stdout)
        sub_out, _ = sub.communicate(input="", timeout=30)
        received = last_json(sub_out)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(timeout=10)
    if "error" in published:
        raise RuntimeError(f"{name}: {published['error']}")
    ratio = received["received"] / published["published"]
    return {
        "config": name,
        "env": extra_env,
        **published,
        **received,
        "ratio": ratio,
        "achieved_hz": published["published"] / published["elapsed_s"],
    }


def measure_camera_node(name: str, extra_env: dict[str, str], seconds: float, rate: float) -> dict:
    """The real camera_node (test pattern) as the publisher; 'published' is the span of frame counters
    the subscriber saw (first to last), so frames lost before the first or after the last are not counted."""
    env = {k: v for k, v in os.environ.items() if k not in TRANSPORT_VARS}
    env.update(extra_env)
    script = os.path.abspath(__file__)
    topic = "/bench_camera/image_raw"
    sub = subprocess.Popen(
        [sys.executable, script, "--role", "sub", "--topic", topic, "--pattern"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    camera = None
    try:
        if sub.stdout is None or sub.stdout.readline().strip() != "READY":
            raise RuntimeError("subscriber did not start")
        exe = shutil.which("camera_node")
        command = [exe] if exe else [sys.executable, "-m", "vla_perception.camera_node"]
        params = {"camera_name": "bench", "width": WIDTH, "height": HEIGHT, "fps": rate}
        command += ["--ros-args", "-r", "__node:=bench_camera", "--log-level", "warn"]
        for key, value in params.items():
            command += ["-p", f"{key}:={value}"]
        camera = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(seconds + 2.0)  # about 2 s of it is discovery
        camera.send_signal(signal.SIGINT)
        camera.wait(timeout=15)
        time.sleep(0.5)
        sub_out, _ = sub.communicate(input="", timeout=30)
        received = last_json(sub_out)
    finally:
        for proc in (camera, sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    span = received["span"]
    return {
        "config": name,
        "env": extra_env,
        "published": span,
        **received,
        "ratio": received["received"] / span if span else 0.0,
        "achieved_hz": received["stamped_hz"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("main", "pub", "sub"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="/bench/image", help=argparse.SUPPRESS)
    parser.add_argument("--pattern", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-camera-node",
        action="store_true",
        help="skip the row with the real camera_node as the publisher",
    )
    parser.add_argument("--quick", action="store_true", help="10 s per configuration instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument(
        "--only", choices=sorted(CONFIGS), action="append", help="run only these configurations"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a configuration with this variable",
    )
    args = parser.parse_args()
    if args.role == "pub":
        run_publisher(args.seconds, args.rate, args.topic)
        return
    if args.role == "sub":
        run_subscriber(args.topic, args.pattern)
        return
    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 60.0)
    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    for item in args.env:
        key, _, value = item.partition("=")
        configs[f"{key}={value}"] = {key: value}
    results = [measure(name, env, seconds, args.rate) for name, env in configs.items()]
    if not args.no_camera_node:
        results.append(measure_camera_node("camera_node+profile", CONFIGS["profile"], seconds, args.rate))
    print(f"{WIDTH}x{HEIGHT} rgb8 at {args.rate:g} Hz for {seconds:g} s, sensor-data QoS, two processes")
    print(
        f"{'config':<40} {'published':>9} {'received':>9} {'ratio':>7} {'pub Hz':>7} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for r in results:
        p50 = f"{r['latency_ms_p50']:.1f}" if r["latency_ms_p50"] is not None else "-"
        p95 = f"{r['latency_ms_p95']:.1f}" if r["latency_ms_p95"] is not None else "-"
        print(
            f"{r['config']:<40} {r['published']:>9} {r['received']:>9} {r['ratio']:>7.3f} "
            f"{r['achieved_hz']:>7.1f} {p50:>7} {p95:>7}"
        )
    print(
        json.dumps(
            {
                "bench": "perception_transport",
                "seconds": seconds,
                "rate_hz": args.rate,
                "results": {r["config"]: {k: v for k, v in r.items() if k != "config"} for r in results},
            }
        )
    )


if __name__ == "__main__":
    main()
