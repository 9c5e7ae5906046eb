"""From recorded messages to dataset episodes: topic mapping, decoding, and bag conversion.

The same path serves the live recorder (frames from :class:`~vla_collector.sampler.FrameSampler`), the
recovery of an episode whose recorder died, and ``vla-dataset convert`` for any rosbag2 MCAP bag.
Messages stay raw CDR until a frame needs them; images are converted by ``vla_perception.codec``.

Pure Python: no rclpy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from vla_common.features import ENVIRONMENT_STATE_KEY
from vla_common.manifest import CameraSpec
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_perception.codec import image_to_rgb8

from vla_collector.bag import BagReader, RawMessage, deserialize, header_stamp_ns
from vla_collector.environment import (
    POSE_ARRAY_TYPE,
    EnvironmentSample,
    EnvironmentStateError,
    environment_state,
    parse_scene,
    pose_positions,
)
from vla_collector.lerobot import (
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    DatasetError,
    DatasetSpec,
    EpisodeRecorder,
    EpisodeSummary,
    LeRobotV3Writer,
    VideoCodecConfig,
)
from vla_collector.sampler import EpisodeReport, Frame, FrameSampler, SamplerConfig, joint_vector

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"


class ConversionError(ValueError):
    """Recorded data cannot become an episode (missing topic, wrong type, unknown joint...)."""


@dataclass(frozen=True)
class TopicMap:
    """Which topic feeds which dataset stream."""

    state: str = "/joint_states"
    action: str = "/joint_commands"
    cameras: Mapping[str, str] = field(default_factory=lambda: {"front": "/camera/image_raw"})
    instruction: str = "/task_instruction"
    # recorded raw for tools (Foxglove, rectification), not used for frames: topic -> message type
    extra: Mapping[str, str] = field(default_factory=dict)
    # a simulator's geometry_msgs/PoseArray and std_msgs/String scene description, from which
    # observation.environment_state is computed (vla_collector.environment); "" = not recorded
    object_poses: str = ""
    scene: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", dict(self.cameras))
        object.__setattr__(self, "extra", dict(self.extra))
        if not self.state or not self.action:
            raise ConversionError("state and action topics must be set")
        if bool(self.object_poses) != bool(self.scene):
            raise ConversionError("object_poses and scene topics go together: set both or neither")
        topics = [self.state, self.action, *self.cameras.values()]
        topics += [t for t in (self.object_poses, self.scene) if t]
        if self.state == self.action:
            raise ConversionError(f"state and action cannot share the topic {self.state}")
        if len(set(topics)) != len(topics):
            raise ConversionError(f"a topic feeds two streams: {topics}")

    def recorded_topics(self) -> dict[str, str]:
        """topic -> message type for everything the recorder subscribes to."""
        topics = {self.state: JOINT_STATE_TYPE, self.action: JOINT_STATE_TYPE}
        topics.update({t: IMAGE_TYPE for t in self.cameras.values()})
        if self.instruction:
            topics[self.instruction] = STRING_TYPE
        topics.update(self.environment_topics())
        return {**self.extra, **topics}

    def environment_topics(self) -> dict[str, str]:
        """topic -> message type of the environment-state sources (empty when not recorded)."""
        if not self.object_poses:
            return {}
        return {self.object_poses: POSE_ARRAY_TYPE, self.scene: STRING_TYPE}

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "action": self.action,
            "cameras": dict(self.cameras),
            "instruction": self.instruction,
            "extra": dict(self.extra),
            "object_poses": self.object_poses,
            "scene": self.scene,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TopicMap:
        return cls(
            d["state"],
            d["action"],
            dict(d["cameras"]),
            d.get("instruction", ""),
            dict(d.get("extra", {})),
            d.get("object_poses", ""),
            d.get("scene", ""),
        )


def camera_info_topic(image_topic: str) -> str | None:
    """The CameraInfo topic beside an image topic (``/camera/image_raw`` -> ``/camera/camera_info``)."""
    base, _, leaf = image_topic.rpartition("/")
    return f"{base}/camera_info" if leaf.startswith("image") and base else None


@dataclass(frozen=True)
class DatasetTarget:
    """The dataset episodes go to, and what its rows mean (empty joint names: taken from the first
    /joint_states message; empty action names: the state's)."""

    root: Path
    fps: int = 10
    robot_type: str = "panda"
    state_names: tuple[str, ...] = PANDA_COMMAND_JOINTS
    action_names: tuple[str, ...] = PANDA_COMMAND_JOINTS
    video: VideoCodecConfig = field(default_factory=VideoCodecConfig)
    # Packing limits of a new dataset (MiB per data file / per mp4); an existing one keeps its info.json's.
    data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "state_names", tuple(self.state_names))
        object.__setattr__(self, "action_names", tuple(self.action_names))

    def spec(self, cameras: Iterable[CameraSpec], environment_state_names: Iterable[str] = ()) -> DatasetSpec:
        return DatasetSpec(
            fps=self.fps,
            robot_type=self.robot_type,
            state_names=self.state_names,
            action_names=self.action_names or self.state_names,
            cameras=tuple(cameras),
            video=self.video,
            environment_state_names=tuple(environment_state_names),
            data_files_size_in_mb=self.data_files_size_in_mb,
            video_files_size_in_mb=self.video_files_size_in_mb,
        )


