"""The core of ``sim_node``: command validation, trajectory following, the publication schedule, episodes.

No rclpy here: :mod:`vla_sim.sim_node` turns messages into the plain values these functions take and
publishes what :class:`SimRunner` reports due.

Commands (all set absolute joint position targets, 8-d in ``PANDA_COMMAND_JOINTS`` order, held until
replaced, as a position controller does):

- by joint name (``sensor_msgs/JointState``): any subset of the eight command joints; the others keep their
  targets. ``panda_finger_joint2`` is accepted as the finger opening when ``panda_finger_joint1`` is absent.
- an array in a configured joint order (``std_msgs/Float64MultiArray``, like ``forward_position_controller``).
- a trajectory (``trajectory_msgs/JointTrajectory``, like ``joint_trajectory_controller``): points at
  ``time_from_start`` after the start time (the header stamp, or now when it is zero), linearly interpolated
  from the targets held at the start; the last point is held; a new trajectory replaces the old one.

Anything malformed is rejected whole with a :class:`CommandStatus` saying why; the targets stay as they were.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_FINGER_JOINT, PANDA_MIRRORED_FINGER_JOINT

from vla_sim import robot
from vla_sim.scene import CameraConfig, Renderer, Scene, SceneConfig
from vla_sim.tasks import (
    REFERENT_NAMES,
    BlockState,
    Split,
    TargetState,
    Task,
    TaskRequest,
    WorldState,
    is_success,
    referents,
    resolve_task,
)

COMMAND_INDEX = {name: i for i, name in enumerate(PANDA_COMMAND_JOINTS)}


class CommandStatus(enum.Enum):
    ACCEPTED = "accepted"
    EMPTY = "empty"
    UNKNOWN_JOINT = "unknown joint"
    DUPLICATE_JOINT = "duplicate joint"
    LENGTH_MISMATCH = "length mismatch"
    NOT_FINITE = "not finite"
    BAD_TIMING = "bad timing"


@dataclass(frozen=True)
class CommandResult:
    status: CommandStatus
    target: np.ndarray | None = None  # the full 8-d target, when accepted
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is CommandStatus.ACCEPTED


def _named_target(names: Sequence[str], values: Sequence[float], current: np.ndarray) -> CommandResult:
    if len(names) == 0:
        return CommandResult(CommandStatus.EMPTY, detail="no joint names")
    if len(names) != len(values):
        return CommandResult(
            CommandStatus.LENGTH_MISMATCH, detail=f"{len(names)} names, {len(values)} positions"
        )
    if len(set(names)) != len(names):
        return CommandResult(CommandStatus.DUPLICATE_JOINT, detail=f"names repeat: {list(names)}")
    mapped = dict(zip(names, values, strict=True))
    if PANDA_MIRRORED_FINGER_JOINT in mapped:
        finger = mapped.pop(PANDA_MIRRORED_FINGER_JOINT)
        mapped.setdefault(PANDA_FINGER_JOINT, finger)
    unknown = sorted(set(mapped) - set(COMMAND_INDEX))
    if unknown:
        return CommandResult(CommandStatus.UNKNOWN_JOINT, detail=f"unknown joints {unknown}")
    target = np.array(current, dtype=np.float64)
    for name, value in mapped.items():
        target[COMMAND_INDEX[name]] = value
    if not np.all(np.isfinite(target)):
        return CommandResult(CommandStatus.NOT_FINITE, detail="NaN or inf in positions")
    return CommandResult(CommandStatus.ACCEPTED, robot.clip_command(target))


def joint_state_command(
    names: Sequence[str], positions: Sequence[float], current: np.ndarray
) -> CommandResult:
    """A ``JointState`` command matched by joint name."""
    return _named_target(list(names), list(positions), current)


def array_command(values: Sequence[float], joint_order: Sequence[str], current: np.ndarray) -> CommandResult:
    """A ``Float64MultiArray`` command whose i-th value is for ``joint_order[i]``."""
    if len(values) != len(joint_order):
        return CommandResult(
            CommandStatus.LENGTH_MISMATCH,
            detail=f"{len(values)} values for {len(joint_order)} joints {list(joint_order)}",
        )
    return _named_target(list(joint_order), list(values), current)


@dataclass(frozen=True)
class Trajectory:
    """Absolute times (s, sim clock) and 8-d targets; ``times[0]`` is the start, holding the prior targets."""

    times: np.ndarray  # [N+1]
    targets: np.ndarray  # [N+1, 8]

    def sample(self, now: float) -> np.ndarray:
        if now <= self.times[0]:
            return self.targets[0].copy()
        if now >= self.times[-1]:
            return self.targets[-1].copy()
        return np.array(
            [np.interp(now, self.times, self.targets[:, j]) for j in range(self.targets.shape[1])]
        )

    @property
    def end_time(self) -> float:
        return float(self.times[-1])


def trajectory_command(
    names: Sequence[str],
    points: Sequence[tuple[float, Sequence[float]]],
    start_time: float,
    current: np.ndarray,
) -> tuple[CommandResult, Trajectory | None]:
    """A ``JointTrajectory``: ``points`` are (time_from_start s, positions in ``names`` order)."""
    if not points:
        return CommandResult(CommandStatus.EMPTY, detail="trajectory has no points"), None
    times = [start_time]
    targets = [np.array(current, dtype=np.float64)]
    previous = 0.0
    for index, (offset, positions) in enumerate(points):
        if not math.isfinite(offset) or offset < 0 or (index > 0 and offset <= previous):
            return CommandResult(
                CommandStatus.BAD_TIMING,
                detail=f"time_from_start must increase from >= 0 (point {index}: {offset})",
            ), None
        result = _named_target(list(names), list(positions), targets[-1])
        if not result.accepted or result.target is None:
            return CommandResult(result.status, detail=f"point {index}: {result.detail}"), None
        times.append(start_time + max(offset, 1e-6))
        targets.append(result.target)
        previous = offset
    return CommandResult(CommandStatus.ACCEPTED, targets[-1]), Trajectory(np.array(times), np.array(targets))


# --- running -------------------------------------------------------------------------------------------


class SimMode(str, enum.Enum):
    REALTIME = "realtime"  # paced to the wall clock (times real_time_factor)
    LOCKSTEP = "lockstep"  # advances one control period per command received, as fast as it can


class EpisodeStatus(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the success predicate holds now
    TIMED_OUT = "timed_out"  # past the task's time limit without success (the sim keeps running)


@dataclass(frozen=True)
class BridgeConfig:
    mode: SimMode = SimMode.REALTIME
    real_time_factor: float = 1.0
    physics_hz: float = 240.0
    control_hz: float = 10.0  # lockstep period and success checks
    joint_state_rate: float = 100.0
    camera_rate: float = 15.0
    object_pose_rate: float = 30.0
    camera_width: int = 224
    camera_height: int = 224
    wrist_camera: bool = False
    split: Split = Split.TRAIN
    renderer: Renderer = Renderer.TINY

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SimMode(self.mode))
        object.__setattr__(self, "split", Split(self.split))
        object.__setattr__(self, "renderer", Renderer(self.renderer))
        for name in ("real_time_factor", "physics_hz", "control_hz", "joint_state_rate", "object_pose_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not (math.isfinite(self.camera_rate) and self.camera_rate >= 0):
            raise ValueError(f"camera_rate must be >= 0 (0 = no camera), got {self.camera_rate}")
        for name in ("joint_state_rate", "camera_rate", "object_pose_rate", "control_hz"):
            if getattr(self, name) > self.physics_hz:
                raise ValueError(f"{name} cannot exceed physics_hz ({self.physics_hz})")
        SceneConfig(physics_hz=self.physics_hz, control_hz=self.control_hz)  # validates the ratio
        self.cameras()  # validates sizes

    def cameras(self) -> tuple[CameraConfig, ...]:
        names = ("front", "wrist") if self.wrist_camera else ("front",)
        return tuple(CameraConfig(name=n, width=self.camera_width, height=self.camera_height) for n in names)


@dataclass(frozen=True)
class Due:
    """What falls due after one physics step."""

    joint_state: bool
    camera: bool
    object_poses: bool
    control: bool  # a control period ended: judge success, and in lockstep wait for the next command


def _crossed(steps: int, rate: float, physics_hz: float) -> bool:
    return rate > 0 and math.floor(steps * rate / physics_hz + 1e-9) > math.floor(
        (steps - 1) * rate / physics_hz + 1e-9
    )


class SimRunner:
    """Scene + task + targets + schedule. Not thread-safe: the node serializes calls with a lock."""

    def __init__(self, config: BridgeConfig | None = None) -> None:
        self.config = config or BridgeConfig()
        self.scene = Scene(
            SceneConfig(
                physics_hz=self.config.physics_hz,
                control_hz=self.config.control_hz,
                renderer=self.config.renderer,
            )
        )
        self.cameras = self.config.cameras()
        self.task: Task | None = None
        self.episode = 0
        self.seed = 0
        self.total_steps = 0  # physics steps over all episodes: the sim clock never goes back
        self.status = EpisodeStatus.IDLE
        self._trajectory: Trajectory | None = None
        self.accepted = 0
        self.rejected = 0

    def close(self) -> None:
        self.scene.close()

    @property
    def sim_clock(self) -> float:
        """Seconds of simulated time since the runner started (across episodes)."""
        return self.total_steps / self.config.physics_hz

    def reset(self, request: TaskRequest, seed: int) -> Task:
        """New episode: the task (family, instruction or Task; None/'' = random family) with this seed."""
        rng = np.random.default_rng(seed)
        task = resolve_task(request, rng, self.config.split)
        self.scene.reset(task, rng)
        self.task, self.seed = task, seed
        self.episode += 1
        self._trajectory = None
        self.status = EpisodeStatus.RUNNING
        return task

    def current_target(self) -> np.ndarray:
        return self.scene.command

    def _count(self, result: CommandResult) -> None:
        if result.accepted:
            self.accepted += 1
        else:
            self.rejected += 1

    def command(self, result: CommandResult) -> None:
        """Hold an accepted position target (cancels a running trajectory)."""
        self._count(result)
        if result.accepted and result.target is not None:
            self._trajectory = None
            self.scene.set_command(result.target)

    def follow(self, result: CommandResult, trajectory: Trajectory | None) -> None:
        self._count(result)
        if result.accepted and trajectory is not None:
            self._trajectory = trajectory

    def step(self) -> Due:
        """One physics step (following the trajectory, if any)."""
        if self.task is None:
            raise RuntimeError("reset() first")
        if self._trajectory is not None:
            self.scene.set_command(self._trajectory.sample(self.sim_clock))
            if self.sim_clock >= self._trajectory.end_time:
                self._trajectory = None
        self.scene.step_physics(1)
        self.total_steps += 1
        n, hz, c = self.total_steps, self.config.physics_hz, self.config
        due = Due(
            joint_state=_crossed(n, c.joint_state_rate, hz),
            camera=_crossed(n, c.camera_rate, hz),
            object_poses=_crossed(n, c.object_pose_rate, hz),
            control=_crossed(n, c.control_hz, hz),
        )
        if due.control:
            self._judge()
        return due

    def _judge(self) -> None:
        if self.task is None:
            return
        if is_success(self.task, self.scene.world_state()):
            self.status = EpisodeStatus.SUCCEEDED
        elif self.scene.sim_time > self.task.time_limit_s:
            self.status = EpisodeStatus.TIMED_OUT
        else:
            self.status = EpisodeStatus.RUNNING

    @property
    def success(self) -> bool:
        return self.status is EpisodeStatus.SUCCEEDED

    def scene_description(self) -> dict[str, Any]:
        """What ``/sim/scene`` carries (JSON): which pose in ``/sim/object_poses`` is which object, and more.

        ``referents`` says where the instruction's target and goal are (:func:`vla_sim.tasks.referents`):
        each ``{"object": name}`` (that object's current pose in ``/sim/object_poses``) or ``{"point": [x, y,
        z]}`` (fixed), in the poses' frame, which is the robot base frame (the base stands at its origin).
        ``names`` are the ``observation.environment_state`` names, target then goal. A recorder computes the
        state from this and the poses alone (``vla_collector.environment``), without the task definitions.
        """
        world = self.scene.world_state()
        description: dict[str, Any] = {
            "episode": self.episode,
            "seed": self.seed,
            "instruction": self.task.instruction if self.task else "",
            "family": self.task.family.value if self.task else "",
            "objects": [*world.blocks, *world.targets],
            "initial_positions": {c: list(b.initial_position) for c, b in world.blocks.items()},
            "targets": {
                name: {"position": list(t.position), "half_extent": t.half_extent, "rim_height": t.rim_height}
                for name, t in world.targets.items()
            },
            "table_height": world.table_height,
        }
        if self.task is not None:
            target, goal = referents(self.task, world)
            description["referents"] = {
                "names": list(REFERENT_NAMES),
                "target": target.to_dict(),
                "goal": goal.to_dict(),
            }
        return description

    def object_poses(self) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
        """(position, quaternion) per object, in ``scene_description()['objects']`` order."""
        world = self.scene.world_state()
        poses = [(b.position, b.orientation) for b in world.blocks.values()]
        poses += [(t.position, (0.0, 0.0, 0.0, 1.0)) for t in world.targets.values()]
        return poses


def world_from_scene_message(
    description: dict[str, Any], poses: Sequence[tuple[Sequence[float], Sequence[float]]]
) -> WorldState:
    """Rebuild the :class:`WorldState` (without contact information) from ``/sim/scene`` and ``/sim/object_poses``."""
    objects = list(description["objects"])
    if len(objects) != len(poses):
        raise ValueError(
            f"{len(poses)} poses for {len(objects)} objects: scene and poses are from different episodes"
        )
    initial = description["initial_positions"]
    blocks = {
        name: BlockState(tuple(p), tuple(initial[name]), tuple(q))  # type: ignore[arg-type]
        for name, (p, q) in zip(objects, poses, strict=True)
        if name in initial
    }
    targets = {
        name: TargetState(tuple(t["position"]), float(t["half_extent"]), float(t["rim_height"]))  # type: ignore[arg-type]
        for name, t in description["targets"].items()
    }
    return WorldState(blocks, targets, float(description["table_height"]))


def parse_scene_message(text: str) -> dict[str, Any]:
    """The JSON of ``/sim/scene``, checked for the keys :func:`world_from_scene_message` needs."""
    data = json.loads(text)
    missing = {"episode", "instruction", "objects", "initial_positions", "targets", "table_height"} - set(
        data
    )
    if missing:
        raise ValueError(f"/sim/scene message lacks {sorted(missing)}")
    return data
