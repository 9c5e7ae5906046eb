"""policy_node's control loop against the seed chapters' pattern (inference inside the timer callback).

The nodes run as their own processes, one after the other in the same run, with the same model, the same
inputs (a 30 Hz camera, 100 Hz /joint_states, one instruction) and the same target rate:

  async           vla_policy.policy_node as shipped: the model in a child process (vla-serve on localhost),
                  an inference thread that waits on it, the executor ticked by a timer at the control rate
  async_thread    the same node with inference_process:=false: the model runs in the inference thread
  timer_callback  the textbook node: a timer at the control rate that runs the model and publishes
                  the first action of its output (below in this file: run_timer_callback_node)

Measured from /policy/joint_commands (header stamps, the publishing node's clock): achieved rate, p99 jitter
(|interval - target period|), longest gap; and from each node's /diagnostics: observation-to-command latency
p50/p99 (image stamp to the first command computed from it) and model latency.

One comparison per model (default: both): native, the default recipe trained for one epoch on a generated
dataset (the real architecture and latency, meaningless skill), a fast chunked model; huggingface, a small
Llava-style model with random weights, a slow one-action-per-inference model like OpenVLA.

Usage: python bench/policy_node_rate.py [--quick] [--rate HZ] [--seconds S]
                                        [--backend native huggingface] [--checkpoint DIR (one backend)]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from vla_common.robots import PANDA_STATE_JOINTS

STATE = dict(zip(PANDA_STATE_JOINTS, (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04, 0.04), strict=True))
INSTRUCTION = "pick up the red cube"


# --- the textbook node ---------------------------------------------------------------------------------


def run_timer_callback_node(argv: list[str]) -> int:
    """The seed chapters' pattern, on our codec, backends and topics: the model runs inside the timer."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from vla_common.features import STATE_KEY, image_key
    from vla_perception.codec import image_to_rgb8
    from vla_policy.backends import load_local_backend
    from vla_policy.node_core import RollingStats, StateIndex

    args = argparse.Namespace(**json.loads(argv[0]))
    import torch

    torch.set_num_threads(1)  # as policy_node does (inference_threads: 1)
    loaded = load_local_backend(args.backend, args.checkpoint)
    rclpy.init()
    node = rclpy.create_node("timer_policy_node")
    latest: dict[str, object] = {}
    state_index = StateIndex(loaded.manifest.joint_names)
    camera = loaded.manifest.cameras[0].name
    latency, model_latency = RollingStats(2000), RollingStats(2000)
    pub = node.create_publisher(JointState, "/policy/joint_commands", 10)
    diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
    node.create_subscription(
        Image, "/camera/image_raw", lambda m: latest.__setitem__("image", m), qos_profile_sensor_data
    )
    node.create_subscription(
        JointState, "/joint_states", lambda m: latest.__setitem__("state", m), qos_profile_sensor_data
    )
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    node.create_subscription(
        String, "/task_instruction", lambda m: latest.__setitem__("task", m.data), latched
    )

    def control_loop() -> None:
        if not all(k in latest for k in ("image", "state", "task")):
            return
        image, state = latest["image"], latest["state"]
        stamp = image.header.stamp.sec + image.header.stamp.nanosec * 1e-9  # type: ignore[attr-defined]
        observation = {
            image_key(camera): image_to_rgb8(image),  # type: ignore[arg-type]
            STATE_KEY: state_index(state.name, state.position),  # type: ignore[attr-defined]
            "task": latest["task"],
            "timestamp": stamp,
        }
        started = time.monotonic()
        chunk = loaded.policy.infer(observation)
        model_latency.add(time.monotonic() - started)
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.name = list(chunk.names)
        msg.position = [float(v) for v in chunk.actions[0]]
        pub.publish(msg)
        latency.add(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - stamp)

    def report() -> None:
        values = {
            "obs_to_command_latency_p50_ms": latency.percentile(50) * 1e3,
            "obs_to_command_latency_p99_ms": latency.percentile(99) * 1e3,
            "inference_latency_p50_ms": model_latency.percentile(50) * 1e3,
            "inference_latency_p99_ms": model_latency.percentile(99) * 1e3,
        }
        array = DiagnosticArray()
        status = DiagnosticStatus(name="timer_policy_node: policy", level=DiagnosticStatus.OK)
        status.values = [KeyValue(key=k, value=f"{v:.2f}") for k, v in values.items()]
        array.status.append(status)
        diagnostics.publish(array)

    node.create_timer(1.0 / args.rate, control_loop)
    node.create_timer(1.0, report)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def build_native_checkpoint(tmp: str) -> str:
    from vla_common.manifest import CameraSpec
    from vla_policy.testing.synthetic import write_synthetic_dataset
    from vla_policy.train import TrainConfig, train

    cameras = (CameraSpec("front", 96, 96),)
    dataset = write_synthetic_dataset(os.path.join(tmp, "dataset"), episodes=2, frames=8, cameras=cameras)
    result = train(
        TrainConfig(
            datasets=(str(dataset),), output=os.path.join(tmp, "run"), epochs=1, batch_size=8, warmup_steps=1,
            val_fraction=0.5, augmented_copies=0, seed=0, device="cpu", progress=False,
        )
    )  # fmt: skip
    return str(result.best)


