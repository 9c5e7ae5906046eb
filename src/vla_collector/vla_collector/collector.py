"""The recorder behind ``collector_node``: episodes, raw bags, live dataset writing, crash recovery.

One worker thread owns everything that writes: the node's callbacks only enqueue raw CDR bytes
(:meth:`Collector.submit`) and service requests (:meth:`Collector.start` / ``stop`` / ``discard``, which wait
for the worker's answer). Per episode the worker

* writes every message, untouched, to ``<raw_root>/<episode>/`` (a rosbag2 MCAP bag) and keeps
  ``episode.json`` there (status, task, settings, and at the end the report);
* samples frames at the dataset fps (:mod:`vla_collector.sampler`) and streams them into the LeRobot
  writer, whose encoders run on their own threads, so stopping only flushes the last frames;
* on stop judges the episode: written to the dataset, refused (real rate or gap out of tolerance; the
  raw bag is kept and the error names the late stream), not written (failed demonstration), or discarded.

In simulation it also records ``observation.environment_state`` (the instruction's target and goal
positions, :mod:`vla_collector.environment`) from the simulator's object poses and scene description, by
``record_environment_state``: ``on``, ``off``, or ``auto`` (the default): an existing dataset keeps what it
has; a new one gets the feature when a scene description was received or ``scene_available()`` (the node:
a publisher on the scene topic) says a simulator is there when the episode starts. The latest scene
description is kept between episodes (it is published once per reset) and starts every episode's bag.

On start it repairs the dataset (:meth:`LeRobotV3Writer.open`) and deals with episodes a crash left in
``RECORDING``: their bag is made whole (:func:`~vla_collector.bag.recover_bag`) and, by policy, converted
into the dataset or marked discarded.

Pure Python: no rclpy (the node passes a clock function).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vla_common.atomic import write_json_atomic
from vla_common.features import ENVIRONMENT_STATE_KEY
from vla_common.robots import PANDA_COMMAND_JOINTS

from vla_collector.bag import BagWriter, Compression, QosProfile, recover_bag
from vla_collector.episode import (
    DatasetTarget,
    EpisodeBuilder,
    MessageFeed,
    TopicMap,
    convert_bag,
    decode_string,
)
from vla_collector.lerobot import (
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    DatasetError,
    DatasetWriteError,
    LeRobotV3Writer,
    VideoCodecConfig,
)
from vla_collector.sampler import EpisodeReport, FrameSampler, SamplerConfig

EPISODE_FILE = "episode.json"
REJECT_LOG_PERIOD_S = 5.0


class CollectorError(RuntimeError):
    """A request the collector cannot honour (already recording, nothing to stop, no task...)."""


class CollectorState(str, enum.Enum):
    IDLE = "idle"
    RECORDING = "recording"
    STOPPED = "stopped"  # the worker has shut down


class EpisodeStatus(str, enum.Enum):
    RECORDING = "recording"  # still in episode.json after a crash: recover or discard on restart
    WRITTEN = "written"
    REFUSED = "refused"  # out of tolerance: raw bag kept, not in the dataset
    NOT_WRITTEN = "not_written"  # stopped with success=false and keep_failed_episodes off
    DISCARDED = "discarded"
    RECOVERED = "recovered"  # partial episode after a crash, written to the dataset
    PARTIAL_DISCARDED = "partial_discarded"  # partial episode after a crash, left out by policy
    ERROR = "error"  # writing failed (e.g. disk full): raw bag kept as far as it got


class PartialEpisodePolicy(str, enum.Enum):
    RECOVER = "recover"
    DISCARD = "discard"


class EnvironmentStateMode(str, enum.Enum):
    """Whether episodes record ``observation.environment_state`` (see the module docstring)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class CollectorConfig:
    """Everything the recorder needs; validated once, here."""

    dataset_root: Path
    raw_root: Path | None = None  # default: "<dataset_root>.raw" beside the dataset
    topics: TopicMap = field(default_factory=TopicMap)
    fps: int = 10
    robot_type: str = "panda"
    state_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    sampler: SamplerConfig | None = None
    video: VideoCodecConfig = field(default_factory=VideoCodecConfig)
    # packing limits of a new dataset (MiB per data file / per mp4); an existing dataset keeps its own
    data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB
    compression: Compression = Compression.LZ4
    default_task: str = ""
    episode_on_instruction: bool = False
    keep_failed_episodes: bool = False
    partial_episode_policy: PartialEpisodePolicy = PartialEpisodePolicy.DISCARD
    # needs topics.object_poses and topics.scene (without them, auto never records it)
    record_environment_state: EnvironmentStateMode = EnvironmentStateMode.AUTO
    queue_size: int = 5000
    queue_max_mb: float = 512.0  # bounds memory when images back up (a 640x480 frame is 0.9 MB)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_root", Path(self.dataset_root).expanduser())
        raw = self.raw_root if self.raw_root else self.dataset_root.with_name(self.dataset_root.name + ".raw")
        object.__setattr__(self, "raw_root", Path(raw).expanduser())
        object.__setattr__(self, "state_names", tuple(self.state_names) or PANDA_COMMAND_JOINTS)
        object.__setattr__(self, "action_names", tuple(self.action_names) or self.state_names)
        object.__setattr__(self, "compression", Compression(self.compression))
        object.__setattr__(self, "partial_episode_policy", PartialEpisodePolicy(self.partial_episode_policy))
        object.__setattr__(
            self, "record_environment_state", EnvironmentStateMode(self.record_environment_state)
        )
        if self.record_environment_state is EnvironmentStateMode.ON and not self.topics.object_poses:
            raise ValueError("record_environment_state on needs the object poses and scene topics")
        if self.sampler is None:
            object.__setattr__(
                self, "sampler", SamplerConfig(fps=self.fps, cameras=tuple(self.topics.cameras))
            )
        sampler = self.sampler_config
        if sampler.fps != self.fps:
            raise ValueError(f"sampler fps {sampler.fps} != dataset fps {self.fps}")
        if set(sampler.cameras) != set(self.topics.cameras):
            raise ValueError(
                f"sampler cameras {sampler.cameras} != camera topics {sorted(self.topics.cameras)}"
            )
        if not self.topics.cameras:
            raise ValueError("at least one camera is needed")
        if self.queue_size < 10:
            raise ValueError("queue_size must be at least 10")
        for name in ("data_files_size_in_mb", "video_files_size_in_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.queue_max_mb >= 1.0:
            raise ValueError(f"queue_max_mb must be at least 1, got {self.queue_max_mb}")
        if self.episode_on_instruction and not self.topics.instruction:
            raise ValueError("episode_on_instruction needs an instruction topic")

    @property
    def sampler_config(self) -> SamplerConfig:
        if self.sampler is None:  # set in __post_init__
            raise ValueError("sampler config missing")
        return self.sampler

    @property
    def raw_dir(self) -> Path:
        if self.raw_root is None:  # set in __post_init__
            raise ValueError("raw_root missing")
        return self.raw_root

    def target(self) -> DatasetTarget:
        return DatasetTarget(
            root=self.dataset_root,
            fps=self.fps,
            robot_type=self.robot_type,
            state_names=self.state_names,
            action_names=self.action_names,
            video=self.video,
            data_files_size_in_mb=self.data_files_size_in_mb,
            video_files_size_in_mb=self.video_files_size_in_mb,
        )


@dataclass(frozen=True)
class EpisodeResult:
    status: EpisodeStatus
    message: str
    raw_path: Path | None = None
    dataset_episode: int | None = None
    report: EpisodeReport | None = None
    finalize_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in (
            EpisodeStatus.WRITTEN,
            EpisodeStatus.RECOVERED,
            EpisodeStatus.DISCARDED,
            EpisodeStatus.NOT_WRITTEN,
        )


@dataclass
class CollectorStatus:
    state: CollectorState
    episodes_written: int = 0
    episodes_refused: int = 0
    episode_frames: int = 0
    episode_dropped: int = 0
    messages_recorded: int = 0
    messages_lost: int = 0  # the worker's queue was full
    rejected: int = 0  # messages that could not be read (no header, bad CDR)
    last_result: str = ""
    last_error: str = ""
    task: str = ""


def _is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _Episode:
    """One episode in progress (owned by the worker thread)."""

    def __init__(
        self,
        config: CollectorConfig,
        directory: Path,
        *,
        start_ns: int,
        task: str,
        writer: LeRobotV3Writer | None,
        offered_qos: Mapping[str, Sequence[QosProfile]],
        environment: bool = False,
    ) -> None:
        self.directory = directory
        self.topics = config.topics
        self.bag = BagWriter(directory, compression=config.compression, chunk_size=1024 * 1024)
        for topic, msg_type in config.topics.recorded_topics().items():
            self.bag.add_topic(topic, msg_type, offered_qos.get(topic, ()))
        self.sampler_config = dataclasses.replace(config.sampler_config, environment=environment)
        self.sampler = FrameSampler(self.sampler_config, start_ns=start_ns, task=task)
        # the same feed a conversion of the raw bag uses: live and offline frames cannot drift apart
        self.feed = MessageFeed(self.sampler, config.topics, config.state_names, config.action_names)
        self.builder = EpisodeBuilder(config.target(), config.sampler_config.cameras, writer)
        self.task = task
        self.start_ns = start_ns
        self.stop_ns: int | None = None
        self.rejected = 0
        self.last_rejection = ""


class Collector:
    """See the module docstring. ``clock`` returns ROS time in ns (sim time under ``use_sim_time``);
    ``scene_available`` says whether a simulator publishes the scene topic (for ``auto``; called from the
    worker thread, so make it cheap and thread-safe)."""

    def __init__(
        self,
        config: CollectorConfig,
        clock: Callable[[], int],
        log: Callable[[str], None] = print,
        on_result: Callable[[EpisodeResult], None] | None = None,
        scene_available: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self._clock = clock
        self._log = log
        self._on_result = on_result
        self._scene_available = scene_available
        self._latest_scene: bytes | None = None
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=config.queue_size)
        self._status = CollectorStatus(state=CollectorState.IDLE)
        self._status_lock = threading.Lock()
        self._episode: _Episode | None = None
        self._writer: LeRobotV3Writer | None = None
        self._latest_instruction: tuple[bytes, str] | None = None
        self._offered_qos: dict[str, Sequence[QosProfile]] = {}
        self._queued_bytes = 0
        self._max_queued_bytes = int(config.queue_max_mb * 2**20)
        self._last_reject_log: dict[str, float] = {}
        config.raw_dir.mkdir(parents=True, exist_ok=True)
        if (config.dataset_root / "meta" / "info.json").is_file():
            self._writer = LeRobotV3Writer.open(config.dataset_root)  # repairs what a crash left
        self.recovered = self._recover_partial_episodes()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="collector-worker", daemon=True)
        self._thread.start()

    # --- API for the node (any thread) -----------------------------------------------------------

    def submit(self, topic: str, data: bytes, receive_ns: int) -> None:
        """Queue one raw message; never blocks (a full queue, by count or bytes, counts a lost message)."""
        with self._status_lock:
            if self._queued_bytes + len(data) > self._max_queued_bytes:
                self._status.messages_lost += 1
                return
            self._queued_bytes += len(data)
        try:
            self._queue.put_nowait(("msg", topic, data, receive_ns))
        except queue.Full:
            with self._status_lock:
                self._queued_bytes -= len(data)
                self._status.messages_lost += 1

    def set_offered_qos(self, topic: str, profiles: Sequence[QosProfile]) -> None:
        self._offered_qos[topic] = tuple(profiles)

    def start(self, task: str = "", timeout: float = 30.0) -> str:
        # The episode spans the requests, not the moments the worker reaches them: messages received before
        # the request are handled first (the queue is in order), those received after it belong to the episode.
        return self._call("start", task, self._clock(), timeout=timeout)

    def stop(self, success: bool = True, timeout: float = 300.0) -> EpisodeResult:
        return self._call("stop", success, self._clock(), timeout=timeout)

    def discard(self, timeout: float = 60.0) -> EpisodeResult:
        return self._call("discard", timeout=timeout)

    def sync(self, timeout: float = 30.0) -> None:
        """Return once every message submitted before this call has been handled."""
        self._call("sync", timeout=timeout)

    def status(self) -> CollectorStatus:
        with self._status_lock:
            return CollectorStatus(**asdict(self._status))

    def close(self, timeout: float = 300.0) -> EpisodeResult | None:
        """Stop the worker (an episode still recording is finished as if stopped with success), then release
        the dataset (its writer's lock: another writer may open it)."""
        result = None
        if self._thread.is_alive():
            result = self._call("shutdown", timeout=timeout)
            self._thread.join(timeout)
        if self._writer is not None and not self._thread.is_alive():
            self._writer.close()
        return result

    def _call(self, command: str, *args: Any, timeout: float) -> Any:
        if not self._thread.is_alive():
            raise CollectorError("the collector has shut down")
        future: Future[Any] = Future()
        self._queue.put(("cmd", command, args, future))  # commands wait for room: they must not be lost
        return future.result(timeout=timeout)

    # --- the worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        period = 0.5 / self.config.fps
        while self._running:
            try:
                item = self._queue.get(timeout=period)
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    if item[0] == "msg":
                        with self._status_lock:
                            self._queued_bytes -= len(item[2])
                        self._on_message(item[1], item[2], item[3])
                    else:
                        self._on_command(item[1], item[2], item[3])
                # Ticks are decided after each message (MessageFeed), never by the clock between messages:
                # the clock runs ahead of whatever is still in flight or queued, and a conversion of the raw
                # bag, which only has the messages and their receive times, could not repeat the decision.
            except Exception as e:  # keep recording alive; the episode that failed is closed as an error
                self._fail_episode(e)
        with self._status_lock:
            self._status.state = CollectorState.STOPPED

    def _on_command(self, command: str, args: tuple[Any, ...], future: Future[Any]) -> None:
        try:
            if command == "start":
                future.set_result(self._start(args[0], args[1]))
            elif command == "stop":
                future.set_result(self._finish(success=bool(args[0]), stop_ns=args[1]))
            elif command == "discard":
                future.set_result(self._discard())
            elif command == "sync":  # everything queued before this has been handled
                future.set_result(None)
            elif command == "shutdown":
                result = self._finish(success=True) if self._episode is not None else None
                self._running = False
                future.set_result(result)
            else:
                raise CollectorError(f"unknown command {command!r}")
        except BaseException as e:
            future.set_exception(e)

    def _on_message(self, topic: str, data: bytes, receive_ns: int) -> None:
        topics = self.config.topics
        if topic == topics.instruction:
            self._on_instruction(data, receive_ns)
            return
        if topic == topics.scene and topics.scene:
            self._latest_scene = data  # published once per reset: the next episode starts with it
        ep = self._episode
        if ep is None:
            return
        ep.bag.write(topic, data, receive_ns)  # the raw record keeps everything, even what is rejected below
        with self._status_lock:
            self._status.messages_recorded += 1
        if not ep.feed.is_sampled(topic):
            return
        try:
            frames = ep.feed.feed(topic, data, receive_ns)
        except (ValueError, KeyError) as e:
            self._reject(topic, e)
            return
        self._feed(frames)

    def _reject(self, topic: str, error: BaseException) -> None:
        """Count a message the dataset cannot use; log at most every few seconds per topic."""
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        with self._status_lock:
            self._status.rejected += 1
            self._status.last_error = f"{topic}: {text}"
        if self._episode is not None:
            self._episode.rejected += 1
            self._episode.last_rejection = f"{topic}: {text}"
        now = time.monotonic()
        if now - self._last_reject_log.get(topic, -1e9) >= REJECT_LOG_PERIOD_S:
            self._last_reject_log[topic] = now
            self._log(f"rejected a message on {topic} (not used for frames, kept in the raw bag): {text}")

    def _on_instruction(self, data: bytes, receive_ns: int) -> None:
        try:
            text = decode_string(data).strip()
        except Exception as e:  # malformed CDR: reject, keep going
            with self._status_lock:
                self._status.rejected += 1
                self._status.last_error = f"{self.config.topics.instruction}: {e}"
            return
        previous = self._latest_instruction[1] if self._latest_instruction else ""
        self._latest_instruction = (data, text)
        with self._status_lock:
            self._status.task = text
        ep = self._episode
        if ep is not None:
            ep.bag.write(self.config.topics.instruction, data, receive_ns)
        if not self.config.episode_on_instruction:
            if ep is not None:
                ep.feed.instruction(receive_ns, text)
            return
        # Instruction-driven episodes: a new task ends the current episode (success) and starts the next;
        # an empty instruction (idle) ends it.
        if text == previous and ep is not None:
            return
        if ep is not None:
            self._report(self._finish(success=True, stop_ns=receive_ns))
        if text:
            self._start(text, receive_ns)

    def _feed(self, frames: Sequence[Any]) -> None:
        ep = self._episode
        if ep is None or not frames:
            return
        for frame in frames:
            ep.builder.add(frame)
        with self._status_lock:
            self._status.episode_frames = ep.sampler.frames
            self._status.episode_dropped = ep.sampler.frames - ep.sampler.fresh_frames

    def _start(self, task: str = "", start_ns: int | None = None) -> str:
        if self._episode is not None:
            raise CollectorError(
                f"already recording episode {self._episode.directory.name}: stop or discard it first"
            )
        task = (
            task
            or (self._latest_instruction[1] if self._latest_instruction else "")
            or self.config.default_task
        )
        if not task:
            raise CollectorError(
                f"no task: publish an instruction on {self.config.topics.instruction or '(no topic)'} or set default_task"
            )
        environment = self._environment_for_episode()
        now = self._clock() if start_ns is None else start_ns
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        index = len(list(self.config.raw_dir.glob("episode_*")))
        directory = self.config.raw_dir / f"episode_{index:06d}_{stamp}"
        ep = _Episode(
            self.config,
            directory,
            start_ns=now,
            task=task,
            writer=self._writer,
            offered_qos=self._offered_qos,
            environment=environment,
        )
        if self._latest_instruction is not None and self.config.topics.instruction:
            ep.bag.write(self.config.topics.instruction, self._latest_instruction[0], now)
        if self._latest_scene is not None:
            # In the bag first, as the feed sees it first: a conversion of the bag finds the same scene.
            ep.bag.write(self.config.topics.scene, self._latest_scene, now)
            try:
                ep.feed.feed(self.config.topics.scene, self._latest_scene, now)
            except (ValueError, KeyError) as e:
                self._reject(self.config.topics.scene, e)
        self._write_episode_file(ep, EpisodeStatus.RECORDING)
        self._episode = ep
        with self._status_lock:
            self._status.state = CollectorState.RECORDING
            self._status.episode_frames = 0
            self._status.episode_dropped = 0
            self._status.task = task
        self._log(f"episode {directory.name} started: {task!r}")
        return directory.name

    def _dataset_has_environment_state(self) -> bool | None:
        """Whether the dataset records the environment state; None while there is no dataset yet."""
        if self._writer is not None:
            return bool(self._writer.spec.environment_state_names)
        info = self.config.dataset_root / "meta" / "info.json"
        if not info.is_file():
            return None
        try:
            return ENVIRONMENT_STATE_KEY in json.loads(info.read_text()).get("features", {})
        except (OSError, json.JSONDecodeError) as e:
            raise CollectorError(f"cannot read {info}: {e}") from e

    def _environment_for_episode(self) -> bool:
        """Whether the next episode records ``observation.environment_state`` (see the module docstring)."""
        mode, topics = self.config.record_environment_state, self.config.topics
        has = self._dataset_has_environment_state()
        root = self.config.dataset_root
        if has and (mode is EnvironmentStateMode.OFF or not topics.object_poses):
            raise CollectorError(
                f"{root} records {ENVIRONMENT_STATE_KEY}: every episode needs it (record_environment_state "
                "on or auto, with the object poses and scene topics), or use another dataset_root"
            )
        if mode is EnvironmentStateMode.ON:
            if has is False:
                raise CollectorError(
                    f"{root} has no {ENVIRONMENT_STATE_KEY}: record_environment_state on cannot add it to "
                    "existing episodes (use another dataset_root, or auto/off)"
                )
            return True
        if mode is EnvironmentStateMode.OFF or not topics.object_poses:
            return False
        if has is not None:
            return has
        return self._latest_scene is not None or bool(self._scene_available())

    def _write_episode_file(self, ep: _Episode, status: EpisodeStatus, **extra: Any) -> None:
        cfg = self.config
        data = {
            "status": status.value,
            "task": ep.task,
            "start_ns": ep.start_ns,
            **({"stop_ns": ep.stop_ns} if ep.stop_ns is not None else {}),
            "topics": cfg.topics.to_dict(),
            "fps": cfg.fps,
            "sampler": asdict(ep.sampler_config),
            "dataset_root": str(cfg.dataset_root),
            **extra,
        }
        write_json_atomic(ep.directory / EPISODE_FILE, data, default=str)

    def _finish(self, success: bool, stop_ns: int | None = None) -> EpisodeResult:
        ep = self._episode
        if ep is None:
            raise CollectorError("no episode is being recorded")
        t0 = time.monotonic()
        stop_ns = self._clock() if stop_ns is None else stop_ns
        ep.stop_ns = stop_ns
        try:
            tail, report = ep.sampler.finish(stop_ns)
            self._feed(tail)
            ep.bag.close()
            if not report.accepted:
                ep.builder.abort()
                reason = report.reason
                if ep.rejected:
                    reason += f"; {ep.rejected} messages rejected, the last: {ep.last_rejection}"
                status, message, index = (
                    EpisodeStatus.REFUSED,
                    f"episode refused for the dataset: {reason}",
                    None,
                )
            elif not success and not self.config.keep_failed_episodes:
                ep.builder.abort()
                status, message, index = (
                    EpisodeStatus.NOT_WRITTEN,
                    "failed demonstration: raw bag kept, not in the dataset",
                    None,
                )
            else:
                summary = ep.builder.commit()
                status, index = EpisodeStatus.WRITTEN, summary.episode_index
                message = f"dataset episode {index}: {report.summary()}"
        except BaseException as e:
            self._episode = None
            result = self._error_result(ep, e)
            with self._status_lock:
                self._status.state = CollectorState.IDLE
            raise CollectorError(result.message) from e
        self._keep_writer(ep)
        self._episode = None
        result = EpisodeResult(status, message, ep.directory, index, report, time.monotonic() - t0)
        self._write_episode_file(
            ep, status, success=success, report=report.to_dict(), dataset_episode=index, message=message
        )
        with self._status_lock:
            self._status.state = CollectorState.IDLE
            self._status.last_result = message
            if status is EpisodeStatus.WRITTEN:
                self._status.episodes_written += 1
            elif status is EpisodeStatus.REFUSED:
                self._status.episodes_refused += 1
                self._status.last_error = message
        self._log(f"episode {ep.directory.name}: {message}")
        return result

    def _discard(self) -> EpisodeResult:
        ep = self._episode
        if ep is None:
            raise CollectorError("no episode is being recorded")
        self._episode = None
        ep.builder.abort()
        self._keep_writer(ep)
        ep.bag.close()
        self._write_episode_file(ep, EpisodeStatus.DISCARDED, message="discarded by request")
        with self._status_lock:
            self._status.state = CollectorState.IDLE
            self._status.last_result = f"episode {ep.directory.name} discarded"
        self._log(f"episode {ep.directory.name} discarded (raw bag kept)")
        return EpisodeResult(EpisodeStatus.DISCARDED, "discarded (raw bag kept)", ep.directory)

    def _keep_writer(self, ep: _Episode) -> None:
        """Hold on to the writer an episode opened (the first one creates the dataset): it holds the dataset's
        lock until close(), whatever became of the episode."""
        if self._writer is None:
            self._writer = ep.builder.writer

    def _error_result(self, ep: _Episode, e: BaseException) -> EpisodeResult:
        self._keep_writer(ep)
        what = (
            "disk full"
            if _is_disk_full(e) or (isinstance(e, DatasetWriteError) and "disk full" in str(e))
            else "error"
        )
        message = f"episode {ep.directory.name} not written ({what}): {e}; the dataset is unchanged, the raw bag is kept"
        try:
            ep.builder.abort()
        except Exception as abort_error:  # the original error matters more
            self._log(f"while aborting: {abort_error}")
        try:
            ep.bag.close()
        except Exception as close_error:
            self._log(f"could not close the raw bag {ep.directory}: {close_error}")
        # With the disk full this may fail too; on restart the episode still says RECORDING and is recovered.
        with contextlib.suppress(OSError):
            self._write_episode_file(ep, EpisodeStatus.ERROR, message=message)
        with self._status_lock:
            self._status.last_error = message
        self._log(message)
        return EpisodeResult(EpisodeStatus.ERROR, message, ep.directory)

    def _fail_episode(self, e: BaseException) -> None:
        ep = self._episode
        if ep is None:
            with self._status_lock:
                self._status.last_error = str(e)
            self._log(f"collector: {e}")
            return
        self._episode = None
        result = self._error_result(ep, e)
        with self._status_lock:
            self._status.state = CollectorState.IDLE
        self._report(result)

    def _report(self, result: EpisodeResult) -> None:
        if self._on_result is not None:
            self._on_result(result)

    # --- crash recovery ----------------------------------------------------------------------------

    def _recover_partial_episodes(self) -> list[EpisodeResult]:
        results = []
        for info_path in sorted(self.config.raw_dir.glob(f"episode_*/{EPISODE_FILE}")):
            try:
                info = json.loads(info_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                self._log(f"skipping {info_path}: {e}")
                continue
            if info.get("status") != EpisodeStatus.RECORDING.value:
                continue
            results.append(self._recover_one(info_path.parent, info))
        return results

    def _recover_one(self, directory: Path, info: dict[str, Any]) -> EpisodeResult:
        try:
            kept = recover_bag(directory, self.config.compression)
        except Exception as e:  # an empty or unreadable bag: nothing to recover
            info.update(status=EpisodeStatus.PARTIAL_DISCARDED.value, message=f"unreadable after crash: {e}")
            write_json_atomic(directory / EPISODE_FILE, info, default=str)
            self._log(f"{directory.name}: partial episode unreadable ({e}); marked discarded")
            return EpisodeResult(EpisodeStatus.PARTIAL_DISCARDED, str(e), directory)
        if self.config.partial_episode_policy is PartialEpisodePolicy.DISCARD:
            message = f"partial episode ({kept} messages) left out of the dataset by policy; raw bag repaired and kept"
            info.update(status=EpisodeStatus.PARTIAL_DISCARDED.value, message=message)
            write_json_atomic(directory / EPISODE_FILE, info, default=str)
            self._log(f"{directory.name}: {message}")
            return EpisodeResult(EpisodeStatus.PARTIAL_DISCARDED, message, directory)
        try:
            sampler = SamplerConfig(**{**info["sampler"], "cameras": tuple(info["sampler"]["cameras"])})
            result, writer = convert_bag(
                directory,
                self.config.target(),
                TopicMap.from_dict(info["topics"]),
                sampler_config=sampler,
                default_task=info.get("task", ""),
                writer=self._writer,
                start_ns=int(info.get("start_ns", 0)),
            )
        except (DatasetError, ValueError, KeyError, OSError) as e:
            message = f"recovery failed: {e}"
            info.update(status=EpisodeStatus.ERROR.value, message=message)
            write_json_atomic(directory / EPISODE_FILE, info, default=str)
            self._log(f"{directory.name}: {message}")
            return EpisodeResult(EpisodeStatus.ERROR, message, directory)
        self._writer = writer or self._writer
        if result.summary is None:
            status, message, index = (
                EpisodeStatus.PARTIAL_DISCARDED,
                f"recovered but refused: {result.report.reason}",
                None,
            )
        else:
            status, index = EpisodeStatus.RECOVERED, result.summary.episode_index
            message = f"recovered into dataset episode {index}: {result.report.summary()}"
        info.update(
            status=status.value, message=message, report=result.report.to_dict(), dataset_episode=index
        )
        write_json_atomic(directory / EPISODE_FILE, info, default=str)
        self._log(f"{directory.name}: {message}")
        return EpisodeResult(status, message, directory, index, result.report)
