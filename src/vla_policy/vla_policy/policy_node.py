"""``policy_node``: a VLA policy driving /policy/joint_commands at a steady control rate.

Inference runs in its own thread and feeds an :class:`~vla_policy.executor.ActionExecutor`; a ROS timer
ticks the executor at ``control_rate_hz`` and publishes what it says, so the control rate does not depend on
the model's latency. Nothing is published (the safety monitor then holds the robot) while inputs are stale,
the instruction is empty, the node is disabled, or the queue is empty. Before the first command the model's
embodiment manifest is checked against the safety limits, the cameras and the first /joint_states; a mismatch
stops the node with exit code 2. With the native backend each new instruction is compared with the ones the
model was trained on (in its own instruction embedding, in a thread of its own): one that is out of
distribution is logged once and turns /diagnostics WARN, but is still commanded. Decisions live in
:mod:`vla_policy.node_core`; this module is wiring.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool
from vla_common.features import STATE_KEY, image_key
from vla_common.manifest import EmbodimentManifest, ManifestError
from vla_common.node import declare_parameters, run_node
from vla_common.policy import ActionChunk
from vla_perception.codec import CodecError, image_to_rgb8
from vla_perception.frame_rate import FrameRateCheck, FrameRateReport, FrameRateStatus, camera_info_topic
from vla_perception.freshness import FrameStatus, LatestFrame, time_to_ns

from vla_policy.backends import (
    BackendKind,
    InferenceUnavailable,
    LoadedPolicy,
    load_local_backend,
    load_remote_backend,
    warm_up,
)
from vla_policy.executor import ActionExecutor as ActionQueue
from vla_policy.executor import ExecutorConfig, PushStatus, Tick, TickStatus
from vla_policy.node_core import (
    DEFAULT_OOD_DISTANCE_THRESHOLD,
    ChangeReporter,
    ControlTiming,
    DiagnosticLevel,
    HoldReason,
    InstructionCheck,
    InstructionGrounding,
    InstructionOODDetector,
    OODStatus,
    PolicyNodeConfig,
    RollingStats,
    StateIndex,
    cameras_from_lists,
    check_embodiment,
    diagnostic_summary,
    hold_reason,
    resolve_ood_threshold,
    training_instructions,
)
from vla_policy.serve import read_token

REMOTE_TOKEN_ENV = "VLA_REMOTE_TOKEN"
# /task_instruction and the safety monitor's /safety/state: the latest value reaches late joiners.
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# /safety/state statuses under which the monitor drops what this node sends (HOLD is also its idle state
# before the first command, so it is reported but not warned about).
SAFETY_REFUSING = frozenset({"REJECTED", "ESTOP", "FAULT"})

# name -> (default, description). Types follow the defaults.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "backend": ("native", "policy backend: native | huggingface | remote"),
    "checkpoint": ("", "model directory: native checkpoint or Hugging Face model (with embodiment.json)"),
    "device": ("cpu", "torch device for local backends"),
    "hf_chunk_size": (
        1,
        "actions per inference of a Hugging Face model (OpenVLA: 1; OFT-style chunks: more)",
    ),
    "inference_process": (
        True,
        "run a local model in its own process (a child vla-serve on localhost) instead of a thread",
    ),
    "inference_threads": (
        1,
        "torch threads for local backends (0: torch default); leaves a core to the control loop",
    ),
    "remote_uri": ("ws://127.0.0.1:8765", "vla-serve address for the remote backend (ws:// or wss://)"),
    "remote_token_file": ("", f"file with the vla-serve auth token (empty: ${REMOTE_TOKEN_ENV})"),
    "remote_timeout_s": (1.0, "remote inference timeout; a slower answer gives no chunk and the robot holds"),
    "remote_image_encoding": ("raw", "images to vla-serve: raw (uint8) or jpeg"),
    "control_rate_hz": (50.0, "rate of /policy/joint_commands (20-50 Hz typical)"),
    "heartbeat_rate_hz": (20.0, "rate of /policy/heartbeat (>= 10 Hz), published even while holding"),
    "diagnostics_rate_hz": (1.0, "rate of /diagnostics"),
    "max_image_age_s": (0.5, "hold when the newest camera frame is older than this (stamp age, ROS time)"),
    "max_state_age_s": (0.25, "hold when the newest /joint_states is older than this (stamp age, ROS time)"),
    "refill_below_s": (0.6, "start the next inference once the queue reaches less than this far ahead"),
    "camera_names": (["front"], "cameras the model sees (observation.images.<name>), as in its manifest"),
    "camera_topics": (["camera/image_raw"], "sensor_msgs/Image topic of each camera, same order"),
    "robot_profile": ("panda", "vla_safety robot profile whose joint limits the manifest is checked against"),
    "urdf_path": ("", "URDF whose joint limits are merged with the profile (most restrictive wins)"),
    "blend": ("crossfade", "chunk blending: crossfade | temporal_ensemble | latest"),
    "interpolation": ("linear", "between a chunk's steps: linear | cubic | hold"),
    "ensemble_decay": (0.01, "temporal_ensemble weight exp(-m*i), i=0 the oldest chunk"),
    "crossfade_s": (0.2, "crossfade duration from the previous chunk to a new one"),
    "tail_hold_s": (
        0.3,
        "the last action of a chunk stays valid this long past its end (single-step models)",
    ),
    "max_chunk_age_s": (1.0, "refuse a chunk whose observation is older than this when it arrives"),
    "start_enabled": (True, "command as soon as inputs allow (false: wait for ~/enable)"),
    "ood_distance_threshold": (
        -1.0,
        "native backend: an instruction whose cosine distance to the nearest training instruction (model's own "
        "text encoder) exceeds this is out of distribution: logged, /diagnostics WARN, still commanded. "
        "Negative: the checkpoint's info['ood_distance_threshold'], else "
        f"{DEFAULT_OOD_DISTANCE_THRESHOLD}; 2.0: never",
    ),
}


def config_from_parameters(p: dict[str, Any]) -> PolicyNodeConfig:
    """The node's configuration from its declared ROS parameters (``PARAMETERS``)."""
    return PolicyNodeConfig(
        backend=p["backend"],
        checkpoint=p["checkpoint"],
        device=p["device"],
        hf_chunk_size=p["hf_chunk_size"],
        inference_threads=p["inference_threads"],
        inference_process=p["inference_process"],
        remote_uri=p["remote_uri"],
        remote_token_file=p["remote_token_file"],
        remote_timeout_s=p["remote_timeout_s"],
        remote_image_encoding=p["remote_image_encoding"],
        control_rate_hz=p["control_rate_hz"],
        heartbeat_rate_hz=p["heartbeat_rate_hz"],
        diagnostics_rate_hz=p["diagnostics_rate_hz"],
        max_image_age_s=p["max_image_age_s"],
        max_state_age_s=p["max_state_age_s"],
        refill_below_s=p["refill_below_s"],
        cameras=cameras_from_lists(p["camera_names"], p["camera_topics"]),
        robot_profile=p["robot_profile"],
        urdf_path=p["urdf_path"],
        executor=ExecutorConfig(
            blend=p["blend"],
            interpolation=p["interpolation"],
            ensemble_decay=p["ensemble_decay"],
            crossfade_s=p["crossfade_s"],
            max_chunk_age_s=p["max_chunk_age_s"],
            tail_hold_s=p["tail_hold_s"],
        ),
        ood_distance_threshold=p["ood_distance_threshold"],
    )


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy_node")
        p = declare_parameters(self, PARAMETERS)
        self.config = config_from_parameters(p)
        self.fatal: Future = Future()
        self._stop = threading.Event()
        self._instruction = ""
        self._init_instruction_check()
        manifest, bounds = self._load_and_check()
        self._init_state(manifest, bounds, start_enabled=bool(p["start_enabled"]))
        self._wire()
        self._worker = threading.Thread(target=self._inference_loop, name="policy-inference", daemon=True)
        self._worker.start()

    # --- setup -----------------------------------------------------------------------------------------

    def _init_instruction_check(self) -> None:
        cfg = self.config
        # Out-of-distribution instructions: the native backend's checkpoint lists what it was trained on. The
        # text encoder (MiniLM: torch and transformers, seconds) loads in a thread of its own. With an inference
        # process it starts now, so it loads while that process starts rather than while the node commands;
        # with the model in this process it starts after the model (concurrent imports of one package from two
        # threads can find its modules half initialized).
        self._ood_lock = threading.Lock()
        self._ood_wake = threading.Event()
        self._ood_detector: InstructionOODDetector | None = None
        self._ood_unchecked = "" if cfg.backend is BackendKind.NATIVE else f"the {cfg.backend.value} backend"
        self._instruction_check = InstructionCheck("", OODStatus.IDLE)
        self._ood_worker: threading.Thread | None = None
        if self._ood_unchecked:
            self.get_logger().info(
                f"no out-of-distribution instruction check with {self._ood_unchecked} "
                "(only native checkpoints list their training instructions)"
            )
        elif cfg.inference_process:
            self._start_ood_worker()

    def _load_and_check(self) -> tuple[EmbodimentManifest, tuple[list[float], list[float]]]:
        """Load the backend and check its manifest against the safety limits and the cameras (the joints are
        checked when the first /joint_states arrives). -> (manifest, the action's position bounds)."""
        cfg = self.config
        try:
            self.loaded = self._load_backend()
        except BaseException:
            self._stop.set()  # the instruction check's thread ends once its encoder has loaded
            raise
        if not self._ood_unchecked and self._ood_worker is None:
            self._start_ood_worker()
        manifest = self.loaded.manifest
        # The safety limits and cameras can be checked now; the joints when the first /joint_states arrives.
        from vla_safety.limits import armable_joints, load_limits, position_bounds

        try:
            limits = load_limits(cfg.robot_profile, cfg.urdf_path)
            self._limited = armable_joints(limits)
            manifest.check_joints_limited(self._limited)
            manifest.check_cameras([c.name for c in cfg.cameras])
            bounds = position_bounds(limits, manifest.action_names)
        except BaseException:
            self._stop.set()
            self._close_policy()  # an inference process must not wait for a node that will never run
            raise
        self.get_logger().info(
            f"loaded {self.loaded.description}; waiting for /joint_states to check the embodiment"
        )
        return manifest, bounds

    def _init_state(
        self, manifest: EmbodimentManifest, bounds: tuple[list[float], list[float]], *, start_enabled: bool
    ) -> None:
        cfg = self.config
        self.queue = ActionQueue(manifest.action_names, cfg.executor, bounds)  # clips targets into the limits
        self.timing = ControlTiming(cfg.control_period_s)
        self.inference_latency = RollingStats(200)
        self._state_index = StateIndex(manifest.joint_names)
        self._frames = {c.name: LatestFrame[Image]() for c in cfg.cameras}
        # Frames received against each camera's CameraInfo: lost frames are logged and turn /diagnostics WARN.
        self._frame_rates = {c.name: FrameRateCheck(c.name) for c in cfg.cameras}
        self._image_topics: dict[str, str] = {}  # camera name -> its image topic as subscribed (remapped)
        self._joint_state: LatestFrame[JointState] = LatestFrame()
        self._started = False
        self._enabled = start_enabled
        self._reset_pending = True
        # Node time of the latest instruction or resume: inputs older than that are not acted on.
        self._instruction_since = -math.inf
        self._hold = HoldReason.STARTING
        self._hold_log = ChangeReporter(1.0, self._hold)
        self._last_chunk_status = PushStatus.ACCEPTED
        self._model_errors = 0
        self._rejected_states = 0
        self._last_tick: Tick | None = None
        self._unavailable = 0
        self._safety_status = ""  # "" until a safety monitor has been heard from
        self._safety_message = ""

    def _wire(self) -> None:
        """Subscriptions, publishers, the ~/enable service and the timers."""
        cfg = self.config
        for camera in cfg.cameras:
            image_sub = self.create_subscription(
                Image,
                camera.topic,
                lambda msg, name=camera.name: self._on_image(name, msg),
                qos_profile_sensor_data,
            )
            self._image_topics[camera.name] = image_sub.topic_name  # after remapping
            info_topic = camera_info_topic(image_sub.topic_name)
            if info_topic:  # counted only: raw bytes, nothing decoded
                self.create_subscription(
                    CameraInfo,
                    info_topic,
                    lambda _msg, name=camera.name: self._frame_rates[name].info(time.monotonic()),
                    qos_profile_sensor_data,
                    raw=True,
                )
        self.create_subscription(JointState, "joint_states", self._on_joint_state, qos_profile_sensor_data)
        self.create_subscription(String, "task_instruction", self._on_instruction, LATCHED_QOS)
        # Feedback from the safety monitor: commanding means nothing if every command is being refused.
        self.create_subscription(DiagnosticStatus, "safety/state", self._on_safety_state, LATCHED_QOS)
        self._command_pub = self.create_publisher(JointState, "policy/joint_commands", 10)
        self._heartbeat_pub = self.create_publisher(Header, "policy/heartbeat", 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_timer(cfg.control_period_s, self._on_control_tick)  # ROS time: follows /clock in sim
        # Liveness is wall-clock business: a paused simulation must not look like a dead policy.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / cfg.heartbeat_rate_hz, self._on_heartbeat, clock=steady)
        self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._on_diagnostics, clock=steady)

    def _load_backend(self) -> LoadedPolicy:
        cfg = self.config
        if cfg.backend is BackendKind.REMOTE:
            token = read_token(cfg.remote_token_file, REMOTE_TOKEN_ENV)
            return load_remote_backend(cfg.remote_uri, token, cfg.remote_timeout_s, cfg.remote_image_encoding)
        if cfg.inference_process:
            from vla_policy.backends.isolated import start_isolated_backend

            return start_isolated_backend(
                cfg.backend,
                cfg.checkpoint,
                device=cfg.device,
                hf_chunk_size=cfg.hf_chunk_size,
                threads=cfg.inference_threads,
                timeout_s=cfg.remote_timeout_s,
            )
        if cfg.inference_threads:
            import torch

            torch.set_num_threads(cfg.inference_threads)
        return load_local_backend(
            cfg.backend, cfg.checkpoint, device=cfg.device, hf_chunk_size=cfg.hf_chunk_size
        )

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5.0)
        if self._ood_worker is not None:
            self._ood_worker.join(timeout=1.0)  # a daemon: an encoder still loading does not hold up the exit
        self._close_policy()

    def _close_policy(self) -> None:
        close = getattr(self.loaded.policy, "close", None)
        if callable(close):
            close()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    # --- callbacks (wiring only) -----------------------------------------------------------------------

    def _on_image(self, name: str, msg: Image) -> None:
        self._frames[name].put(msg, time_to_ns(msg.header.stamp))
        self._frame_rates[name].frame(time.monotonic())

    def _on_joint_state(self, msg: JointState) -> None:
        if not self._started:
            self._check_embodiment(list(msg.name))
        try:
            self._state_index(msg.name, msg.position)  # NaN, missing joints: refused, so the state goes stale
        except ValueError as e:
            self._rejected_states += 1
            self.get_logger().warning(f"/joint_states rejected: {e}", throttle_duration_sec=2.0)
            return
        self._joint_state.put(msg, time_to_ns(msg.header.stamp))

    def _on_instruction(self, msg: String) -> None:
        if msg.data != self._instruction:
            # Instruction first, then the clear: a chunk pushed under the new epoch saw the new instruction.
            self._instruction, self._reset_pending = msg.data, True
            # A new task often comes with a new scene (a reset): the first chunk must not see the old one.
            self._instruction_since = self._now_s()
            self.queue.clear()  # a new task: nothing computed for the old one may be played
            self.get_logger().info(
                f"instruction: {msg.data!r}" if msg.data.strip() else "instruction cleared: idle"
            )
            with self._ood_lock:
                self._instruction_check = self._unchecked(msg.data)
            self._ood_wake.set()

    def _on_safety_state(self, msg: DiagnosticStatus) -> None:
        status = next((kv.value for kv in msg.values if kv.key == "status"), "")
        was_refusing = self._safety_status in SAFETY_REFUSING
        changed = status != self._safety_status
        self._safety_status, self._safety_message = status, msg.message
        if changed and status in SAFETY_REFUSING:  # every change is logged: it is rare and it matters
            self.get_logger().warning(f"the safety monitor drops this node's commands: {msg.message}")
        elif changed and was_refusing:
            self.get_logger().info(f"the safety monitor passes commands again ({status})")

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        resuming = bool(request.data) and not self._enabled
        if resuming:
            # A pause often spans a reset with the same instruction (vla-demo pauses across each one): resume
            # as for a new instruction, from a fresh policy state and inputs taken from now on.
            self._instruction_since, self._reset_pending = self._now_s(), True
        self._enabled = bool(request.data)
        if not self._enabled:
            self.queue.clear()
        response.success, response.message = True, "enabled" if self._enabled else "disabled: holding"
        self.get_logger().info(response.message)
        return response

    def _on_control_tick(self) -> None:
        now = self._now_s()
        self._hold = self._input_hold(now)
        tick = self.queue.tick(now) if self._hold is HoldReason.NONE else None
        self._last_tick = tick
        if self._hold is not HoldReason.NONE:
            self.queue.clear()
        elif tick is not None and tick.status is TickStatus.EMPTY:
            self._hold = HoldReason.QUEUE_EMPTY
        elif tick is not None and tick.action is not None:
            self._publish_command(tick.action)
        published = self._hold is HoldReason.NONE
        if self._hold_log.update(self._hold, time.monotonic()):  # wall time: a paused sim clock still logs
            self.get_logger().info(f"{self._hold.value}")
        self.timing.tick(now, published, tick.chunk_stamp if published and tick is not None else None)

    def _on_heartbeat(self) -> None:
        self._heartbeat_pub.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id=self.get_name()))

    def _on_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(self._diagnostic_status())
        self._diagnostics_pub.publish(array)

    # --- decisions -------------------------------------------------------------------------------------

    def _check_embodiment(self, joint_state_names: list[str]) -> None:
        try:
            check_embodiment(
                self.loaded.manifest, joint_state_names, self._limited, [c.name for c in self.config.cameras]
            )
        except ManifestError as e:
            if not self.fatal.done():
                self.fatal.set_result(f"refusing to run {self.loaded.description}: {e}")
            return
        self._started = True
        self.get_logger().info("embodiment manifest matches the robot, the safety limits and the cameras")

    def _input_hold(self, now: float) -> HoldReason:
        now_ns = int(now * 1e9)
        state = self._joint_state.check(self.config.max_state_age_s, now_ns)
        images = {
            name: frame.check(self.config.max_image_age_s, now_ns) for name, frame in self._frames.items()
        }
        return hold_reason(
            started=self._started,
            enabled=self._enabled,
            instruction=self._instruction,
            state_age_s=None if state.status is FrameStatus.EMPTY else state.sample.age_s,  # type: ignore[union-attr]
            image_ages_s={
                n: None if c.status is FrameStatus.EMPTY else c.sample.age_s for n, c in images.items()
            },  # type: ignore[union-attr]
            config=self.config,
        )

    def _unchecked(self, instruction: str) -> InstructionCheck:
        """The verdict until the OOD thread has one: idle, no check for this model, or pending."""
        if not instruction.strip():
            return InstructionCheck(instruction, OODStatus.IDLE)
        if self._ood_unchecked:
            return InstructionCheck(instruction, OODStatus.UNCHECKED, reason=self._ood_unchecked)
        return InstructionCheck(instruction, OODStatus.PENDING)

    def _publish_command(self, action: Any) -> None:
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.queue.names)
        msg.position = [float(v) for v in action]
        self._command_pub.publish(msg)

    # --- out-of-distribution instruction thread --------------------------------------------------------

    def _start_ood_worker(self) -> None:
        self._ood_worker = threading.Thread(target=self._ood_loop, name="instruction-ood", daemon=True)
        self._ood_worker.start()

    def _ood_loop(self) -> None:
        self._load_ood_detector()
        while not self._stop.is_set():
            self._ood_wake.wait(0.2)
            self._ood_wake.clear()
            instruction = self._instruction
            if self._instruction_check.status is not OODStatus.PENDING or not instruction.strip():
                continue
            try:
                check = (
                    self._ood_detector.check(instruction)
                    if self._ood_detector is not None
                    else self._unchecked(instruction)
                )
            except Exception as e:  # advisory: a failing check never stops the node
                check = InstructionCheck(
                    instruction, OODStatus.UNCHECKED, reason=f"check failed: {type(e).__name__}: {e}"
                )
            with self._ood_lock:
                if instruction != self._instruction:
                    continue  # superseded while it was computed: the new one is pending
                self._instruction_check = check
            if check.ood:
                self.get_logger().warning(check.log_line())
            elif check.status is OODStatus.IN_DISTRIBUTION:
                self.get_logger().info(check.log_line())

    def _load_ood_detector(self) -> None:
        """Read the checkpoint's training instructions and load its text encoder (say once why if not)."""
        cfg = self.config
        started = time.monotonic()
        try:
            from vla_policy.models.checkpoint import read_config
            from vla_policy.models.encoders import InstructionEncoder

            model_config, info = read_config(cfg.checkpoint)
            instructions = training_instructions(info)
            if instructions is None:
                self._ood_unchecked = "the checkpoint lists no training instructions"
                self.get_logger().info(
                    "no out-of-distribution instruction check: the checkpoint lists no training instructions "
                    "(info['instructions'] in its config.json: checkpoints from vla-train carry it since this "
                    "check exists)"
                )
            else:
                threshold, source = resolve_ood_threshold(cfg.ood_distance_threshold, info)
                if cfg.inference_process and cfg.inference_threads:
                    import torch  # this process's torch is only the encoder's: leave a core to control

                    torch.set_num_threads(cfg.inference_threads)
                encoder = InstructionEncoder(model_config)
                self._ood_detector = InstructionOODDetector(
                    instructions,
                    lambda texts: encoder(list(texts)).numpy(),
                    threshold,
                    grounding=InstructionGrounding(instructions, encoder.tokens)
                    if model_config.instruction_nearest
                    else None,
                )
                self.get_logger().info(
                    f"out-of-distribution instruction check: {len(instructions)} training instructions, "
                    f"{model_config.text_encoder.value} encoder, cosine distance threshold {threshold:.3f} "
                    f"({source}); ready in {time.monotonic() - started:.1f} s"
                    + (
                        "; the model acts on the training instruction that matches best (instruction_nearest)"
                        if model_config.instruction_nearest
                        else ""
                    )
                )
        except Exception as e:  # advisory: the robot is commanded either way
            self._ood_unchecked = f"the check could not start: {type(e).__name__}: {e}"
            self.get_logger().error(f"no out-of-distribution instruction check: {self._ood_unchecked}")
        if self._ood_detector is None:
            with self._ood_lock:  # an instruction that arrived while loading is no longer pending
                self._instruction_check = self._unchecked(self._instruction)
        self._ood_wake.set()  # an instruction that arrived while loading is checked now

    # --- inference thread ------------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        idle = min(0.01, self.config.control_period_s / 2)
        if self.config.backend is not BackendKind.REMOTE and not self.config.inference_process:
            self._warm_up()  # a child process warms itself up before it reports ready
        alive = getattr(self.loaded.policy, "alive", None)
        while not self._stop.is_set():
            if callable(alive) and not alive():
                if not self.fatal.done():
                    self.fatal.set_result("the inference process died: stopping (the robot holds)")
                return
            try:
                ran = self._inference_step()
            except InferenceUnavailable as e:
                self._unavailable += 1
                self.get_logger().warning(f"no chunk, holding: {e}", throttle_duration_sec=2.0)
                ran = False
            except (CodecError, ValueError) as e:
                self._model_errors += 1
                self.get_logger().error(f"bad input or output, holding: {e}", throttle_duration_sec=2.0)
                self._stop.wait(0.1)
                ran = False
            except Exception as e:  # the model raised: hold, report, retry
                self._model_errors += 1
                self.get_logger().error(
                    f"inference failed, holding: {type(e).__name__}: {e}", throttle_duration_sec=2.0
                )
                self._stop.wait(0.5)
                ran = False
            if not ran:
                self._stop.wait(idle)

    def _warm_up(self) -> None:
        try:
            seconds = warm_up(self.loaded)
        except Exception as e:  # a model that cannot run on neutral input may still run on real input
            self.get_logger().warning(f"warm-up inference failed: {type(e).__name__}: {e}")
            return
        self.get_logger().info(f"model warmed up in {seconds:.2f} s")

    def _inference_step(self) -> bool:
        now = self._now_s()
        if self._input_hold(now) is not HoldReason.NONE:
            return False
        if self.queue.remaining(now) > self.config.refill_below_s:
            return False
        epoch = self.queue.epoch
        if self._reset_pending:
            self._reset_pending = False
            self.loaded.policy.reset()
        observation, stamp, oldest = self._observation()
        if oldest < self._instruction_since:
            # Seen before the instruction arrived (a reset may have moved everything since): wait for newer
            # frames, a camera period at most. Acting on them drove the arm toward the last episode's scene.
            return False
        started = time.monotonic()
        chunk = self.loaded.policy.infer(observation)
        self.inference_latency.add(time.monotonic() - started)
        if abs(chunk.stamp - stamp) > 1e-6:  # the node knows when the observation was taken
            chunk = ActionChunk(chunk.actions, chunk.names, stamp, chunk.dt)
        self._last_chunk_status = self.queue.push(chunk, self._now_s(), epoch)
        if self._last_chunk_status is not PushStatus.ACCEPTED:
            self.get_logger().warning(
                f"chunk refused: {self._last_chunk_status.value}", throttle_duration_sec=2.0
            )
        return True

    def _observation(self) -> tuple[dict[str, Any], float, float]:
        """The model's input, the chunk's stamp (the oldest image) and the oldest input's stamp (seconds)."""
        observation: dict[str, Any] = {"task": self._instruction}
        stamps = []
        for name, frame in self._frames.items():
            sample = frame.check(self.config.max_image_age_s).sample
            if sample is None:
                raise InferenceUnavailable(f"camera {name} has no frame")
            observation[image_key(name)] = image_to_rgb8(sample.frame)
            stamps.append(sample.stamp_ns)
        state = self._joint_state.check(self.config.max_state_age_s).sample
        if state is None:
            raise InferenceUnavailable("no /joint_states")
        observation[STATE_KEY] = self._state_index(state.frame.name, state.frame.position)
        stamp = min(stamps) / 1e9  # the oldest image: actions are timed from when the scene was seen
        observation["timestamp"] = stamp
        return observation, stamp, min(stamp, state.stamp_ns / 1e9)

    def _diagnostic_status(self) -> DiagnosticStatus:
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=self.loaded.description)
        hold = self._hold
        check = self._instruction_check
        if check.instruction != self._instruction:  # the instruction changed a moment ago
            check = self._unchecked(self._instruction)
        level, status.message = diagnostic_summary(
            hold, self._safety_status in SAFETY_REFUSING, self._safety_message, check
        )
        frame_rates = self._check_frame_rates()
        low = [r for r in frame_rates if r.status is FrameRateStatus.LOW]
        if low:  # frames lost before this node: it still commands on those that arrive, but says so
            level = max(level, DiagnosticLevel.WARN)
            status.message += "; " + "; ".join(r.summary() for r in low)
        status.level = bytes([level])
        now = self._now_s()
        tick_probe = self.queue.remaining(now)
        last = self._last_tick
        values = {
            "hold_reason": hold.name,
            "safety_state": self._safety_status or "unknown (no /safety/state received)",
            "instruction": self._instruction,
            **check.diagnostic_values(),
            "inference_latency_p50_ms": _ms(self.inference_latency.percentile(50)),
            "inference_latency_p99_ms": _ms(self.inference_latency.percentile(99)),
            "queue_depth_s": f"{tick_probe:.3f}",
            "queue_chunks": str(last.queued_chunks if last is not None else 0),
            "chunk_age_ms": _ms(last.chunk_age_s if last is not None else math.nan),
            "control_rate_target_hz": f"{self.config.control_rate_hz:.2f}",
            "control_rate_achieved_hz": f"{self.timing.achieved_rate_hz:.2f}",
            "control_jitter_p99_ms": _ms(self.timing.jitter_p99_s()),
            "obs_to_command_latency_p50_ms": _ms(self.timing.latencies.percentile(50)),
            "obs_to_command_latency_p99_ms": _ms(self.timing.latencies.percentile(99)),
            "commands_published": str(self.timing.published),
            "chunks_refused": str(self.queue.refused_chunks),
            "last_chunk_status": self._last_chunk_status.value,
            "stale_actions_skipped": str(self.queue.skipped_actions),
            "model_errors": str(self._model_errors),
            "joint_states_rejected": str(self._rejected_states),
            "inference_unavailable": str(self._unavailable),
            **{k: v for r in frame_rates for k, v in r.diagnostic_values().items()},
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status

    def _check_frame_rates(self) -> list[FrameRateReport]:
        """Each camera's frames received against its CameraInfo; logged once per change of verdict."""
        reports = []
        for name, check in self._frame_rates.items():
            report, changed = check.update(time.monotonic())
            if changed and report.status is FrameRateStatus.LOW:
                self.get_logger().warning(report.warning(self._image_topics[name]))
            elif changed:
                self.get_logger().info(report.summary())
            reports.append(report)
        return reports


def _ms(seconds: float) -> str:
    return "nan" if math.isnan(seconds) else f"{seconds * 1e3:.2f}"


def main(args: list[str] | None = None) -> int:
    # Python switches threads every 5 ms by default: too coarse for a 50 Hz timer beside an inference thread.
    sys.setswitchinterval(float(os.environ.get("VLA_POLICY_SWITCH_INTERVAL_S", "0.001")))
    return run_node(
        PolicyNode,
        "policy_node",
        args,
        # Bad parameters, a missing model, an embodiment mismatch, limits that cannot be loaded: refuse.
        refuse_on=(ManifestError, ValueError, RuntimeError, OSError),
        until=lambda node: node.fatal,  # set when the node must stop by itself (e.g. the first /joint_states)
        before_destroy=PolicyNode.stop,
    )


if __name__ == "__main__":
    sys.exit(main())