# --- the robot side and the measurement -----------------------------------------------------------------


class Robot:
    def __init__(self, image_size: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from vla_perception.codec import numpy_to_image

        self.rclpy = rclpy
        rclpy.init()
        self.node = node = rclpy.create_node("policy_rate_bench")
        self.executor = rclpy.executors.SingleThreadedExecutor()
        self.executor.add_node(node)
        self.commands: list[tuple[float, float]] = []  # (header stamp, receive monotonic)
        self.diagnostics: dict[str, dict[str, str]] = {}
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for _ in range(4)]
        image_pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        state_pub = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_publisher(String, "/task_instruction", latched).publish(String(data=INSTRUCTION))
        count = [0]

        def camera() -> None:
            count[0] += 1
            image_pub.publish(
                numpy_to_image(frames[count[0] % 4], "rgb8", stamp=node.get_clock().now().to_msg())
            )

        def joints() -> None:
            msg = JointState()
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.name = list(STATE)
            msg.position = list(STATE.values())
            state_pub.publish(msg)

        def command(msg: JointState) -> None:
            self.commands.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, time.monotonic()))

        def diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                self.diagnostics[status.name.split(":")[0]] = {kv.key: kv.value for kv in status.values}

        node.create_timer(1 / 30, camera)
        node.create_timer(1 / 100, joints)
        node.create_subscription(JointState, "/policy/joint_commands", command, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, 10)

    def spin(self, seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.005)
            if until is not None and until():
                return True
        return until is None

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def measure(robot: Robot, cmd: list[str], name: str, rate: float, seconds: float) -> dict[str, float]:
    robot.spin(1.0)  # the previous node's last messages
    robot.commands.clear()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if not robot.spin(90.0, until=lambda: bool(robot.commands) or proc.poll() is not None):
            raise RuntimeError(f"{name}: no command within 90 s")
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        robot.spin(2.0)  # settle
        robot.commands.clear()
        robot.diagnostics.clear()
        robot.spin(seconds)
        robot.spin(3.0, until=lambda: name in robot.diagnostics)
        commands = list(robot.commands)
        diag = robot.diagnostics.get(name, {})
    finally:
        proc.send_signal(subprocess.signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    stamps = np.array([c[0] for c in commands])
    received = np.array([c[1] for c in commands])
    if stamps.size < 3:
        raise RuntimeError(f"{name}: only {stamps.size} commands in {seconds} s")
    intervals = np.diff(stamps)
    period = 1.0 / rate

    def figure(key: str) -> float:
        try:
            return float(diag[key])
        except (KeyError, ValueError):
            return float("nan")

    return {
        "commands": int(stamps.size),
        "achieved_hz": float((stamps.size - 1) / (stamps[-1] - stamps[0])),
        "jitter_p99_ms": float(np.percentile(np.abs(intervals - period), 99) * 1e3),
        "max_gap_ms": float(intervals.max() * 1e3),
        "receive_jitter_p99_ms": float(np.percentile(np.abs(np.diff(received) - period), 99) * 1e3),
        "obs_to_cmd_p50_ms": figure("obs_to_command_latency_p50_ms"),
        "obs_to_cmd_p99_ms": figure("obs_to_command_latency_p99_ms"),
        "model_p50_ms": figure("inference_latency_p50_ms"),
    }


def prepare_model(backend: str, checkpoint: str, tmp: str) -> tuple[str, str]:
    """(checkpoint, label): the given one, or one built here."""
    if checkpoint:
        return checkpoint, f"{backend} {checkpoint}"
    if backend == "native":
        label = (
            "native: default recipe (per-camera keypoint encoders with FiLM + MiniLM, MLP, chunk of 10), "
            "96 px, trained 1 epoch on a generated dataset"
        )
        return build_native_checkpoint(tmp), label
    from vla_policy.testing.tiny_llava import write_tiny_llava

    llava = write_tiny_llava(os.path.join(tmp, "llava"), hidden_size=256, layers=4, image_size=96)
    label = "huggingface: Llava-style SigLIP+Llama, 4 layers x 256, 96 px, 1 action/inference, random weights"
    return str(llava), label


def compare(robot: Robot, backend: str, checkpoint: str, rate: float, seconds: float) -> dict[str, dict]:
    ours = [
        sys.executable, "-m", "vla_policy.policy_node", "--ros-args",
        "-p", f"backend:={backend}", "-p", f"checkpoint:={checkpoint}", "-p", f"control_rate_hz:={rate}",
    ]  # fmt: skip
    baseline_args = json.dumps({"backend": backend, "checkpoint": checkpoint, "rate": rate})
    baseline = [sys.executable, os.path.abspath(__file__), "--timer-callback-node", baseline_args]
    return {
        "async": measure(robot, ours, "policy_node", rate, seconds),
        "async_thread": measure(
            robot, [*ours, "-p", "inference_process:=false"], "policy_node", rate, seconds
        ),
        "timer_callback": measure(robot, baseline, "timer_policy_node", rate, seconds),
    }


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--timer-callback-node":
        return run_timer_callback_node(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 s per node instead of 30 s")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float)
    parser.add_argument(
        "--backend", nargs="+", default=["native", "huggingface"], choices=["native", "huggingface"],
        help="one comparison per backend (default: both: a fast chunked model and a slow one-step one)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", default="", help="model directory for a single --backend (default: build)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="camera frames (square, rgb8)")
    args = parser.parse_args()
    if args.checkpoint and len(args.backend) != 1:
        parser.error("--checkpoint goes with exactly one --backend")
    seconds = args.seconds or (6.0 if args.quick else 30.0)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    figures: dict[str, dict] = {}
    labels: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="policy_rate_bench_") as tmp:
        robot = Robot(args.image_size)
        try:
            for backend in args.backend:
                checkpoint, labels[backend] = prepare_model(
                    backend, args.checkpoint, os.path.join(tmp, backend)
                )
                figures[backend] = compare(robot, backend, checkpoint, args.rate, seconds)
        finally:
            robot.close()

    print(
        f"\npolicy node control loop, target {args.rate:.0f} Hz, {seconds:.0f} s per node, {os.cpu_count()} cores"
    )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine)")
    header = (
        f"{'node':<16}{'rate Hz':>9}{'jitter p99 ms':>15}{'max gap ms':>12}"
        f"{'obs->cmd p50':>14}{'obs->cmd p99':>14}{'model p50 ms':>14}"
    )
    met = {}
    for backend, results in figures.items():
        print(f"\nmodel: {labels[backend]}")
        print(header)
        print("-" * len(header))
        for name, r in results.items():
            print(
                f"{name:<16}{r['achieved_hz']:>9.2f}{r['jitter_p99_ms']:>15.2f}{r['max_gap_ms']:>12.1f}"
                f"{r['obs_to_cmd_p50_ms']:>14.1f}{r['obs_to_cmd_p99_ms']:>14.1f}{r['model_p50_ms']:>14.1f}"
            )
        ours = results["async"]
        met[backend] = (
            abs(ours["achieved_hz"] - args.rate) / args.rate <= 0.02 and ours["jitter_p99_ms"] < 5.0
        )
        print(
            f"target (rate within 2%, p99 jitter < 5 ms) met by policy_node: {'yes' if met[backend] else 'no'}"
        )
    summary = {
        "bench": "policy_node_rate",
        "target_hz": args.rate,
        "seconds": seconds,
        "cores": os.cpu_count(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "target_met": met,
        "models": labels,
        **{
            backend: {name: {k: round(v, 3) for k, v in r.items()} for name, r in results.items()}
            for backend, results in figures.items()
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
