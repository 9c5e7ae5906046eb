"""collector_node: record demonstrations through topics into rosbag2 MCAP bags and a LeRobotDataset v3.0.

Services (std_srvs): ``~/start`` (Trigger), ``~/stop`` (SetBool: data = the demonstration succeeded),
``~/discard`` (Trigger). With ``episode_on_instruction`` a new non-empty ``/task_instruction`` starts an
episode (ending the previous one as a success) and an empty one ends it.

In simulation (``record_environment_state``: ``auto`` by default) it also subscribes to the simulator's
``/sim/object_poses`` (geometry_msgs/PoseArray) and ``/sim/scene`` (std_msgs/String JSON, transient local),
records both in the raw bag, and writes ``observation.environment_state`` (target.x/y/z, goal.x/y/z: where the
instruction's block and its goal are, robot base frame; :mod:`vla_collector.environment`) into the dataset:
``auto`` does so for a new dataset when a simulator publishes ``/sim/scene`` at an episode's start, and an
existing dataset keeps what it has; ``on`` always (refused for a dataset without it); ``off`` never.

Subscriptions take raw CDR (``raw=True``): messages go to the bag exactly as published and are only decoded
for the frames the dataset needs. The callbacks enqueue; :class:`vla_collector.collector.Collector` does the
work on its own thread. Images are best effort (sensor data); joint topics reliable; the instruction
reliable + transient-local. 640x480 rgb8 frames exceed Fast DDS's default 512 KB shared-memory segment
and then mostly drop unless the camera's process has vla_perception's profile (a 16 MB segment; the bringup,
vla-up and the launch files, gives it to every image process); bench/collector_record.py measures the result
(recorded/published = 1.0 for 2 x 640x480 @ 30 Hz). Each camera's frames received are compared with its
CameraInfo (``<camera>/camera_info``, counted even when ``record_camera_info`` is off): below 90 % the node
logs a warning with the fix once and /diagnostics turns WARN (:mod:`vla_perception.frame_rate`).

Spin it with a ``SingleThreadedExecutor`` (``main`` does). rclpy's ``MultiThreadedExecutor`` hands every
message to a thread pool and rebuilds its wait set per callback: measured on a loaded 2-core machine it cost
3-4x the CPU (45-57 % of a core against 13-14 % for 2 x 100 Hz joints + a 33 Hz camera) and delivered joint
messages up to 0.3-1 s late; once the reliable joint queue (``joint_qos_depth``) fills, the oldest messages
are overwritten, the bag loses them and every frame samples stale data. The services answer when the worker
has finished (``~/stop`` waits for the episode to be written), so while one runs no message is taken; the
episode has ended by then, and the middleware holds ``joint_qos_depth`` messages meanwhile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from vla_common.node import declare_parameters, run_node
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_perception.frame_rate import FrameRateCheck, FrameRateReport, FrameRateStatus

from vla_collector.bag import Compression, QosProfile
from vla_collector.collector import (
    Collector,
    CollectorConfig,
    CollectorError,
    CollectorState,
    EnvironmentStateMode,
    EpisodeResult,
    PartialEpisodePolicy,
)
from vla_collector.episode import CAMERA_INFO_TYPE, TopicMap, camera_info_topic
from vla_collector.lerobot import VideoCodecConfig
from vla_collector.sampler import SamplerConfig

PARAMETERS: dict[str, tuple[Any, str]] = {
    "dataset_root": ("~/vla_datasets/demo", "LeRobotDataset v3.0 root (created or appended to)"),
    "raw_root": ("", "where raw MCAP episodes go; empty = '<dataset_root>.raw' beside the dataset"),
    "fps": (10, "dataset frame rate (frames are sampled at exactly this rate)"),
    "robot_type": ("panda", "robot_type in info.json and the embodiment manifest"),
    "joint_names": (
        list(PANDA_COMMAND_JOINTS),
        "observation.state joints, in order (picked by name from /joint_states)",
    ),
    "action_joint_names": ([""], "action joints, in order (from /joint_commands); [''] = joint_names"),
    "cameras": (["front"], "camera names (dataset keys observation.images.<name>)"),
    "camera_topics": (["camera/image_raw"], "one sensor_msgs/Image topic per camera, same order"),
    "state_topic": ("joint_states", "sensor_msgs/JointState observation topic"),
    "action_topic": ("joint_commands", "sensor_msgs/JointState: the action actually sent to the robot"),
    "instruction_topic": ("task_instruction", "std_msgs/String language instruction ('' = do not record)"),
    "record_camera_info": (True, "also record <camera>/camera_info beside each .../image_raw (raw bag only)"),
    "default_task": ("", "task text when no instruction was published"),
    "episode_on_instruction": (False, "start/stop episodes when the instruction changes"),
    "keep_failed_episodes": (False, "write episodes stopped with success=false to the dataset too"),
    "partial_episode_policy": ("discard", "on start, episodes a crash interrupted: recover | discard"),
    "record_environment_state": (
        "auto",
        "observation.environment_state (the simulator's privileged target/goal positions, from "
        "object_poses_topic and scene_topic): auto = when a simulator publishes scene_topic as an episode "
        "starts (an existing dataset keeps what it has) | on | off (real robots; nothing subscribed)",
    ),
    "object_poses_topic": ("sim/object_poses", "geometry_msgs/PoseArray of the simulator's objects"),
    "scene_topic": (
        "sim/scene",
        "std_msgs/String JSON naming those objects and the instruction's referents",
    ),
    "state_max_age_s": (0.0, "latest state older than this at a tick is a drop; 0 = 1.5 frame periods"),
    "camera_max_age_s": (0.0, "latest image older than this at a tick is a drop; 0 = 1.5 frame periods"),
    "action_max_age_s": (0.0, "latest command older than this is a drop; 0 = 3 frame periods"),
    "action_lookahead_s": (-1.0, "action = latest command before tick + this; <0 = one frame period"),
    "max_wait_s": (
        0.5,
        "how far the other streams (by stamp) may move past a tick before a stalled stream's frame is a drop",
    ),
    "rate_tolerance": (0.05, "refuse an episode whose real rate is below fps * (1 - this)"),
    "max_gap_s": (0.5, "refuse an episode in which any stream is silent longer than this"),
    "video_codec": ("libsvtav1", "libsvtav1 (AV1, LeRobot's default) | libx264"),
    "video_crf": (30, "encoder quality (lower = better, bigger)"),
    "video_g": (2, "keyframe interval (LeRobot uses 2 for fast random access)"),
    "video_preset": (
        "",
        "encoder speed preset, recorded in info.json: SVT-AV1 an integer -2..13 (higher = faster), x264 a name "
        "(ultrafast .. veryslow); '' = the codec's default (12, veryfast)",
    ),
    "data_files_size_in_mb": (
        100.0,
        "a new dataset packs episodes into data/chunk-*/file-*.parquet files of up to this many MiB "
        "(LeRobot's default 100; an existing dataset keeps its info.json's)",
    ),
    "video_files_size_in_mb": (
        200.0,
        "likewise for each camera's videos/*/chunk-*/file-*.mp4 (LeRobot's default 200)",
    ),
    "mcap_compression": ("lz4", "raw bag chunk compression: lz4 | zstd | none"),
    "queue_size": (5000, "messages buffered for the recorder thread before new ones are counted lost"),
    "queue_max_mb": (
        512.0,
        "bytes buffered for the recorder thread (MiB) before new messages are counted lost",
    ),
    "image_qos_depth": (10, "image subscription history depth (best effort)"),
    "joint_qos_depth": (100, "joint topic subscription history depth"),
    "joint_qos_reliability": (
        "reliable",
        "joint topics: reliable (lossless; needs reliable publishers) | best_effort",
    ),
    "diagnostics_period_s": (1.0, "period of /diagnostics reports"),
}


# Parameters that take either type: video_preset is an int for SVT-AV1 (-p video_preset:=8) and a name for x264.
DYNAMIC_PARAMETERS = ("video_preset",)


def _optional(value: float) -> float | None:
    return None if value <= 0 else value


def config_from_parameters(p: dict[str, Any]) -> CollectorConfig:
    cameras, camera_topics = list(p["cameras"]), list(p["camera_topics"])
    if len(cameras) != len(camera_topics):
        raise ValueError(f"cameras {cameras} and camera_topics {camera_topics} must have the same length")
    action_names = tuple(n for n in p["action_joint_names"] if n)
    fps = int(p["fps"])
    environment = EnvironmentStateMode(p["record_environment_state"])
    with_environment = environment is not EnvironmentStateMode.OFF
    sampler = SamplerConfig(
        fps=fps,
        cameras=tuple(cameras),
        state_max_age_s=_optional(float(p["state_max_age_s"])),
        camera_max_age_s=_optional(float(p["camera_max_age_s"])),
        action_max_age_s=_optional(float(p["action_max_age_s"])),
        action_lookahead_s=None if float(p["action_lookahead_s"]) < 0 else float(p["action_lookahead_s"]),
        max_wait_s=float(p["max_wait_s"]),
        rate_tolerance=float(p["rate_tolerance"]),
        max_gap_s=float(p["max_gap_s"]),
    )
    return CollectorConfig(
        dataset_root=Path(p["dataset_root"]),
        raw_root=Path(p["raw_root"]) if p["raw_root"] else None,
        topics=TopicMap(
            state=p["state_topic"],
            action=p["action_topic"],
            cameras=dict(zip(cameras, camera_topics, strict=True)),
            instruction=p["instruction_topic"],
            extra={
                info: CAMERA_INFO_TYPE
                for info in (camera_info_topic(t) for t in camera_topics)
                if info and bool(p["record_camera_info"])
            },
            object_poses=p["object_poses_topic"] if with_environment else "",
            scene=p["scene_topic"] if with_environment else "",
        ),
        fps=fps,
        robot_type=p["robot_type"],
        state_names=tuple(p["joint_names"]),
        action_names=action_names,
        sampler=sampler,
        video=VideoCodecConfig(
            codec=p["video_codec"],
            crf=int(p["video_crf"]),
            g=int(p["video_g"]),
            preset=p["video_preset"],
        ),
        data_files_size_in_mb=float(p["data_files_size_in_mb"]),
        video_files_size_in_mb=float(p["video_files_size_in_mb"]),
        compression=Compression(p["mcap_compression"]),
        default_task=p["default_task"],
        episode_on_instruction=bool(p["episode_on_instruction"]),
        keep_failed_episodes=bool(p["keep_failed_episodes"]),
        partial_episode_policy=PartialEpisodePolicy(p["partial_episode_policy"]),
        record_environment_state=environment,
        queue_size=int(p["queue_size"]),
        queue_max_mb=float(p["queue_max_mb"]),
    )


TOPIC_PARAMETERS = ("state_topic", "action_topic", "instruction_topic", "object_poses_topic", "scene_topic")


def expand_topic_parameters(p: dict[str, Any], resolve: Callable[..., str]) -> dict[str, Any]:
    """The topic parameters as fully qualified names in the node's namespace (``joint_states`` ->
    ``/joint_states`` in the root namespace, ``/arm2/joint_states`` under ``-r __ns:=/arm2``), before
    remapping as before: the bag and the dataset keep recording the names they recorded. Empty stays empty."""
    expanded = dict(p)
    for key in TOPIC_PARAMETERS:
        if expanded[key]:
            expanded[key] = resolve(expanded[key], only_expand=True)
    expanded["camera_topics"] = [resolve(t, only_expand=True) if t else t for t in expanded["camera_topics"]]
    return expanded


def _offered(info: Any) -> QosProfile:
    q = info.qos_profile
    return QosProfile(
        reliability=q.reliability.name.lower(),
        durability=q.durability.name.lower(),
        history=q.history.name.lower(),
        depth=int(q.depth),
    )


class CollectorNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("collector_node", **node_kwargs)
        static = {name: entry for name, entry in PARAMETERS.items() if name not in DYNAMIC_PARAMETERS}
        values = declare_parameters(self, static, floats_take_ints=True)  # -p max_gap_s:=1, sizes:=100
        for name in DYNAMIC_PARAMETERS:
            default, description = PARAMETERS[name]
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, dynamic_typing=True)
            )
            values[name] = self.get_parameter(name).value
        p = expand_topic_parameters(values, self.resolve_topic_name)
        self.config = config_from_parameters(p)
        # Refreshed on the executor thread (diagnostics timer, ~/start); the worker only reads it.
        self._scene_published = False
        self.collector = Collector(
            self.config,
            clock=lambda: self.get_clock().now().nanoseconds,
            log=self.get_logger().info,
            on_result=self._on_result,
            scene_available=lambda: self._scene_published,
        )
        for result in self.collector.recovered:
            self.get_logger().warning(f"after a crash: {result.raw_path}: {result.message}")
        topics = self.config.topics
        image_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(p["image_qos_depth"]),
            reliability=ReliabilityPolicy.BEST_EFFORT,
        )
        joint_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=int(p["joint_qos_depth"]),
            reliability=ReliabilityPolicy.RELIABLE,
        )
        latched = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        subscriptions: list[tuple[Any, str, QoSProfile]] = [
            (JointState, topics.state, joint_qos),
            (JointState, topics.action, joint_qos),
            *((Image, t, image_qos) for t in topics.cameras.values()),
            *((CameraInfo, t, image_qos) for t in topics.extra),
        ]
        if topics.instruction:
            subscriptions.append((String, topics.instruction, latched))
        if topics.object_poses:
            subscriptions.append((PoseArray, topics.object_poses, joint_qos))
            subscriptions.append((String, topics.scene, latched))
        # Frames received against each camera's CameraInfo (lost frames: a warning and /diagnostics WARN). The
        # recorded camera_info topics are counted as they arrive; without record_camera_info, only counted.
        self._frame_rates = {name: FrameRateCheck(name) for name in topics.cameras}
        self._counters: dict[str, Callable[[float], None]] = {}  # topic -> what it counts
        for name, image_topic in topics.cameras.items():
            self._counters[image_topic] = self._frame_rates[name].frame
            info_topic = camera_info_topic(image_topic)
            if info_topic:
                self._counters[info_topic] = self._frame_rates[name].info
                if info_topic not in topics.extra:
                    subscriptions.append((CameraInfo, info_topic, image_qos))
        self._subs = [
            self.create_subscription(msg_type, topic, self._receiver(topic), qos, raw=True)
            for msg_type, topic, qos in subscriptions
        ]
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/start", self._start, callback_group=services)
        self.create_service(SetBool, "~/stop", self._stop, callback_group=services)
        self.create_service(Trigger, "~/discard", self._discard, callback_group=services)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics)
        self.get_logger().info(
            f"recording {sorted(topics.recorded_topics())} at {self.config.fps} fps into {self.config.dataset_root} "
            f"(raw: {self.config.raw_root})"
        )

    def _receiver(self, topic: str) -> Any:
        count = self._counters.get(topic)
        record = topic in self.config.topics.recorded_topics()  # a CameraInfo may be counted, not recorded

        def receive(data: bytes) -> None:
            if count is not None:
                count(time.monotonic())
            if record:
                self.collector.submit(topic, data, self.get_clock().now().nanoseconds)

        return receive

    def _record_offered_qos(self) -> None:
        for topic in self.config.topics.recorded_topics():
            self.collector.set_offered_qos(
                topic, [_offered(i) for i in self.get_publishers_info_by_topic(topic)]
            )

    def _refresh_scene_published(self) -> None:
        scene = self.config.topics.scene
        self._scene_published = bool(scene) and self.count_publishers(scene) > 0

    def _start(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            self._refresh_scene_published()
            self._record_offered_qos()
            response.message = f"recording {self.collector.start()}"
            response.success = True
        except (CollectorError, OSError, ValueError) as e:
            response.success, response.message = False, str(e)
            self.get_logger().error(f"start refused: {e}")
        return response

    def _stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        try:
            result = self.collector.stop(success=bool(request.data))
            response.success, response.message = result.ok, result.message
        except (CollectorError, OSError, ValueError) as e:
            response.success, response.message = False, str(e)
            self.get_logger().error(f"stop: {e}")
        return response

    def _discard(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            result = self.collector.discard()
            response.success, response.message = True, result.message
        except (CollectorError, OSError) as e:
            response.success, response.message = False, str(e)
        return response

    def _on_result(self, result: EpisodeResult) -> None:
        log = self.get_logger()
        (log.info if result.ok else log.error)(f"episode {result.raw_path}: {result.message}")

    def _publish_diagnostics(self) -> None:
        self._refresh_scene_published()
        s = self.collector.status()
        status = DiagnosticStatus(name="vla_collector: collector_node", hardware_id="collector")
        if s.state is CollectorState.STOPPED:
            status.level, status.message = DiagnosticStatus.ERROR, "recorder thread stopped"
        elif s.messages_lost or s.last_error:
            status.level = DiagnosticStatus.WARN
            status.message = s.last_error or f"{s.messages_lost} messages lost (recorder queue full)"
        else:
            status.level, status.message = DiagnosticStatus.OK, s.state.value
        frame_rates = self._check_frame_rates()
        low = [r.summary() for r in frame_rates if r.status is FrameRateStatus.LOW]
        if low:  # frames lost before the recorder: the dataset would hold fewer, older frames
            status.level = max(status.level, DiagnosticStatus.WARN)
            status.message = "; ".join([status.message, *low])
        values = {
            "state": s.state.value,
            "task": s.task,
            "episodes_written": s.episodes_written,
            "episodes_refused": s.episodes_refused,
            "episode_frames": s.episode_frames,
            "episode_dropped_frames": s.episode_dropped,
            "messages_recorded": s.messages_recorded,
            "messages_lost": s.messages_lost,
            "messages_rejected": s.rejected,
            "last_result": s.last_result,
            **{k: v for r in frame_rates for k, v in r.diagnostic_values().items()},
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def _check_frame_rates(self) -> list[FrameRateReport]:
        """Each camera's frames received against its CameraInfo; logged once per change of verdict."""
        reports = []
        for name, check in self._frame_rates.items():
            report, changed = check.update(time.monotonic())
            if changed and report.status is FrameRateStatus.LOW:
                self.get_logger().warning(report.warning(self.config.topics.cameras[name]))
            elif changed:
                self.get_logger().info(report.summary())
            reports.append(report)
        return reports

    def destroy_node(self) -> None:
        result = self.collector.close()
        if result is not None:
            self.get_logger().info(f"on shutdown: {result.message}")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(CollectorNode, "collector_node", args, refuse_on=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
