"""Scripted experts: IK-based joint-position targets plus gripper, for every task family.

An expert re-plans from the current state at every call: ``ScriptedExpert.act(joint_positions, world)`` looks
at where the arm, the fingers and the blocks are now and returns the next 8-d joint target (7 arm joints +
finger opening, the action convention of the whole workspace). It does not replay a trajectory, so it can
label the states a learned policy visits (DAgger) and recovers when a block slips. The only memory it keeps
is a re-grasp flag (fingers closed on nothing: open again before closing), cleared by ``reset()``.

The expert needs no simulator: it sees a :class:`vla_sim.tasks.WorldState` (block poses, targets) and the
joint positions, and computes inverse kinematics on a private kinematic model of the Panda. That is how
``expert_node`` runs it from ROS topics. Whether a block is held is judged from geometry (a block between the
finger tips, fingers stopped part-way), the same way in the env and through ROS.

    env = vla_sim.make_env("stack", seed=0)
    expert = vla_sim.experts.make_expert(env)
    obs, info = env.reset(seed=0)
    while True:
        obs, reward, terminated, truncated, info = env.step(expert.act_env())
        if terminated or truncated:
            break

Pure Python, no rclpy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from vla_common.robots import PANDA_COMMAND_JOINTS

from vla_sim import robot
from vla_sim.tasks import (
    BLOCK_SIZE,
    DIRECTIONS,
    LIFT_HEIGHT,
    PUSH_DISTANCE,
    Task,
    TaskFamily,
    WorldState,
    in_target,
    on_top,
    parse_instruction,
    push_displacement,
)

if TYPE_CHECKING:
    from vla_sim.env import VlaSimEnv


@dataclass(frozen=True)
class ExpertConfig:
    control_hz: float = 10.0
    max_speed: float = 0.3  # m/s of the grasp point
    safe_height: float = 0.12  # m above the table for moves between places
    align_tolerance: float = 0.008  # m, horizontal error before descending
    reach_tolerance: float = 0.01  # m
    # Each command moves every joint at most this fraction of its velocity limit per control period, so a
    # demonstration never asks for more than a safety monitor allows (its first command starts at the
    # current pose) and recorded actions stay smooth.
    joint_speed_fraction: float = 0.5
    # m above where the block would rest at which place and stack open the fingers (the block drops the rest).
    release_height: float = 0.004

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.max_speed <= 0 or self.safe_height <= BLOCK_SIZE:
            raise ValueError("control_hz and max_speed must be positive, safe_height above a block")
        if not 0 < self.joint_speed_fraction <= 1:
            raise ValueError("joint_speed_fraction must be in (0, 1]")
        if not 0 <= self.release_height < self.safe_height - BLOCK_SIZE:
            raise ValueError("release_height must be >= 0 and below safe_height less a block")

    @property
    def max_step(self) -> float:
        return self.max_speed / self.control_hz


HELD_FINGER_RANGE = (0.005, 0.032)  # finger opening when closed on a 4 cm block (about 0.02 each)
OPEN_ENOUGH = 0.035
CLOSED_ON_NOTHING = 0.004
GRASP_DEPTH = 0.005  # m below the block's centre: the finger pads taper towards the tips


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def grasp_yaw(block_yaw: float) -> float:
    """The hand yaw that puts the fingers on two opposite faces, closest to the home yaw (0)."""
    return _wrap(block_yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4


def held_block(grasp_point: np.ndarray, finger_opening: float, world: WorldState) -> str | None:
    """The block between the finger tips when the fingers have stopped part-way on it, else None."""
    if not (HELD_FINGER_RANGE[0] < finger_opening < HELD_FINGER_RANGE[1]):
        return None
    for colour, block in world.blocks.items():
        offset = np.array(block.position) - grasp_point
        if np.linalg.norm(offset[:2]) < 0.02 and abs(offset[2]) < 0.03:
            return colour
    return None


class ScriptedExpert:
    """The expert for one task. ``act`` maps (joint positions, world) to the next 8-d joint target."""

    def __init__(
        self, task: Task, kinematics: robot.PandaKinematics | None = None, config: ExpertConfig | None = None
    ) -> None:
        self.task = task
        self.config = config or ExpertConfig()
        self._kinematics = kinematics or robot.PandaKinematics()
        self._regrasp = False
        self._last_yaw = 0.0  # keeps the hand's yaw while retreating from a block it just let go

    def reset(self, task: Task | None = None) -> None:
        if task is not None:
            self.task = task
        self._regrasp = False
        self._last_yaw = 0.0

    # --- the decision ------------------------------------------------------------------------------------

    def act(self, joint_positions: Sequence[float], world: WorldState) -> np.ndarray:
        """The next joint target, float32[8], from the current joint positions (8 or 9 values)."""
        joints = np.asarray(joint_positions, dtype=np.float64)
        if joints.shape[0] < 8 or not np.all(np.isfinite(joints)):
            raise ValueError(f"need 8 or 9 finite joint positions, got {joints}")
        grasp_point, _ = self._kinematics.grasp_pose(joints[:7])
        opening = float(joints[7])
        waypoint, yaw, finger = self._plan(grasp_point, opening, world)
        self._last_yaw = yaw
        step = waypoint - grasp_point
        distance = float(np.linalg.norm(step))
        if distance > self.config.max_step:
            waypoint = grasp_point + step * (self.config.max_step / distance)
        solution = self._kinematics.solve(waypoint, robot.down_orientation(yaw), joints[:7])
        target = robot.clip_command(np.append(solution.arm_positions, finger))
        return self._limit_joint_step(joints[:8], target).astype(np.float32)

    def _limit_joint_step(self, current: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Scale the whole step (keeping its direction) so no joint exceeds its share of its velocity limit."""
        max_step = robot.COMMAND_MAX_VELOCITY * self.config.joint_speed_fraction / self.config.control_hz
        step = target - current
        ratio = float(np.max(np.abs(step) / max_step))
        return current + step / ratio if ratio > 1.0 else target

    def _plan(
        self, grasp_point: np.ndarray, opening: float, world: WorldState
    ) -> tuple[np.ndarray, float, float]:
        s = self.task.slots
        family = self.task.family
        rest_z = world.rest_z()
        if family is TaskFamily.PICK:
            lift = np.array([*world.blocks[s["block"]].initial_position[:2], rest_z + LIFT_HEIGHT + 0.04])
            return self._pick_and_place(grasp_point, opening, world, s["block"], lift, release=False)
        if family is TaskFamily.STACK:
            return self._stack(grasp_point, opening, world, s["block"], s["base"])
        if family is TaskFamily.PLACE:
            target = world.targets[s["target"]]
            goal = np.array([*target.position[:2], target.position[2] + BLOCK_SIZE / 2])
            if in_target(world, s["block"], s["target"]) and held_block(grasp_point, opening, world) is None:
                return self._retreat(grasp_point)
            return self._pick_and_place(grasp_point, opening, world, s["block"], goal, release=True)
        if family is TaskFamily.PUSH:
            return self._push(grasp_point, world, s["block"], s["direction"])
        if family is TaskFamily.STACK_TWO:
            if (
                not on_top(world, s["block"], s["base"])
                or held_block(grasp_point, opening, world) == s["block"]
            ):
                return self._stack(grasp_point, opening, world, s["block"], s["base"])
            return self._stack(grasp_point, opening, world, s["top"], s["block"])
        raise ValueError(f"no expert for family {family}")

    def _stack(
        self, grasp_point: np.ndarray, opening: float, world: WorldState, block: str, base: str
    ) -> tuple[np.ndarray, float, float]:
        if on_top(world, block, base) and held_block(grasp_point, opening, world) is None:
            return self._retreat(grasp_point)
        goal = np.array(world.blocks[base].position) + np.array([0.0, 0.0, BLOCK_SIZE])
        return self._pick_and_place(grasp_point, opening, world, block, goal, release=True)

    def _retreat(self, grasp_point: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Open and rise straight up, out of the way."""
        return np.array([*grasp_point[:2], max(grasp_point[2], 0.2)]), self._last_yaw, robot.FINGER_OPEN

    def _move_via_safe_height(
        self, grasp_point: np.ndarray, target: np.ndarray, safe_z: float, tolerance: float
    ) -> tuple[np.ndarray, bool]:
        """The next waypoint towards ``target``: up to ``safe_z``, across, then down. True once above it."""
        horizontal = float(np.linalg.norm(target[:2] - grasp_point[:2]))
        if horizontal > 0.03:
            if grasp_point[2] < safe_z - 0.02:
                return np.array([*grasp_point[:2], safe_z]), False
            return np.array([*target[:2], safe_z]), False
        if horizontal > tolerance:
            # Close by: correct sideways at the current height before going down.
            return np.array([*target[:2], max(grasp_point[2], target[2])]), False
        return target, True

    def _pick_and_place(
        self,
        grasp_point: np.ndarray,
        opening: float,
        world: WorldState,
        block: str,
        goal: np.ndarray,
        *,
        release: bool,
    ) -> tuple[np.ndarray, float, float]:
        cfg = self.config
        block_state = world.blocks[block]
        yaw = grasp_yaw(block_state.yaw)
        safe_z = world.table_height + cfg.safe_height + max(0.0, goal[2] - world.rest_z())
        if held_block(grasp_point, opening, world) == block:
            self._regrasp = False
            place = goal + np.array([0.0, 0.0, cfg.release_height if release else 0.0])
            waypoint, above = self._move_via_safe_height(grasp_point, place, safe_z, cfg.align_tolerance)
            if release and above and np.linalg.norm(place - grasp_point) < cfg.reach_tolerance:
                return grasp_point, yaw, robot.FINGER_OPEN
            return waypoint, yaw, robot.FINGER_CLOSED
        # Not holding it: go and grasp it.
        grasp = np.array(block_state.position) - np.array([0.0, 0.0, GRASP_DEPTH])
        at_grasp = float(np.linalg.norm(grasp - grasp_point)) < cfg.reach_tolerance
        if opening < CLOSED_ON_NOTHING:
            self._regrasp = True
        if self._regrasp:
            if opening > OPEN_ENOUGH:
                self._regrasp = False
            else:
                # Closed on nothing: open while backing off upwards.
                return (
                    np.array([*grasp_point[:2], max(grasp_point[2], grasp[2] + 0.05)]),
                    yaw,
                    robot.FINGER_OPEN,
                )
        if at_grasp and opening > CLOSED_ON_NOTHING:
            return grasp, yaw, robot.FINGER_CLOSED
        waypoint, above = self._move_via_safe_height(grasp_point, grasp, safe_z, cfg.align_tolerance)
        if above and opening < OPEN_ENOUGH and grasp_point[2] > grasp[2] + 0.03:
            # Wait above the block until the fingers are open.
            return grasp_point, yaw, robot.FINGER_OPEN
        return waypoint, yaw, robot.FINGER_OPEN

    def _push(
        self, grasp_point: np.ndarray, world: WorldState, block: str, direction: str
    ) -> tuple[np.ndarray, float, float]:
        cfg = self.config
        along, _ = push_displacement(world, block, direction)
        if along > PUSH_DISTANCE + 0.02:
            return self._retreat(grasp_point)
        axis = np.array([*DIRECTIONS[direction], 0.0])
        position = np.array(world.blocks[block].position)
        push_z = world.table_height + 0.012
        # Closed fingers as a paddle across the push direction.
        yaw = _wrap(math.atan2(axis[1], axis[0]))
        yaw = _wrap(yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
        behind = position - axis * (BLOCK_SIZE / 2 + 0.025)
        behind[2] = push_z
        relative = grasp_point - position
        along_ee = float(relative @ axis)
        sideways = float(np.linalg.norm(relative[:2] - axis[:2] * along_ee))
        in_line = along_ee < -BLOCK_SIZE / 2 and sideways < 0.012 and grasp_point[2] < push_z + 0.015
        if in_line:
            # Push through the block's centre line, a little ahead of where the fingers are.
            target = position - axis * (BLOCK_SIZE / 2 + 0.01) + axis * cfg.max_step
            target[2] = push_z
            return target, yaw, robot.FINGER_CLOSED
        safe_z = world.table_height + cfg.safe_height
        waypoint, _ = self._move_via_safe_height(grasp_point, behind, safe_z, cfg.align_tolerance)
        return waypoint, yaw, robot.FINGER_CLOSED


def make_expert(env: VlaSimEnv, config: ExpertConfig | None = None) -> EnvExpert:
    """The scripted expert for the env's current task (it follows ``env.reset`` to new tasks)."""
    return EnvExpert(env, config)


class EnvExpert:
    """A :class:`ScriptedExpert` bound to a Gymnasium env: ``act_env()`` reads the env's current state."""

    def __init__(self, env: VlaSimEnv, config: ExpertConfig | None = None) -> None:
        self.env = env
        self._config = config or ExpertConfig(control_hz=env.scene.config.control_hz)
        self._expert: ScriptedExpert | None = None
        self._kinematics = robot.PandaKinematics()

    def act_env(self) -> np.ndarray:
        """The expert's action for the env's current state (re-planned from it)."""
        task = self.env.task
        if task is None:
            raise RuntimeError("env.reset() first")
        if self._expert is None or self._expert.task is not task:
            self._expert = ScriptedExpert(task, self._kinematics, self._config)
        return self._expert.act(self.env.scene.joint_positions(), self.env.scene.world_state())

    def close(self) -> None:
        self._kinematics.close()


class DriverStatus(enum.Enum):
    ACTING = "acting"
    IDLE = "idle"  # empty instruction: nothing to do
    NO_TASK = "no task"
    BAD_TASK = "instruction matches no task template"
    NO_SCENE = "no scene description yet"
    NO_STATE = "no joint states or object poses yet"
    STALE = "joint states or object poses are stale"
    MISMATCH = "the scene lacks the task's blocks, or poses and scene disagree"


class ExpertDriver:
    """The expert fed from messages (for ``expert_node``): task text, scene description, joints, poses.

    ``decide(now)`` returns the status and, when ACTING, the next 8-d target. Times are monotonic seconds
    of receipt, so stale inputs (a stopped simulator) stop the commands instead of repeating old ones.
    """

    def __init__(self, config: ExpertConfig | None = None, state_timeout_s: float = 0.5) -> None:
        if state_timeout_s <= 0:
            raise ValueError("state_timeout_s must be positive")
        self.config = config or ExpertConfig()
        self.state_timeout_s = state_timeout_s
        self._kinematics = robot.PandaKinematics()
        self._expert: ScriptedExpert | None = None
        self.task: Task | None = None
        self.task_status = DriverStatus.NO_TASK
        self._scene: dict[str, Any] | None = None
        self._joints: tuple[float, np.ndarray] | None = None
        self._poses: tuple[float, list[tuple[Sequence[float], Sequence[float]]]] | None = None

    def close(self) -> None:
        self._kinematics.close()

    def set_instruction(self, text: str) -> DriverStatus:
        if not text.strip():
            self.task, self.task_status = None, DriverStatus.IDLE
            return self.task_status
        try:
            task = parse_instruction(text)
        except ValueError:
            self.task, self.task_status = None, DriverStatus.BAD_TASK
            return self.task_status
        if task != self.task:
            self.task, self._expert = task, None
        self.task_status = DriverStatus.ACTING
        return self.task_status

    def set_scene(self, description: dict[str, Any]) -> None:
        if self._scene is None or description.get("episode") != self._scene.get("episode"):
            self._expert = None  # a new episode: forget the re-grasp memory
            self._poses = None
        self._scene = description

    def update_joints(self, names: Sequence[str], positions: Sequence[float], now: float) -> bool:
        by_name = dict(zip(names, positions, strict=False))
        if not all(n in by_name for n in PANDA_COMMAND_JOINTS):
            return False
        self._joints = (now, np.array([by_name[n] for n in PANDA_COMMAND_JOINTS], dtype=np.float64))
        return True

    def update_poses(self, poses: list[tuple[Sequence[float], Sequence[float]]], now: float) -> None:
        self._poses = (now, poses)

    def decide(self, now: float) -> tuple[DriverStatus, np.ndarray | None]:
        if self.task is None:
            return self.task_status, None
        if self._scene is None:
            return DriverStatus.NO_SCENE, None
        if self._joints is None or self._poses is None:
            return DriverStatus.NO_STATE, None
        if now - min(self._joints[0], self._poses[0]) > self.state_timeout_s:
            return DriverStatus.STALE, None
        from vla_sim.bridge import world_from_scene_message

        try:
            world = world_from_scene_message(self._scene, self._poses[1])
        except (ValueError, KeyError):
            return DriverStatus.MISMATCH, None
        if any(c not in world.blocks for c in self.task.colours):
            return DriverStatus.MISMATCH, None
        if self._expert is None:
            self._expert = ScriptedExpert(self.task, self._kinematics, self.config)
        return DriverStatus.ACTING, self._expert.act(self._joints[1], world)
