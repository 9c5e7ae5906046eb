"""Test support: the embedded simulator, the safety monitor and ``policy_node -p backend:=remote`` as their own
processes over real topics, pointed at a vla-serve on localhost, with an observer that counts what reaches
each topic. The same three nodes a user starts by hand to drive the sim with a served policy (README, "Coming
from LeRobot"). ROS traffic stays in the caller's ROS_DOMAIN_ID (scripts/test.sh gives each run its own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.robots import PANDA_COMMAND_JOINTS

SAFETY_STATUS = "vla_safety: safety_monitor"
SRC = Path(__file__).resolve().parents[2]
CAMERA_TOPICS = {"front": "/camera/image_raw", "wrist": "/wrist_camera/image_raw"}


def config_file(package: str, name: str) -> str:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        return os.path.join(get_package_share_directory(package), "config", name)
    except (ImportError, PackageNotFoundError):
        return str(SRC / package / "config" / name)


def sim_manifest(cameras: tuple[str, ...] = ("front", "wrist"), size: int = 96) -> EmbodimentManifest:
    """The stack's embodiment: the sim's 8 commanded joints, ``size`` px cameras, 10 Hz (the shipped model's)."""
    return EmbodimentManifest(
        robot_type="panda",
        joint_names=PANDA_COMMAND_JOINTS,
        action_names=PANDA_COMMAND_JOINTS,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=tuple(CameraSpec(c, size, size) for c in cameras),
        joint_units=tuple("m" if "finger" in j else "rad" for j in PANDA_COMMAND_JOINTS),
    )


class SimStack:
    """sim_node (cameras at ``size``), safety_node, policy_node (remote, ``uri``); logs under ``log_dir``."""

    def __init__(
        self,
        log_dir: Path,
        uri: str,
        token: str,
        *,
        cameras: tuple[str, ...] = ("front", "wrist"),
        size: int = 96,
        real_time_factor: float = 0.5,
        remote_timeout_s: float = 5.0,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        joints = json.dumps(list(PANDA_COMMAND_JOINTS))
        sim = [
            "-p", f"camera_width:={size}", "-p", f"camera_height:={size}",
            "-p", f"wrist_camera:={'true' if 'wrist' in cameras else 'false'}",
            "-p", f"real_time_factor:={real_time_factor}", "-p", "task:=pick", "-p", "seed:=0",
            "-p", "publish_instruction:=true",
        ]  # fmt: skip
        safety = [
            "--params-file", config_file("vla_safety", "safety_node.yaml"),
            "-p", "use_sim_time:=true", "-p", "robot_profile:=panda", "-p", f"joints:={joints}",
            "-p", "output_adapter:=joint_state", "-p", "output_topic:=/joint_commands",
        ]  # fmt: skip
        policy = [
            "--params-file", config_file("vla_policy", "policy_node.yaml"),
            "-p", "use_sim_time:=true", "-p", "robot_profile:=panda", "-p", "backend:=remote",
            "-p", f"remote_uri:={uri}", "-p", f"remote_timeout_s:={remote_timeout_s}",
            "-p", f"camera_names:={json.dumps(list(cameras))}",
            "-p", f"camera_topics:={json.dumps([CAMERA_TOPICS[c] for c in cameras])}",
        ]  # fmt: skip
        self.policy_commands: list[JointState] = []
        self.safe_commands: list[JointState] = []
        self.heartbeats = 0
        self.safety: dict[str, str] = {}
        self.context = rclpy.Context()
        try:
            self._start("sim_node", "vla_sim.sim_node", sim)
            self._start("safety_node", "vla_safety.safety_node", safety)
            self._start("policy_node", "vla_policy.policy_node", policy, {"VLA_REMOTE_TOKEN": token})
            rclpy.init(context=self.context)
            self.node = rclpy.create_node("sim_stack_observer", context=self.context)
            self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            n = self.node
            n.create_subscription(JointState, "/policy/joint_commands", self.policy_commands.append, 50)
            n.create_subscription(JointState, "/joint_commands", self.safe_commands.append, 50)
            n.create_subscription(Header, "/policy/heartbeat", self._beat, qos_profile_sensor_data)
            n.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        except BaseException:  # no caller holds this object to close it: stop what was started, then raise
            self._stop_processes()
            rclpy.try_shutdown(context=self.context)
            raise

    def _start(
        self, name: str, module: str, params: list[str], env_extra: dict[str, str] | None = None
    ) -> None:
        log = self.log_dir / f"{name}.log"
        self.logs[name] = log
        env = {**os.environ, **(env_extra or {})}
        args = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}", *params]
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    def _beat(self, _msg: Header) -> None:
        self.heartbeats += 1

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == SAFETY_STATUS:
                self.safety = {kv.key: kv.value for kv in status.values}

    def spin(self, seconds: float, until=None) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
            dead = [name for name, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited early:\n{self.output()}")
            if until is not None and until():
                return True
        return until is None

    def accepted(self) -> int:
        """Policy commands the safety monitor passed (its /diagnostics counter)."""
        return int(self.safety.get("accepted", 0))

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def output(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name)[-3000:]}" for name in self.procs)

    def close(self) -> None:
        self._stop_processes()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def _stop_processes(self) -> None:
        """SIGINT to every node started (as Ctrl-C would), then kill what has not exited 15 s later."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