def decode_rgb(cdr: bytes) -> np.ndarray:
    """CDR sensor_msgs/Image -> HxWx3 uint8 rgb, through the one codec."""
    m = deserialize(IMAGE_TYPE, cdr)
    msg = Image(
        height=int(m.height),
        width=int(m.width),
        encoding=m.encoding,
        is_bigendian=int(m.is_bigendian),
        step=int(m.step),
    )
    msg.data = np.asarray(m.data, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(image_to_rgb8(msg))


def decode_joints(cdr: bytes, wanted: tuple[str, ...]) -> list[float]:
    m = deserialize(JOINT_STATE_TYPE, cdr)
    return joint_vector(list(m.name), list(m.position), wanted)


def decode_string(cdr: bytes) -> str:
    return str(deserialize(STRING_TYPE, cdr).data)


def message_stamp(cdr: bytes, receive_ns: int) -> int:
    """The header stamp, or the receive time when the publisher left it zero."""
    stamp = header_stamp_ns(cdr)
    return stamp if stamp > 0 else receive_ns


class EpisodeBuilder:
    """Frames -> one dataset episode. The dataset is opened (or created) on the first frame, when the
    camera sizes are known; a size that differs from the dataset's is refused."""

    def __init__(
        self,
        target: DatasetTarget,
        cameras: Iterable[str],
        writer: LeRobotV3Writer | None = None,
    ) -> None:
        self.target = target
        self.cameras = tuple(cameras)
        self.writer = writer
        self._recorder: EpisodeRecorder | None = None
        self.frames = 0

    def add(self, frame: Frame) -> None:
        if not self.target.state_names:  # take the joints (and their order) from the first state message
            names = tuple(deserialize(JOINT_STATE_TYPE, frame.state.payload).name)
            self.target = replace(
                self.target, state_names=names, action_names=self.target.action_names or names
            )
        state = decode_joints(frame.state.payload, self.target.state_names)
        action = decode_joints(frame.action.payload, self.target.action_names or self.target.state_names)
        images = {cam: decode_rgb(frame.images[cam].payload) for cam in self.cameras}
        env: EnvironmentSample | None = frame.environment.payload if frame.environment is not None else None
        if self._recorder is None:
            specs = [CameraSpec(cam, img.shape[0], img.shape[1]) for cam, img in images.items()]
            spec = self.target.spec(specs, env.names if env is not None else ())
            if self.writer is None:
                self.writer = LeRobotV3Writer.open_or_create(self.target.root, spec)
            elif self.writer.spec.features() != spec.features():
                ours, theirs = spec.environment_state_names, self.writer.spec.environment_state_names
                if ours != theirs:
                    raise DatasetError(
                        f"this episode's {ENVIRONMENT_STATE_KEY} names {list(ours) or '(none)'} do not match "
                        f"the dataset's {list(theirs) or '(none)'}"
                    )
                if spec.cameras == self.writer.spec.cameras and spec.video != self.writer.spec.video:
                    raise DatasetError(
                        f"video settings {spec.video} differ from the dataset's {self.writer.spec.video} "
                        "(info.json records one per camera): record with the dataset's codec, crf, g and preset"
                    )
                raise DatasetError(
                    f"camera sizes {[(c.name, c.height, c.width) for c in specs]} do not match the dataset's "
                    f"{[(c.name, c.height, c.width) for c in self.writer.spec.cameras]}"
                )
            self._recorder = self.writer.begin_episode()
        if not frame.task:
            raise ConversionError(
                "no task instruction for this episode (publish /task_instruction or set a default task)"
            )
        if (
            env is not None
            and self.writer is not None
            and env.names != self.writer.spec.environment_state_names
        ):
            raise DatasetError(f"{ENVIRONMENT_STATE_KEY} names changed within the episode: {list(env.names)}")
        self._recorder.add_frame(state, action, images, frame.task, env.values if env is not None else None)
        self.frames += 1

    def commit(self) -> EpisodeSummary:
        if self._recorder is None:
            raise DatasetError("the episode has no frames")
        return self._recorder.finish()

    def abort(self) -> None:
        if self._recorder is not None:
            self._recorder.abort()
            self._recorder = None


@dataclass(frozen=True)
class ConversionResult:
    report: EpisodeReport
    summary: EpisodeSummary | None  # None when the episode was refused


class MessageFeed:
    """Recorded messages into a :class:`FrameSampler`, by the one set of rules the live recorder, crash recovery
    and ``vla-dataset convert`` share (so a bag converted later gives the frames that were written live).

    ``feed(topic, data, log_time_ns)`` takes one message as recorded (raw CDR and its receive time):

    * the instruction sets the task from its log time (an empty one, "idle", changes nothing);
    * state, action and camera messages enter the sampler at their header stamp (the receive time when the
      stamp is zero); a joint message that lacks a joint the dataset needs is refused first
      (``ValueError``/``KeyError``/``BagError``, never added), so it can never become a frame;
    * with the environment state sampled (``SamplerConfig.environment``), the scene description is kept (the
      latest one in force) and each object-pose message enters the sampler as the environment state it gives
      with that scene (:mod:`vla_collector.environment`); a pose message no scene explains is refused;
    * after each of those, the ticks it decides are returned (:meth:`FrameSampler.advance_received`);
    * any other topic (camera_info, extras) is ignored.
    """

    def __init__(
        self,
        sampler: FrameSampler,
        topics: TopicMap,
        state_names: tuple[str, ...] = (),
        action_names: tuple[str, ...] = (),
    ) -> None:
        self.sampler = sampler
        self.topics = topics
        self.state_names = tuple(state_names)
        self.action_names = tuple(action_names) or self.state_names
        self._cam_by_topic = {t: c for c, t in topics.cameras.items()}
        self.environment = sampler.config.environment
        if self.environment and not topics.object_poses:
            raise ConversionError("the environment state is sampled but no object_poses/scene topics are set")
        self._env_topics = (topics.object_poses, topics.scene) if self.environment else ()
        self.scene: dict[str, Any] | None = None

    def is_sampled(self, topic: str) -> bool:
        return (
            topic in (self.topics.state, self.topics.action)
            or topic in self._cam_by_topic
            or topic in self._env_topics
        )

    def instruction(self, log_time_ns: int, text: str) -> None:
        if text:
            self.sampler.set_task(log_time_ns, text)

    def feed(self, topic: str, data: bytes, log_time_ns: int) -> list[Frame]:
        topics = self.topics
        if topic == topics.instruction:
            self.instruction(log_time_ns, decode_string(data).strip())
            return []
        if not self.is_sampled(topic):
            return []
        if topic == topics.scene:
            self.scene = parse_scene(decode_string(data))
            return []
        stamp = message_stamp(data, log_time_ns)
        if topic == topics.object_poses:
            if self.scene is None:
                raise EnvironmentStateError(f"object poses before any scene description on {topics.scene}")
            self.sampler.add_environment(stamp, environment_state(self.scene, pose_positions(data)))
        elif topic == topics.state:
            decode_joints(data, self.state_names)  # a frame must be able to use it
            self.sampler.add_state(stamp, data)
        elif topic == topics.action:
            decode_joints(data, self.action_names)
            self.sampler.add_action(stamp, data)
        else:
            self.sampler.add_image(self._cam_by_topic[topic], stamp, data)
        return self.sampler.advance_received(log_time_ns)


def frames_from_messages(
    messages: Iterable[RawMessage],
    topics: TopicMap,
    sampler: FrameSampler,
    *,
    state_names: tuple[str, ...] = (),
    action_names: tuple[str, ...] = (),
    on_reject: Callable[[RawMessage, Exception], None] | None = None,
) -> Iterable[tuple[RawMessage, list[Frame]]]:
    """Feed recorded messages to a sampler in log order (:class:`MessageFeed`); yields each message with the
    frames it decides. A message the dataset cannot use is skipped (and passed to ``on_reject``), as the
    live recorder skips it."""
    feed = MessageFeed(sampler, topics, state_names, action_names)
    for m in messages:
        try:
            frames = feed.feed(m.topic, m.data, m.log_time_ns)
        except (ValueError, KeyError) as e:  # BagError and ConversionError are ValueErrors
            if on_reject is not None:
                on_reject(m, e)
            frames = []
        yield m, frames


def convert_bag(
    bag: str | os.PathLike[str],
    target: DatasetTarget,
    topics: TopicMap,
    *,
    sampler_config: SamplerConfig | None = None,
    default_task: str = "",
    writer: LeRobotV3Writer | None = None,
    write_refused: bool = False,
    start_ns: int = 0,
    stop_ns: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[ConversionResult, LeRobotV3Writer | None]:
    """One bag -> one dataset episode (unless the report refuses it and ``write_refused`` is false).

    ``start_ns`` and ``stop_ns`` are the episode start and stop the live recorder used (``episode.json``):
    ticks are then placed, and the last one chosen, exactly as it did. 0 starts at the first instant all
    streams are present and stops after the last message.

    Frames are encoded as they are decided (memory stays bounded); a refused episode is aborted at the end.
    """
    reader = BagReader(bag)
    available = reader.topics()
    config = sampler_config or SamplerConfig(cameras=tuple(topics.cameras))
    if set(config.cameras) != set(topics.cameras):
        raise ConversionError(f"sampler cameras {config.cameras} != mapped cameras {sorted(topics.cameras)}")
    if config.environment and not topics.object_poses:
        raise ConversionError("the environment state is sampled but no object_poses/scene topics are set")
    needed = {topics.state: JOINT_STATE_TYPE, topics.action: JOINT_STATE_TYPE}
    needed.update({t: IMAGE_TYPE for t in topics.cameras.values()})
    if config.environment:
        needed[topics.object_poses] = POSE_ARRAY_TYPE
    read = {*needed, topics.instruction, *((topics.scene,) if config.environment else ())}
    for topic, msg_type in {**needed, **(topics.environment_topics() if config.environment else {})}.items():
        if topic not in available:
            raise ConversionError(f"{bag}: topic {topic} is not in the bag (it has {sorted(available)})")
        if available[topic].msg_type != msg_type:
            raise ConversionError(f"{bag}: {topic} is {available[topic].msg_type}, expected {msg_type}")
    builder = EpisodeBuilder(target, config.cameras, writer)
    sampler = FrameSampler(config, start_ns=start_ns, task=default_task)
    last_ns = 0
    try:
        for message, frames in frames_from_messages(
            reader.messages(read),
            topics,
            sampler,
            state_names=target.state_names,
            action_names=target.action_names,
        ):
            if message.topic in needed:
                last_ns = max(last_ns, message.log_time_ns)
            for frame in frames:
                builder.add(frame)
            if progress is not None:
                progress(1)
        tail, report = sampler.finish(stop_ns or last_ns + 1)
        for frame in tail:
            builder.add(frame)
        if report.frames == 0 or (not report.accepted and not write_refused):
            builder.abort()
            return ConversionResult(report, None), builder.writer
        summary = builder.commit()
    except BaseException:
        builder.abort()
        raise
    return ConversionResult(report, summary), builder.writer
