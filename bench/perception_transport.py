"""Camera-sized images between processes: what arrives, how late, at what CPU, per transport choice, and
through the real robot bringup with nothing exported.

Part 1, side by side: one publisher process, one subscriber process, 30 Hz, at 640x480 and at 1280x720:

  default     Fast DDS's built-in transports (UDPv4 + shared memory with its 512 KB default segment), raw
              sensor_msgs/Image, sensor-data QoS (best effort, keep last 5)
  profile     the same with src/vla_perception/config/fastdds_profile.xml (a 16 MB shared-memory segment):
              what vla-up and the launch files give every image process
  jpeg        default transports, sensor_msgs/CompressedImage: JPEG (quality 90) through vla_perception.codec,
              encoded by the publisher, decoded by the subscriber
  reliable    default transports, raw Image, reliable QoS (keep last 5)
  large_data  FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (only when asked for: --only large_data)

Frames are a pre-rendered moving scene with sensor-like noise, so JPEG costs what a camera's frames cost. The
subscriber turns every frame into an rgb8 array (image_to_rgb8 / compressed_to_numpy), as a consumer would.
Latency: receive time minus header stamp (ROS time, one host). CPU: percent of one core over the publishing
interval, publisher (its process time) and subscriber (psutil).

Part 1b, inside one process: two nodes (one rclpy context, as the repository's node tests have them, or two),
the publisher sending 640x480 rgb8 images at 30 Hz (best effort) and JointState at 100 Hz (reliable) from a
thread, the other node receiving them on its executor; default transports against the profile: the time a
publish() call takes and the delivery latency. (An earlier note said the profile stalls publishing between two
nodes of one process by ~120 ms per message; this measures it.)

Part 2, the real front end: ``vla-up robot camera_source:=<640x480 H.264 file> model:=<checkpoint>``, started with
no Fast DDS variable in its environment, a fake driver publishing /joint_states (100 Hz) and an instruction so
the policy runs. camera_node and policy_node are exactly what vla-up starts. Received/published is what
policy_node reports on /diagnostics (vla_perception.frame_rate): frames received against the camera's CameraInfo
received, over the same interval; camera_node's own published count is the cross-check (its reports come at
other instants: about +-1 s of frames). The control row exports FASTDDS_BUILTIN_TRANSPORTS=DEFAULT, a transport
of the user's own, which the bringup keeps: the frames then travel as they did before the bringup set it.
Without --model a tiny single-camera checkpoint is trained first (seconds); the weights do not matter here.

Everything runs in a private ROS domain (random, or --domain-id) on localhost: the fake driver must never reach
a real robot's domain.

Usage: python bench/perception_transport.py [--quick] [--seconds S] [--sizes 640x480,1280x720] [--only NAME]
                                            [--no-vla-up] [--model DIR]
(--sizes "" runs part 2 only.) The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_STATE_JOINTS

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "src" / "vla_perception" / "config" / "fastdds_profile.xml"
TRANSPORT_VARS = (
    "FASTDDS_BUILTIN_TRANSPORTS",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_DEFAULT_PROFILES_FILE",
)
JOINTS = list(PANDA_COMMAND_JOINTS)
HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02, 0.02)  # PANDA_STATE_JOINTS


@dataclass(frozen=True)
class Case:
    env: dict[str, str]
    jpeg: bool = False
    reliable: bool = False


CASES: dict[str, Case] = {
    "default": Case({}),
    "profile": Case({"FASTRTPS_DEFAULT_PROFILES_FILE": str(PROFILE)}),
    "jpeg": Case({}, jpeg=True),
    "reliable": Case({}, reliable=True),
    "large_data": Case({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}),
}
DEFAULT_CASES = ("default", "profile", "jpeg", "reliable")


def render_frames(count: int, width: int, height: int, seed: int = 0):
    """A moving red block on gradients with +-3 noise: JPEG sizes and costs like a camera's."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.empty((height, width, 3), np.uint8)
    base[..., 0] = (xx * 255 // width).astype(np.uint8)
    base[..., 1] = (yy * 255 // height).astype(np.uint8)
    base[..., 2] = 90
    frames = []
    side = height // 6
    for k in range(count):
        img = base.copy()
        x0 = (k * width // count) % (width - side)
        img[height // 2 - side // 2 : height // 2 + side // 2, x0 : x0 + side] = (220, 30, 30)
        noise = rng.integers(-3, 4, size=img.shape, dtype=np.int16)
        frames.append(np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def qos(reliable: bool):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if not reliable:
        return qos_profile_sensor_data
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


# --- part 1: the two roles, each in its own process ------------------------------------------------------------


def run_publisher(a: argparse.Namespace) -> None:
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image
    from vla_perception.codec import numpy_to_compressed, numpy_to_image

    width, height = a.width, a.height
    rclpy.init()
    node = rclpy.create_node("bench_image_publisher")
    pub = node.create_publisher(CompressedImage if a.jpeg else Image, a.topic, qos(a.reliable))
    frames = render_frames(30, width, height)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    if pub.get_subscription_count() < 1:
        print(json.dumps({"error": "no subscriber matched within 20 s"}), flush=True)
        sys.exit(2)
    time.sleep(1.0)  # let discovery settle on both sides (shared-memory locators)
    count, period = int(a.seconds * a.rate), 1.0 / a.rate
    late, payload = 0, 0
    print("START", flush=True)
    cpu0, start = time.process_time(), time.monotonic()
    for seq in range(count):
        target = start + seq * period
        now = time.monotonic()
        if now < target:
            time.sleep(target - now)
        elif now - target > period:
            late += 1
        stamp, frame_id = node.get_clock().now().to_msg(), f"bench_{seq}"
        if a.jpeg:
            msg = numpy_to_compressed(frames[seq % 30], "rgb8", "jpeg", 90, stamp=stamp, frame_id=frame_id)
        else:
            msg = numpy_to_image(frames[seq % 30], "rgb8", stamp=stamp, frame_id=frame_id)
        payload += len(msg.data)
        pub.publish(msg)
    elapsed, cpu = time.monotonic() - start, time.process_time() - cpu0
    print("DONE", flush=True)
    time.sleep(1.0)  # keep the writer alive while the last samples drain
    print(
        json.dumps(
            {
                "published": count,
                "elapsed_s": elapsed,
                "late": late,
                "pub_cpu_pct": 100.0 * cpu / elapsed,
                "bytes_per_frame": payload / max(count, 1),
            }
        ),
        flush=True,
    )
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(a: argparse.Namespace) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Image
    from vla_perception.codec import compressed_to_numpy, image_to_rgb8

    rclpy.init()
    node = rclpy.create_node("bench_image_subscriber")
    seqs: set[int] = set()
    latencies: list[float] = []
    sizes_ok = [True]

    def on_image(msg) -> None:
        now_ns = node.get_clock().now().nanoseconds
        frame = compressed_to_numpy(msg, "rgb8") if a.jpeg else image_to_rgb8(msg)  # what a consumer does
        seqs.add(int(msg.header.frame_id.removeprefix("bench_")))
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        latencies.append((now_ns - stamp_ns) / 1e6)
        sizes_ok[0] &= frame.shape == (a.height, a.width, 3)

    node.create_subscription(CompressedImage if a.jpeg else Image, a.topic, on_image, qos(a.reliable))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    latencies.sort()

    def pick(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    print(
        json.dumps(
            {
                "received": len(seqs),
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


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any Fast DDS transport setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in TRANSPORT_VARS}
    env.update(extra)
    return env


def measure(name: str, case: Case, width: int, height: int, seconds: float, rate: float) -> dict:
    import psutil

    env = clean_env(case.env)
    topic = f"/bench/perception_transport/{name}_{width}x{height}"
    script = str(Path(__file__).resolve())
    flags = ["--topic", topic, "--width", str(width), "--height", str(height)]
    flags += ["--jpeg"] * case.jpeg + ["--reliable"] * case.reliable
    sub = subprocess.Popen(
        [sys.executable, script, "--role", "sub", *flags],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pub = None
    try:
        if sub.stdout is None or sub.stdout.readline().strip() != "READY":
            raise RuntimeError(f"subscriber did not start: {sub.stdout.read() if sub.stdout else ''}")
        sub_proc = psutil.Process(sub.pid)
        pub = subprocess.Popen(
            [sys.executable, script, "--role", "pub", *flags, "--seconds", str(seconds), "--rate", str(rate)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        cpu = {}
        for line in pub.stdout or []:  # START and DONE bracket the publishing interval
            lines.append(line)
            marker = line.strip()
            if marker in ("START", "DONE"):
                times = sub_proc.cpu_times()
                cpu[marker] = (times.user + times.system, time.monotonic())
        pub.wait(timeout=30)
        published = last_json("".join(lines))
        sub_out, _ = sub.communicate(input="", timeout=30)
        received = last_json(sub_out)
    finally:
        for proc in (pub, sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    if "error" in published:
        raise RuntimeError(f"{name}: {published['error']}")
    sub_cpu = (
        100.0 * (cpu["DONE"][0] - cpu["START"][0]) / (cpu["DONE"][1] - cpu["START"][1])
        if "START" in cpu and "DONE" in cpu
        else None
    )
    return {
        "config": name,
        "size": f"{width}x{height}",
        "env": case.env,
        "message": "CompressedImage (jpeg 90)" if case.jpeg else "Image rgb8",
        "qos": "reliable" if case.reliable else "best_effort",
        **published,
        **received,
        "sub_cpu_pct": sub_cpu,
        "ratio": received["received"] / published["published"],
        "achieved_hz": published["published"] / published["elapsed_s"],
    }


def run_inprocess(a: argparse.Namespace) -> None:
    """Part 1b, in this process: the publisher node and the subscriber node, one or two rclpy contexts."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from vla_perception.codec import numpy_to_image

    contexts = [rclpy.Context() for _ in range(a.contexts)]
    for context in contexts:
        rclpy.init(context=context)
    pub_node = rclpy.create_node("bench_inprocess_publisher", context=contexts[0])
    sub_node = rclpy.create_node("bench_inprocess_subscriber", context=contexts[-1])
    joint_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = pub_node.create_publisher(Image, "/bench/inprocess/image", qos_profile_sensor_data)
    joint_pub = pub_node.create_publisher(JointState, "/bench/inprocess/joints", joint_qos)
    latency: dict[str, list[float]] = {"image": [], "joints": []}

    def receiver(kind: str):
        def on_message(msg) -> None:
            sent = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            latency[kind].append((sub_node.get_clock().now().nanoseconds - sent) / 1e6)

        return on_message

    sub_node.create_subscription(Image, "/bench/inprocess/image", receiver("image"), qos_profile_sensor_data)
    sub_node.create_subscription(JointState, "/bench/inprocess/joints", receiver("joints"), joint_qos)
    executor = SingleThreadedExecutor(context=contexts[-1])
    executor.add_node(sub_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + 20.0
    while min(image_pub.get_subscription_count(), joint_pub.get_subscription_count()) < 1:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no subscriber matched within 20 s"}), flush=True)
            sys.exit(2)
        time.sleep(0.05)
    time.sleep(1.0)
    frames = render_frames(30, 640, 480)
    calls: dict[str, list[float]] = {"image": [], "joints": []}
    sent = {"image": 0, "joints": 0}
    start, k = time.monotonic(), 0
    while time.monotonic() - start < a.seconds:
        stamp = pub_node.get_clock().now().to_msg()
        messages = [("joints", joint_pub, JointState(name=JOINTS, position=[0.1] * len(JOINTS)))]
        if k % 3 == 0:  # 100 Hz joints, 33 Hz images
            messages.append(("image", image_pub, numpy_to_image(frames[(k // 3) % 30], "rgb8")))
        for kind, pub, msg in messages:
            msg.header.stamp = stamp
            t0 = time.perf_counter()
            pub.publish(msg)
            calls[kind].append((time.perf_counter() - t0) * 1e3)
            sent[kind] += 1
        k += 1
        time.sleep(max(0.0, start + k * 0.01 - time.monotonic()))
    time.sleep(0.5)
    out = {}
    for kind in ("image", "joints"):
        c, lat = sorted(calls[kind]), sorted(latency[kind])
        out[kind] = {
            "sent": sent[kind],
            "received": len(lat),
            "publish_ms_p50": c[len(c) // 2],
            "publish_ms_max": c[-1],
            "latency_ms_p50": lat[len(lat) // 2] if lat else None,
            "latency_ms_p95": lat[int(0.95 * len(lat))] if lat else None,
            "latency_ms_max": lat[-1] if lat else None,
        }
    print(json.dumps(out), flush=True)
    executor.shutdown()
    for context in contexts:
        rclpy.try_shutdown(context=context)


def measure_inprocess(name: str, case: Case, contexts: int, seconds: float) -> dict:
    script = str(Path(__file__).resolve())
    done = subprocess.run(
        [sys.executable, script, "--role", "inproc", "--contexts", str(contexts), "--seconds", str(seconds)],
        env=clean_env(case.env),
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        check=False,
    )
    result = last_json(done.stdout + done.stderr)
    if "error" in result:
        raise RuntimeError(f"in-process {name}: {result['error']}")
    return {"config": name, "contexts": contexts, "env": case.env, **result}


# --- part 2: vla-up robot ---------------------------------------------------------------------------------------


def write_video(path: Path, frames: int = 90, width: int = 640, height: int = 480, fps: int = 30) -> Path:
    """An H.264 file of the moving scene, as a USB camera's recording would be."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in render_frames(frames, width, height):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def train_tiny_checkpoint(root: Path) -> Path:
    """One epoch of vla-train's tiny recipe on a generated one-camera dataset: a real checkpoint in seconds."""
    from vla_common.manifest import CameraSpec
    from vla_policy.testing.synthetic import write_synthetic_dataset
    from vla_policy.train import TINY_MODEL, TrainConfig, train

    dataset = write_synthetic_dataset(
        root / "dataset", episodes=2, frames=8, cameras=(CameraSpec("front", 48, 64),)
    )
    result = train(
        TrainConfig(
            datasets=(str(dataset),),
            output=str(root / "run"),
            epochs=1,
            batch_size=8,
            warmup_steps=1,
            val_fraction=0.5,
            augmented_copies=0,
            seed=0,
            device="cpu",
            progress=False,
            model_overrides=dict(TINY_MODEL),
        )
    )
    return Path(result.best)


class StackProbe:
    """The robot side of the bench: /joint_states at 100 Hz, the instruction, and the nodes' /diagnostics."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_stack_probe", context=self.context)
        self.lock = threading.Lock()
        self.latest: dict[str, dict[str, str]] = {}  # status name -> values
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 20)
        self._state_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_publisher(String, "/task_instruction", latched).publish(
            String(data="pick up the red cube")
        )
        self._joint_state = JointState
        self.node.create_timer(0.01, self._publish_state)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _publish_state(self) -> None:  # a driver holding the arm at home
        msg = self._joint_state(name=list(PANDA_STATE_JOINTS), position=list(HOME))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._state_pub.publish(msg)

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.latest[status.name] = {kv.key: kv.value for kv in status.values}

    def values(self, suffix: str) -> dict[str, str]:
        with self.lock:
            for name, values in self.latest.items():
                if name.endswith(suffix):
                    return dict(values)
        return {}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        import rclpy

        rclpy.try_shutdown(context=self.context)


def measure_vla_up(name: str, extra_env: dict[str, str], video: Path, model: Path, seconds: float) -> dict:
    import psutil

    exe = shutil.which("vla-up")
    command = [exe] if exe else [sys.executable, "-m", "vla_bringup.runner"]
    command += ["robot", f"camera_source:={video}", f"model:={model}", "log_level:=warn"]
    stack = subprocess.Popen(
        command, env=clean_env(extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    pids: dict[str, int] = {}

    def pump() -> None:
        for line in stack.stdout or []:
            lines.append(line)
            started = re.search(r"started (\w+) \(pid (\d+)\)", line)
            if started:
                pids[started.group(1)] = int(started.group(2))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    probe = StackProbe()
    try:

        def policy():
            return probe.values("policy_node: policy")

        deadline = time.monotonic() + 180.0
        while int(policy().get("front_frames_received", 0) or 0) == 0:
            if stack.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: policy_node received no frame:\n{''.join(lines)[-3000:]}")
            time.sleep(0.2)
        time.sleep(3.0)  # past start-up (discovery, the first inferences)

        def snapshot():
            p, c = policy(), probe.values("camera front")
            cpu = {}
            for node in ("front_camera", "policy_node"):
                times = psutil.Process(pids[node]).cpu_times()
                cpu[node] = times.user + times.system
            return (
                time.monotonic(),
                int(p["front_frames_received"]),
                int(p["front_camera_info_received"]),
                int(c.get("frames", 0)),
                int(p.get("commands_published", 0)),
                cpu,
            )

        t0, frames0, infos0, cam0, cmds0, cpu0 = snapshot()
        time.sleep(seconds)
        t1, frames1, infos1, cam1, cmds1, cpu1 = snapshot()
        check = policy().get("front_frame_rate_check", "")
    finally:
        probe.close()
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait(timeout=10)
        reader.join(timeout=5)
    elapsed = t1 - t0
    received, infos = frames1 - frames0, infos1 - infos0
    note = next((ln.split("] ", 1)[-1].strip() for ln in lines if "image transport:" in ln), "")
    return {
        "config": name,
        "size": "640x480",
        "env": extra_env,
        "published": infos,  # CameraInfo received by policy_node: what the camera sent
        "received": received,
        "ratio": received / infos if infos else 0.0,
        "camera_published": cam1 - cam0,  # camera_node's own count (reported at other instants)
        "achieved_hz": infos / elapsed,
        "policy_commands_hz": (cmds1 - cmds0) / elapsed,
        "camera_cpu_pct": 100.0 * (cpu1["front_camera"] - cpu0["front_camera"]) / elapsed,
        "policy_cpu_pct": 100.0 * (cpu1["policy_node"] - cpu0["policy_node"]) / elapsed,
        "frame_rate_check": check,
        "transport_note": note,
        "seconds": elapsed,
    }


# --- main ------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role", choices=("main", "pub", "sub", "inproc"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--contexts", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="/bench/image", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    parser.add_argument("--jpeg", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reliable", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="10 s per row instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--sizes", default="640x480,1280x720", help="comma-separated WxH (part 1)")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="part 1: only these cases")
    parser.add_argument("--no-inprocess", action="store_true", help="skip part 1b (two nodes, one process)")
    parser.add_argument("--no-vla-up", action="store_true", help="skip part 2 (vla-up robot)")
    parser.add_argument("--model", default="", help="part 2: policy checkpoint (default: train a tiny one)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: random 100-200)")
    a = parser.parse_args()
    if a.role == "pub":
        run_publisher(a)
        return
    if a.role == "sub":
        run_subscriber(a)
        return
    if a.role == "inproc":
        run_inprocess(a)
        return

    seconds = a.seconds if a.seconds is not None else (10.0 if a.quick else 60.0)
    # a private domain on localhost: children inherit it (the fake driver must not reach a real robot)
    os.environ["ROS_DOMAIN_ID"] = str(a.domain_id if a.domain_id is not None else random.randint(100, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_LOG_DIR", os.path.join(tempfile.gettempdir(), "roslog_perception_transport"))
    for var in TRANSPORT_VARS:  # "nothing exported": this process and its children start clean
        os.environ.pop(var, None)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in a.sizes.split(",") if s]
    names = a.only or list(DEFAULT_CASES)
    results = [
        measure(name, CASES[name], w, h, seconds, a.rate) for (w, h) in sizes for name in names
    ]  # fmt: skip
    inprocess = []
    if not a.no_inprocess:  # a few seconds tell: each publish is timed
        for contexts in (1, 2):
            for name in ("default", "profile"):
                inprocess.append(measure_inprocess(name, CASES[name], contexts, min(seconds, 5.0)))
    stack_results = []
    if not a.no_vla_up:
        with tempfile.TemporaryDirectory(prefix="perception_transport_") as tmp:
            video = write_video(Path(tmp) / "camera_640x480.mp4")
            model = Path(a.model).resolve() if a.model else train_tiny_checkpoint(Path(tmp) / "model")
            stack_results.append(measure_vla_up("nothing exported", {}, video, model, seconds))
            # the control: a transport of the user's own (the bringup keeps it) is the old default's
            control = {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}
            stack_results.append(
                measure_vla_up("FASTDDS_BUILTIN_TRANSPORTS=DEFAULT", control, video, model, seconds)
            )
    if results:
        print_results(results, a.rate, seconds)
    if inprocess:
        print_inprocess(inprocess)
    if stack_results:
        print_stack_results(stack_results)
    print(
        json.dumps(
            {
                "bench": "perception_transport",
                "seconds": seconds,
                "rate_hz": a.rate,
                "results": results,
                "inprocess": inprocess,
                "vla_up_robot": stack_results,
            }
        )
    )


def print_results(results: list[dict], rate: float, seconds: float) -> None:
    print(f"rgb8 frames at {rate:g} Hz for {seconds:g} s per row, two processes")
    print(
        f"{'config':<10} {'size':>9} {'published':>9} {'received':>8} {'ratio':>6} {'pub Hz':>6} "
        f"{'p50 ms':>6} {'p95 ms':>6} {'pub CPU%':>8} {'sub CPU%':>8} {'KB/frame':>8}"
    )
    for r in results:
        print(
            f"{r['config']:<10} {r['size']:>9} {r['published']:>9} {r['received']:>8} {r['ratio']:>6.3f} "
            f"{r['achieved_hz']:>6.1f} {_fmt(r['latency_ms_p50']):>6} {_fmt(r['latency_ms_p95']):>6} "
            f"{_fmt(r['pub_cpu_pct']):>8} {_fmt(r['sub_cpu_pct']):>8} {r['bytes_per_frame'] / 1024:>8.0f}"
        )


def print_inprocess(rows: list[dict]) -> None:
    print(
        "\ntwo nodes in one process: 640x480 rgb8 at 33 Hz best effort + JointState at 100 Hz reliable; "
        "publish() call and delivery latency in ms"
    )
    print(
        f"{'config':<8} {'contexts':>8} {'stream':>6} {'sent':>5} {'recv':>5} {'call p50':>8} {'call max':>8} "
        f"{'lat p50':>7} {'lat p95':>7} {'lat max':>7}"
    )
    for r in rows:
        for kind in ("image", "joints"):
            m = r[kind]
            print(
                f"{r['config']:<8} {r['contexts']:>8} {kind:>6} {m['sent']:>5} {m['received']:>5} "
                f"{m['publish_ms_p50']:>8.2f} {m['publish_ms_max']:>8.2f} {_fmt(m['latency_ms_p50']):>7} "
                f"{_fmt(m['latency_ms_p95']):>7} {_fmt(m['latency_ms_max']):>7}"
            )


def print_stack_results(stack_results: list[dict]) -> None:
    print(
        "\nvla-up robot: 640x480 H.264 file -> camera_node -> policy_node. published: CameraInfo, received: images,"
        " both at policy_node; camera sent: camera_node's own count; policy CPU without its inference process"
    )
    print(
        f"{'environment':<35} {'published':>9} {'received':>8} {'ratio':>6} {'camera sent':>11} "
        f"{'camera CPU%':>11} {'policy CPU%':>11} {'cmd Hz':>6} {'check':>6}"
    )
    for r in stack_results:
        print(
            f"{r['config']:<35} {r['published']:>9} {r['received']:>8} {r['ratio']:>6.3f} "
            f"{r['camera_published']:>11} {r['camera_cpu_pct']:>11.1f} {r['policy_cpu_pct']:>11.1f} "
            f"{r['policy_commands_hz']:>6.1f} {r['frame_rate_check']:>6}"
        )
        if r["transport_note"]:
            print(f"    {r['transport_note']}")


if __name__ == "__main__":
    main()
