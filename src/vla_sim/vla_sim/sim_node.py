"""sim_node: the embedded PyBullet simulator as a ROS 2 robot (Franka Panda tabletop with a language task).

Publishes
  /joint_states (sensor_msgs/JointState, 9 joints with positions, velocities, efforts; joint_state_rate Hz)
  /camera/image_raw + /camera/camera_info (sensor-data QoS; camera_rate Hz), and with wrist_camera:=true
  /wrist_camera/image_raw + /wrist_camera/camera_info
  /clock (rosgraph_msgs/Clock, sim time, with every joint state): run the other nodes with use_sim_time:=true
  /task_instruction (std_msgs/String, reliable + transient local) after every reset, if publish_instruction
  /sim/success (std_msgs/Bool, reliable + transient local): on every change and after a reset
  /sim/object_poses (geometry_msgs/PoseArray, frame world_frame; object_pose_rate Hz): blocks then targets
  /sim/scene (std_msgs/String JSON, reliable + transient local, after every reset): which pose is which
      object ({"objects": ["red", ..., "bowl", "zone"]}), their initial positions, the targets' sizes, the
      table height, the episode number, seed and instruction, and where the instruction's target and goal
      are ("referents", from which a recorder computes observation.environment_state; see
      bridge.SimRunner.scene_description)
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz): mode, task, episode status, success, real-time
      factor, accepted/rejected commands
Subscribes (best-effort QoS, so reliable and best-effort publishers both match)
  /joint_commands (sensor_msgs/JointState): position targets matched by joint name
  /forward_position_controller/commands (std_msgs/Float64MultiArray): targets in the joint_order parameter's order
  /joint_trajectory_controller/joint_trajectory (trajectory_msgs/JointTrajectory)
  ~/set_task (std_msgs/String, reliable): a family name or an instruction; resets to it at once
Services
  ~/reset (std_srvs/Trigger): a new episode with the task and seed parameters; the response message is the
      instruction. Episode k after the seed parameter was last set uses seed + k.
Parameters changeable at runtime: task and seed (used at the next reset), publish_instruction, and camera_rate
(at once; 0 stops the cameras, as a camera failure would). The others are read-only after start.
Modes: realtime paces the simulation to the wall clock (times real_time_factor; a lag over 0.5 s is dropped
and counted, never raced to catch up). lockstep advances one control period (1/control_hz of sim time) per
accepted command, or after lockstep_timeout_s wall seconds without one (so controllers that only act on
/clock-driven timers cannot deadlock it); give every other node use_sim_time:=true.
Stamps: all messages carry the sim clock (the wall time the node started + simulated time, never going back
across resets), the same value /clock publishes.
Bad commands (unknown joints, wrong lengths, NaN, bad trajectory timing) are rejected whole with a throttled
warning; the targets stay as they were, so the arm holds still.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from typing import Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from vla_common.node import declare_parameters, run_node
from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_STATE_JOINTS
from vla_perception.codec import numpy_to_image

from vla_sim.bridge import (
    BridgeConfig,
    CommandResult,
    SimMode,
    SimRunner,
    array_command,
    joint_state_command,
    trajectory_command,
)
from vla_sim.scene import CameraConfig
from vla_sim.tasks import validate_task_request

PARAMETERS: dict[str, tuple[Any, str]] = {
    "mode": ("realtime", "realtime (paced to the wall clock) | lockstep (one control period per command)"),
    "real_time_factor": (1.0, "realtime mode: simulated seconds per wall-clock second"),
    "lockstep_timeout_s": (
        1.0,
        "lockstep mode: advance anyway after this many wall seconds without a command (0 = wait forever)",
    ),
    "physics_hz": (240.0, "physics steps per simulated second"),
    "control_hz": (10.0, "lockstep period and success checks per simulated second"),
    "joint_state_rate": (100.0, "/joint_states and /clock per simulated second"),
    "camera_rate": (15.0, "camera frames per simulated second (0 = no camera)"),
    "object_pose_rate": (30.0, "/sim/object_poses per simulated second"),
    "camera_width": (224, "camera image width in pixels"),
    "camera_height": (224, "camera image height in pixels"),
    "wrist_camera": (False, "also render and publish the wrist camera"),
    "renderer": ("tiny", "tiny (CPU, no GL) | egl (GPU through EGL)"),
    "task": (
        "",
        "family name (pick, stack, push, place, stack_two), an instruction, or empty for a random family; used at the next reset",
    ),
    "seed": (0, "seed of the next reset; episode k after setting it uses seed + k"),
    "split": ("train", "instruction templates to draw: train | heldout"),
    "publish_instruction": (True, "publish the instruction on /task_instruction after each reset"),
    "joint_order": (list(PANDA_COMMAND_JOINTS), "joint order of Float64MultiArray commands"),
    "world_frame": ("world", "frame_id of /sim/object_poses (the robot base stands at its origin)"),
}
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
COMMANDS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
CAMERA_TOPICS = {"front": "camera", "wrist": "wrist_camera"}


def camera_info(camera: CameraConfig, stamp: Time, frame_id: str) -> CameraInfo:
    fx, fy, cx, cy = camera.intrinsics()
    info = CameraInfo()
    info.header.stamp, info.header.frame_id = stamp, frame_id
    info.width, info.height = camera.width, camera.height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class SimNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("sim_node", **node_kwargs)
        p = declare_parameters(self, PARAMETERS, floats_take_ints=True)
        self.config = BridgeConfig(
            mode=p["mode"],
            real_time_factor=float(p["real_time_factor"]),
            physics_hz=float(p["physics_hz"]),
            control_hz=float(p["control_hz"]),
            joint_state_rate=float(p["joint_state_rate"]),
            camera_rate=float(p["camera_rate"]),
            object_pose_rate=float(p["object_pose_rate"]),
            camera_width=int(p["camera_width"]),
            camera_height=int(p["camera_height"]),
            wrist_camera=bool(p["wrist_camera"]),
            split=p["split"],
            renderer=p["renderer"],
        )
        validate_task_request(p["task"])
        self.joint_order = [str(n) for n in p["joint_order"]]
        self.lockstep_timeout = float(p["lockstep_timeout_s"])
        self.world_frame = str(p["world_frame"])
        self.task_request = str(p["task"])
        self.seed_base, self.seed_offset = int(p["seed"]), 0
        self.runner = SimRunner(self.config)
        self.lock = threading.Lock()
        self.grant = threading.Event()  # lockstep: a command arrived, advance one control period
        self.stop = threading.Event()
        self.clock_offset_ns = time.time_ns()  # sim clock 0 = the wall time the node started
        self.last_rejection = ""
        self.last_success: bool | None = None
        self.rtf_window = (time.monotonic(), 0.0)
        self.measured_rtf = 0.0
        self.lag_resets = 0

        self.js_pub = self.create_publisher(JointState, "joint_states", 10)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.camera_pubs = {
            c.name: (
                self.create_publisher(Image, f"{CAMERA_TOPICS[c.name]}/image_raw", qos_profile_sensor_data),
                self.create_publisher(
                    CameraInfo, f"{CAMERA_TOPICS[c.name]}/camera_info", qos_profile_sensor_data
                ),
            )
            for c in self.runner.cameras
        }
        self.instruction_pub = self.create_publisher(String, "task_instruction", LATCHED)
        self.success_pub = self.create_publisher(Bool, "sim/success", LATCHED)
        self.scene_pub = self.create_publisher(String, "sim/scene", LATCHED)
        self.poses_pub = self.create_publisher(PoseArray, "sim/object_poses", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, "joint_commands", self._on_joint_command, COMMANDS_QOS)
        self.create_subscription(
            Float64MultiArray, "forward_position_controller/commands", self._on_array_command, COMMANDS_QOS
        )
        self.create_subscription(
            JointTrajectory,
            "joint_trajectory_controller/joint_trajectory",
            self._on_trajectory,
            COMMANDS_QOS,
        )
        self.create_subscription(String, "~/set_task", self._on_set_task, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.create_timer(1.0, self._publish_diagnostics)

        self._reset()
        self.thread = threading.Thread(target=self._loop, name="sim_loop", daemon=True)
        self.thread.start()
        self.get_logger().info(
            f"sim_node {self.config.mode.value}: {self.config.physics_hz:g} Hz physics, joint states "
            f"{self.config.joint_state_rate:g} Hz, cameras {[c.name for c in self.runner.cameras]} at "
            f"{self.config.camera_rate:g} Hz {self.config.camera_width}x{self.config.camera_height}"
        )

    # --- time ----------------------------------------------------------------------------------------------

    def _stamp(self) -> Time:
        total = self.clock_offset_ns + round(self.runner.sim_clock * 1e9)
        return Time(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)

    # --- episodes ------------------------------------------------------------------------------------------

    def _reset(self) -> str:
        seed = self.seed_base + self.seed_offset
        with self.lock:
            task = self.runner.reset(self.task_request, seed)
            self.seed_offset += 1
            description = json.dumps(self.runner.scene_description())
            snapshot = self._snapshot(joint_state=True, cameras=True, poses=True)
        self.last_success = None
        self.scene_pub.publish(String(data=description))
        self._publish(snapshot)
        if self.get_parameter("publish_instruction").value:
            self.instruction_pub.publish(String(data=task.instruction))
        self._publish_success(False)
        self.get_logger().info(f"episode {self.runner.episode} (seed {seed}): {task.instruction!r}")
        return task.instruction

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message = self._reset()
            response.success = True
        except (ValueError, RuntimeError) as error:
            response.success, response.message = False, str(error)
        return response

    def _on_set_task(self, msg: String) -> None:
        try:
            validate_task_request(msg.data)
        except ValueError as error:
            self.get_logger().warning(f"~/set_task rejected: {error}", throttle_duration_sec=2.0)
            return
        self.task_request = msg.data
        self._reset()

    def _on_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """All or nothing: every parameter of a request is validated before any of them takes effect."""
        camera_config = None
        for parameter in parameters:
            if parameter.name == "task":
                try:
                    validate_task_request(str(parameter.value))
                except ValueError as error:
                    return SetParametersResult(successful=False, reason=str(error))
            elif parameter.name == "camera_rate":
                try:  # not a number, negative, above physics_hz
                    camera_config = dataclasses.replace(self.config, camera_rate=float(parameter.value))
                except (TypeError, ValueError) as error:
                    return SetParametersResult(successful=False, reason=f"camera_rate: {error}")
            elif parameter.name not in ("seed", "publish_instruction"):  # rclpy has checked their types
                return SetParametersResult(
                    successful=False, reason=f"{parameter.name} is read-only after start"
                )
        for parameter in parameters:
            if parameter.name == "task":
                self.task_request = str(parameter.value)
            elif parameter.name == "seed":
                self.seed_base, self.seed_offset = int(parameter.value), 0
        if camera_config is not None:
            with self.lock:  # the simulation thread reads the schedule under the lock
                self.config = self.runner.config = camera_config
            self.get_logger().info(f"camera_rate set to {camera_config.camera_rate:g} Hz")
        return SetParametersResult(successful=True)

    # --- commands ------------------------------------------------------------------------------------------

    def _accept(self, result: CommandResult, source: str) -> None:
        if not result.accepted:
            self.last_rejection = f"{source}: {result.status.value}: {result.detail}"
            self.get_logger().warning(f"rejected {self.last_rejection}", throttle_duration_sec=2.0)
        else:
            self.grant.set()

    def _on_joint_command(self, msg: JointState) -> None:
        with self.lock:
            result = joint_state_command(msg.name, msg.position, self.runner.current_target())
            self.runner.command(result)
        self._accept(result, "/joint_commands")

    def _on_array_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            result = array_command(msg.data, self.joint_order, self.runner.current_target())
            self.runner.command(result)
        self._accept(result, "forward_position_controller")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        points = [
            (p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, list(p.positions)) for p in msg.points
        ]
        with self.lock:
            stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            start = stamp_s - self.clock_offset_ns * 1e-9 if stamp_s > 0 else self.runner.sim_clock
            result, trajectory = trajectory_command(
                msg.joint_names, points, max(start, self.runner.sim_clock), self.runner.current_target()
            )
            self.runner.follow(result, trajectory)
        self._accept(result, "joint_trajectory_controller")

    # --- the simulation thread -----------------------------------------------------------------------------

    def _snapshot(self, joint_state: bool, cameras: bool, poses: bool) -> dict[str, Any]:
        """Read what is due from the scene (call with the lock held); publishing happens outside the lock."""
        stamp = self._stamp()
        snapshot: dict[str, Any] = {"stamp": stamp}
        if joint_state:
            snapshot["joints"] = (
                self.runner.scene.joint_positions(),
                self.runner.scene.joint_velocities(),
                self.runner.scene.joint_efforts(),
            )
        if cameras and self.config.camera_rate > 0:
            snapshot["images"] = {c.name: (c, self.runner.scene.render(c)) for c in self.runner.cameras}
        if poses:
            snapshot["poses"] = self.runner.object_poses()
        snapshot["success"] = self.runner.success
        return snapshot

    def _publish(self, snapshot: dict[str, Any]) -> None:
        stamp = snapshot["stamp"]
        if "joints" in snapshot:
            positions, velocities, efforts = snapshot["joints"]
            msg = JointState(name=list(PANDA_STATE_JOINTS))
            msg.header.stamp = stamp
            msg.position, msg.velocity, msg.effort = positions.tolist(), velocities.tolist(), efforts.tolist()
            self.js_pub.publish(msg)
            self.clock_pub.publish(Clock(clock=stamp))
        for name, (camera, image) in snapshot.get("images", {}).items():
            frame = f"{name}_camera_optical_frame"
            image_pub, info_pub = self.camera_pubs[name]
            image_pub.publish(numpy_to_image(image, "rgb8", stamp, frame))
            info_pub.publish(camera_info(camera, stamp, frame))
        if "poses" in snapshot:
            array = PoseArray()
            array.header.stamp, array.header.frame_id = stamp, self.world_frame
            for position, orientation in snapshot["poses"]:
                pose = Pose()
                pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
                o = pose.orientation
                o.x, o.y, o.z, o.w = (float(v) for v in orientation)
                array.poses.append(pose)
            self.poses_pub.publish(array)
        if snapshot["success"] != self.last_success:
            self._publish_success(snapshot["success"])

    def _publish_success(self, success: bool) -> None:
        self.last_success = success
        self.success_pub.publish(Bool(data=success))

    def _loop(self) -> None:
        lockstep = self.config.mode is SimMode.LOCKSTEP
        wall_ref, sim_ref = time.monotonic(), self.runner.sim_clock
        period = 1.0 / self.config.control_hz
        try:
            while not self.stop.is_set():
                if lockstep:
                    timeout = self.lockstep_timeout if self.lockstep_timeout > 0 else 0.1
                    if not self.grant.wait(timeout) and self.lockstep_timeout <= 0:
                        continue
                    self.grant.clear()
                    end = self.runner.sim_clock + period - 1e-9
                else:
                    end = self.runner.sim_clock  # one step at a time
                while not self.stop.is_set():
                    with self.lock:
                        due = self.runner.step()
                        snapshot = self._snapshot(due.joint_state, due.camera, due.object_poses)
                        sim_now = self.runner.sim_clock
                    self._publish(snapshot)
                    if not lockstep and due.joint_state:
                        wall_ref, sim_ref = self._pace(wall_ref, sim_ref, sim_now)
                    if sim_now >= end:
                        break
        except Exception as error:
            if self.stop.is_set() or not self.context.ok():
                return  # shutting down (Ctrl-C shuts the context before destroy_node stops this thread)
            # The thread must not die silently: the arm would freeze unseen.
            self.get_logger().fatal(f"simulation loop stopped: {error!r}")
            raise

    def _pace(self, wall_ref: float, sim_ref: float, sim_now: float) -> tuple[float, float]:
        target = wall_ref + (sim_now - sim_ref) / self.config.real_time_factor
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.5:
            # Too slow to keep up: do not race to catch up, re-anchor and report it.
            self.lag_resets += 1
            return time.monotonic(), sim_now
        return wall_ref, sim_ref

    # --- diagnostics ---------------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self.lock:
            sim_clock, runner = self.runner.sim_clock, self.runner
            values = {
                "mode": self.config.mode.value,
                "task": runner.task.instruction if runner.task else "",
                "family": runner.task.family.value if runner.task else "",
                "episode": str(runner.episode),
                "seed": str(runner.seed),
                "status": runner.status.value,
                "success": str(runner.success).lower(),
                "episode_time_s": f"{runner.scene.sim_time:.2f}",
                "commands_accepted": str(runner.accepted),
                "commands_rejected": str(runner.rejected),
                "last_rejection": self.last_rejection,
                "lag_resets": str(self.lag_resets),
            }
        wall0, sim0 = self.rtf_window
        if now > wall0:
            self.measured_rtf = (sim_clock - sim0) / (now - wall0)
        self.rtf_window = (now, sim_clock)
        values["real_time_factor"] = f"{self.measured_rtf:.3f}"
        level, message = DiagnosticStatus.OK, f"episode {values['status']}"
        if self.config.mode is SimMode.REALTIME and self.measured_rtf < 0.8 * self.config.real_time_factor:
            level, message = DiagnosticStatus.WARN, f"slower than real time ({self.measured_rtf:.2f}x)"
        array = DiagnosticArray()
        array.header.stamp = self._stamp()
        array.status.append(
            DiagnosticStatus(
                level=level,
                name=f"{self.get_name()}: simulator",
                message=message,
                hardware_id="pybullet_panda",
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        )
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        self.stop.set()
        self.grant.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5.0)
        self.runner.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, "sim_node", args)


if __name__ == "__main__":
    sys.exit(main())
