"""The PyBullet tabletop: a Franka Panda on a table, 3-6 coloured blocks, a bowl and a marked zone.

:class:`Scene` owns one PyBullet client (DIRECT, no GUI). ``reset(task, rng)`` rebuilds the world for a task
(the task's blocks, random distractor blocks, random poses, all from ``rng``: same seed, same world);
``step(command)`` applies an 8-d joint target (7 arm joints in rad + finger opening in m) and advances one
control period (``physics_hz / control_hz`` physics steps); ``render(camera)`` draws a camera with the CPU
renderer (``ER_TINY_RENDERER``, no GL needed) or, optionally, EGL. ``world_state()`` is the snapshot the task
predicates in :mod:`vla_sim.tasks` judge. Pure Python, no rclpy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from vla_sim import robot
from vla_sim.tasks import (
    BLOCK_SIZE,
    COLOURS,
    DIRECTIONS,
    BlockState,
    TargetState,
    Task,
    TaskFamily,
    WorldState,
)

TABLE_HEIGHT = 0.0  # the robot base stands on the table top
# Where blocks and targets may be put: well inside the Panda's reach, in front of it.
WORKSPACE_X = (0.38, 0.68)
WORKSPACE_Y = (-0.25, 0.25)
BOWL_INNER_RADIUS = 0.07
BOWL_WALL_HEIGHT = 0.03
BOWL_FLOOR = 0.005  # thickness of its floor
ZONE_HALF_SIDE = 0.06
BOWL_RGBA = (0.55, 0.55, 0.6, 1.0)
ZONE_RGBA = (0.95, 0.95, 0.95, 1.0)
TABLE_RGBA = (0.6, 0.45, 0.3, 1.0)


class Renderer(str, enum.Enum):
    TINY = "tiny"  # PyBullet's CPU renderer: works everywhere
    EGL = "egl"  # hardware OpenGL through the eglRenderer plugin, where a GPU driver is present


@dataclass(frozen=True)
class CameraConfig:
    """A pinhole camera. ``front`` is fixed across the table, facing the robot; ``wrist`` rides on the hand."""

    name: str = "front"
    width: int = 128
    height: int = 128
    fov_deg: float = 50.0  # vertical field of view
    near: float = 0.02
    far: float = 3.0
    # Facing the robot across the table (the robot's left is the image's right); ignored by the wrist camera.
    eye: tuple[float, float, float] = (1.0, 0.0, 0.6)
    target: tuple[float, float, float] = (0.45, 0.0, 0.05)

    def __post_init__(self) -> None:
        if self.name not in ("front", "wrist"):
            raise ValueError(f"camera name must be 'front' or 'wrist', got {self.name!r}")
        if not (8 <= self.width <= 4096 and 8 <= self.height <= 4096):
            raise ValueError(f"camera {self.name}: size {self.width}x{self.height} outside 8..4096")
        if not (1.0 < self.fov_deg < 170.0) or not (0 < self.near < self.far):
            raise ValueError(f"camera {self.name}: bad fov/near/far")

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels, for CameraInfo."""
        fy = self.height / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))
        return fy, fy, self.width / 2.0, self.height / 2.0


@dataclass(frozen=True)
class SceneConfig:
    physics_hz: float = 240.0
    control_hz: float = 10.0
    min_blocks: int = 3
    max_blocks: int = 6
    block_mass: float = 0.1  # kg
    block_friction: float = 1.0
    finger_friction: float = 1.5
    finger_force: float = 40.0  # N per finger (the real Panda hand: 70 N continuous)
    renderer: Renderer = Renderer.TINY

    def __post_init__(self) -> None:
        if self.physics_hz <= 0 or self.control_hz <= 0:
            raise ValueError("physics_hz and control_hz must be positive")
        ratio = self.physics_hz / self.control_hz
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(
                f"physics_hz ({self.physics_hz}) must be a multiple of control_hz ({self.control_hz})"
            )
        if not (1 <= self.min_blocks <= self.max_blocks <= len(COLOURS)):
            raise ValueError(f"need 1 <= min_blocks <= max_blocks <= {len(COLOURS)}")
        if self.block_mass <= 0 or self.finger_force <= 0:
            raise ValueError("block_mass and finger_force must be positive")
        object.__setattr__(self, "renderer", Renderer(self.renderer))

    @property
    def substeps(self) -> int:
        return round(self.physics_hz / self.control_hz)


@dataclass(frozen=True)
class Layout:
    """Where everything starts: block centres (x, y) and yaws, bowl and zone centres."""

    blocks: Mapping[str, tuple[float, float, float]]  # colour -> (x, y, yaw)
    bowl: tuple[float, float]
    zone: tuple[float, float]


def _far_from(point: np.ndarray, others: Sequence[tuple[np.ndarray, float]]) -> bool:
    return all(np.linalg.norm(point - p) >= d for p, d in others)


def sample_layout(task: Task, rng: np.random.Generator, min_blocks: int = 3, max_blocks: int = 6) -> Layout:
    """Random poses for the task's blocks, the bowl, the zone and distractor blocks (rejection sampling)."""
    low, high = np.array([WORKSPACE_X[0], WORKSPACE_Y[0]]), np.array([WORKSPACE_X[1], WORKSPACE_Y[1]])
    bowl_clear = BOWL_INNER_RADIUS + 0.02
    for _ in range(1000):
        occupied: list[tuple[np.ndarray, float]] = []  # (point, clearance radius)
        bowl = rng.uniform(low, high)
        zone = rng.uniform(low, high)
        if np.linalg.norm(bowl - zone) < bowl_clear + ZONE_HALF_SIDE * 1.5 + 0.02:
            continue
        occupied += [(bowl, bowl_clear + 0.04), (zone, ZONE_HALF_SIDE * 1.42 + 0.03)]
        n_blocks = int(rng.integers(max(min_blocks, len(task.colours)), max_blocks + 1))
        others = [c for c in rng.permutation(sorted(COLOURS)) if c not in task.colours]
        colours = [*task.colours, *others[: n_blocks - len(task.colours)]]
        blocks: dict[str, tuple[float, float, float]] = {}
        ok = True
        for index, colour in enumerate(colours):
            for _ in range(200):
                xy = rng.uniform(low, high)
                if not _far_from(xy, [(p, r + 0.035) for p, r in occupied]):
                    continue
                corridor: list[tuple[np.ndarray, float]] = []
                if task.family is TaskFamily.PUSH and index == 0:
                    direction = np.array(DIRECTIONS[task.slots["direction"]])
                    end = xy + direction * 0.16
                    if not (np.all(end >= low - 0.03) and np.all(end <= high + 0.03)):
                        continue
                    # Keep the pushing path and the approach from behind free of anything else.
                    corridor = [(xy + direction * s, 0.05) for s in (-0.08, 0.05, 0.10, 0.15, 0.20)]
                    if not _far_from(xy, occupied[:2]) or not all(
                        _far_from(p, [(q, r + 0.03) for q, r in occupied]) for p, _ in corridor
                    ):
                        continue
                blocks[colour] = (float(xy[0]), float(xy[1]), float(rng.uniform(-math.pi / 4, math.pi / 4)))
                occupied.append((xy, 0.035))
                occupied.extend(corridor)
                break
            else:
                ok = False
                break
        if ok:
            return Layout(
                MappingProxyType(blocks), (float(bowl[0]), float(bowl[1])), (float(zone[0]), float(zone[1]))
            )
    raise RuntimeError(f"could not lay out a scene for {task.instruction!r}")


class Scene:
    """One PyBullet world. Not thread-safe: call it from one thread."""

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        self._client = BulletClient(connection_mode=pybullet.DIRECT)
        self._client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self._renderer_id = pybullet.ER_TINY_RENDERER
        if self.config.renderer is Renderer.EGL:
            import pkgutil

            egl = pkgutil.get_loader("eglRenderer")
            plugin = (
                self._client.loadPlugin(egl.get_filename(), "_eglRendererPlugin")
                if egl
                else self._client.loadPlugin("eglRendererPlugin")
            )
            if plugin < 0:
                raise RuntimeError(
                    "the EGL renderer plugin did not load (no GPU/EGL driver?); use renderer='tiny'"
                )
            self._renderer_id = pybullet.ER_BULLET_HARDWARE_OPENGL
        self.task: Task | None = None
        self.layout: Layout | None = None
        self._robot = -1
        self._blocks: dict[str, int] = {}
        self._initial: dict[str, tuple[float, float, float]] = {}
        self._bowl = -1
        self._steps = 0
        self._command = robot.HOME_POSITIONS.copy()

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None  # type: ignore[assignment]

    # --- building --------------------------------------------------------------------------------------

    def reset(self, task: Task, rng: np.random.Generator) -> None:
        """Rebuild the world for ``task`` with a layout drawn from ``rng``; the arm starts at home."""
        c = self._client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(
            fixedTimeStep=1.0 / self.config.physics_hz,
            numSolverIterations=50,
            deterministicOverlappingPairs=1,
        )
        self.task = task
        self.layout = sample_layout(task, rng, self.config.min_blocks, self.config.max_blocks)
        # A slightly different table tint per episode, so a policy cannot key on one exact colour.
        tint = rng.uniform(-0.06, 0.06)
        self._build_table((*(float(np.clip(v + tint, 0, 1)) for v in TABLE_RGBA[:3]), 1.0))
        self._build_robot()
        self._build_targets(self.layout)
        self._blocks, self._initial = {}, {}
        for colour, (x, y, yaw) in self.layout.blocks.items():
            self._blocks[colour] = self._build_block(colour, (x, y, TABLE_HEIGHT + BLOCK_SIZE / 2), yaw)
        self._steps = 0
        self._command = robot.HOME_POSITIONS.copy()
        self._apply(self._command)
        # Let the blocks settle on the table before the episode starts.
        for _ in range(int(self.config.physics_hz * 0.1)):
            c.stepSimulation()
        self._initial = {colour: self.block_position(colour) for colour in self._blocks}

    def _build_table(self, rgba: tuple[float, ...]) -> None:
        c = self._client
        half = (0.5, 0.6, 0.025)
        shape = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
        visual = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
        c.createMultiBody(0, shape, visual, basePosition=(0.35, 0.0, TABLE_HEIGHT - half[2]))

    def _build_robot(self) -> None:
        c = self._client
        self._robot = c.loadURDF(robot.PANDA_URDF, basePosition=(0, 0, TABLE_HEIGHT), useFixedBase=True)
        for index, value in zip(robot.ARM_JOINT_INDICES, robot.HOME_POSITIONS[:7], strict=True):
            c.resetJointState(self._robot, index, float(value))
        for index in robot.FINGER_JOINT_INDICES:
            c.resetJointState(self._robot, index, float(robot.HOME_POSITIONS[7]))
            c.changeDynamics(
                self._robot, index, lateralFriction=self.config.finger_friction, spinningFriction=0.003
            )
        # Couple the fingers like the real hand's mechanism, so a held block cannot push both to one side.
        gear = c.createConstraint(
            self._robot,
            robot.FINGER_JOINT_INDICES[0],
            self._robot,
            robot.FINGER_JOINT_INDICES[1],
            jointType=pybullet.JOINT_GEAR,
            jointAxis=(1, 0, 0),
            parentFramePosition=(0, 0, 0),
            childFramePosition=(0, 0, 0),
        )
        c.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=200)

    def _build_targets(self, layout: Layout) -> None:
        c = self._client
        # The zone: a flat marker with no collision.
        zone_visual = c.createVisualShape(
            pybullet.GEOM_BOX, halfExtents=(ZONE_HALF_SIDE, ZONE_HALF_SIDE, 0.0005), rgbaColor=ZONE_RGBA
        )
        c.createMultiBody(0, -1, zone_visual, basePosition=(*layout.zone, TABLE_HEIGHT + 0.0005))
        # The bowl: a floor disc and a ring of wall segments, fixed to the table.
        n_walls, thickness = 12, 0.006
        radius = BOWL_INNER_RADIUS + thickness / 2
        wall_half = (thickness / 2, radius * math.tan(math.pi / n_walls) + 0.002, BOWL_WALL_HEIGHT / 2)
        types = [pybullet.GEOM_CYLINDER] + [pybullet.GEOM_BOX] * n_walls
        half_extents = [(0, 0, 0)] + [wall_half] * n_walls
        positions = [(0, 0, BOWL_FLOOR / 2)]
        orientations = [(0, 0, 0, 1)]
        for k in range(n_walls):
            angle = 2 * math.pi * k / n_walls
            positions.append((radius * math.cos(angle), radius * math.sin(angle), BOWL_WALL_HEIGHT / 2))
            orientations.append(tuple(pybullet.getQuaternionFromEuler((0, 0, angle))))
        radii = [BOWL_INNER_RADIUS + thickness] + [0.0] * n_walls
        lengths = [BOWL_FLOOR] + [0.0] * n_walls
        shape = c.createCollisionShapeArray(
            types,
            radii=radii,
            halfExtents=half_extents,
            lengths=lengths,
            collisionFramePositions=positions,
            collisionFrameOrientations=orientations,
        )
        visual = c.createVisualShapeArray(
            types,
            radii=radii,
            halfExtents=half_extents,
            lengths=lengths,
            rgbaColors=[BOWL_RGBA] * (n_walls + 1),
            visualFramePositions=positions,
            visualFrameOrientations=orientations,
        )
        self._bowl = c.createMultiBody(0, shape, visual, basePosition=(*layout.bowl, TABLE_HEIGHT))

    def _build_block(self, colour: str, position: tuple[float, float, float], yaw: float) -> int:
        c = self._client
        half = (BLOCK_SIZE / 2,) * 3
        shape = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
        visual = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=COLOURS[colour])
        body = c.createMultiBody(
            self.config.block_mass,
            shape,
            visual,
            basePosition=position,
            baseOrientation=pybullet.getQuaternionFromEuler((0, 0, yaw)),
        )
        c.changeDynamics(body, -1, lateralFriction=self.config.block_friction, spinningFriction=0.002)
        return body

    # --- stepping --------------------------------------------------------------------------------------

    def _require_reset(self) -> None:
        if self.task is None:
            raise RuntimeError("Scene.reset(task, rng) must be called first")

    def _apply(self, command: np.ndarray) -> None:
        c = self._client
        for index, value, force, velocity in zip(
            robot.ARM_JOINT_INDICES, command[:7], robot.ARM_EFFORT, robot.ARM_MAX_VELOCITY, strict=True
        ):
            c.setJointMotorControl2(
                self._robot,
                index,
                pybullet.POSITION_CONTROL,
                float(value),
                force=float(force),
                maxVelocity=float(velocity),
            )
        for index in robot.FINGER_JOINT_INDICES:
            c.setJointMotorControl2(
                self._robot,
                index,
                pybullet.POSITION_CONTROL,
                float(command[7]),
                force=self.config.finger_force,
                maxVelocity=0.2,
            )

    def set_command(self, command: Sequence[float]) -> np.ndarray:
        """Set the joint targets the motors track from now on; returns them clipped into the joint limits.

        Raises ``ValueError`` for a wrong length or a non-finite value (the targets stay as they were).
        """
        self._require_reset()
        target = np.asarray(command, dtype=np.float64)
        if target.shape != (8,):
            raise ValueError(f"command must have 8 values (7 arm joints + finger), got shape {target.shape}")
        if not np.all(np.isfinite(target)):
            raise ValueError("command holds NaN or inf")
        self._command = robot.clip_command(target)
        self._apply(self._command)
        return self._command.copy()

    @property
    def command(self) -> np.ndarray:
        return self._command.copy()

    def step_physics(self, steps: int = 1) -> None:
        self._require_reset()
        for _ in range(steps):
            self._client.stepSimulation()
        self._steps += steps

    def step(self, command: Sequence[float]) -> None:
        """Apply ``command`` and advance one control period."""
        self.set_command(command)
        self.step_physics(self.config.substeps)

    @property
    def sim_time(self) -> float:
        """Seconds of simulated time since reset."""
        return self._steps / self.config.physics_hz

    @property
    def physics_steps(self) -> int:
        return self._steps

    # --- reading ---------------------------------------------------------------------------------------

    def joint_positions(self) -> np.ndarray:
        """Nine positions in ``vla_common.robots.PANDA_STATE_JOINTS`` order."""
        self._require_reset()
        states = self._client.getJointStates(
            self._robot, [*robot.ARM_JOINT_INDICES, *robot.FINGER_JOINT_INDICES]
        )
        return np.array([s[0] for s in states])

    def joint_velocities(self) -> np.ndarray:
        self._require_reset()
        states = self._client.getJointStates(
            self._robot, [*robot.ARM_JOINT_INDICES, *robot.FINGER_JOINT_INDICES]
        )
        return np.array([s[1] for s in states])

    def joint_efforts(self) -> np.ndarray:
        self._require_reset()
        states = self._client.getJointStates(
            self._robot, [*robot.ARM_JOINT_INDICES, *robot.FINGER_JOINT_INDICES]
        )
        return np.array([s[3] for s in states])

    def block_position(self, colour: str) -> tuple[float, float, float]:
        position, _ = self._client.getBasePositionAndOrientation(self._blocks[colour])
        return tuple(position)  # type: ignore[return-value]

    def block_poses(self) -> dict[str, tuple[tuple[float, float, float], tuple[float, float, float, float]]]:
        """colour -> (position, quaternion x y z w), in the scene's block order."""
        self._require_reset()
        return {
            colour: tuple(map(tuple, self._client.getBasePositionAndOrientation(body)))  # type: ignore[misc]
            for colour, body in self._blocks.items()
        }

    def held_blocks(self) -> frozenset[str]:
        """Blocks touching both fingers."""
        c = self._client
        held = set()
        for colour, body in self._blocks.items():
            if all(
                c.getContactPoints(bodyA=self._robot, bodyB=body, linkIndexA=finger)
                for finger in robot.FINGER_JOINT_INDICES
            ):
                held.add(colour)
        return frozenset(held)

    def world_state(self) -> WorldState:
        self._require_reset()
        if self.layout is None:
            raise RuntimeError("no layout")
        blocks = {
            colour: BlockState(position, self._initial[colour], orientation)
            for colour, (position, orientation) in self.block_poses().items()
        }
        targets = {
            "bowl": TargetState(
                (*self.layout.bowl, TABLE_HEIGHT + BOWL_FLOOR), BOWL_INNER_RADIUS, BOWL_WALL_HEIGHT
            ),
            "zone": TargetState((*self.layout.zone, TABLE_HEIGHT), ZONE_HALF_SIDE, 0.0),
        }
        return WorldState(
            MappingProxyType(blocks), MappingProxyType(targets), TABLE_HEIGHT, self.held_blocks()
        )

    def robot_base_pose(self) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
        """The Panda base's (position, quaternion x y z w) in the world frame: the origin, unrotated, so
        world coordinates are the robot's base-frame coordinates (what ``referent_positions`` relies on)."""
        self._require_reset()
        c = self._client
        # PyBullet reports the base's centre of mass; the URDF link frame is that less the inertial offset.
        com_position, com_orientation = c.getBasePositionAndOrientation(self._robot)
        inertial_position, inertial_orientation = c.getDynamicsInfo(self._robot, -1)[3:5]
        inverse = c.invertTransform(inertial_position, inertial_orientation)
        position, orientation = c.multiplyTransforms(com_position, com_orientation, *inverse)
        return tuple(position), tuple(orientation)  # type: ignore[return-value]

    def grasp_point(self) -> np.ndarray:
        state = self._client.getLinkState(self._robot, robot.GRASP_LINK_INDEX, computeForwardKinematics=True)
        return np.array(state[4])

    def render(self, camera: CameraConfig) -> np.ndarray:
        """An HxWx3 uint8 RGB image."""
        self._require_reset()
        c = self._client
        if camera.name == "wrist":
            state = c.getLinkState(self._robot, robot.GRASP_LINK_INDEX, computeForwardKinematics=True)
            rotation = np.array(c.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            hand_z, hand_x = rotation[:, 2], rotation[:, 0]
            # Mounted on the hand, behind the fingers, looking along them.
            eye = np.array(state[4]) - hand_z * 0.12 + hand_x * 0.05
            view = c.computeViewMatrix(eye.tolist(), (eye + hand_z).tolist(), hand_x.tolist())
        else:
            view = c.computeViewMatrix(camera.eye, camera.target, (0.0, 0.0, 1.0))
        projection = c.computeProjectionMatrixFOV(
            camera.fov_deg, camera.width / camera.height, camera.near, camera.far
        )
        _, _, rgba, _, _ = c.getCameraImage(
            camera.width,
            camera.height,
            view,
            projection,
            renderer=self._renderer_id,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
            shadow=0,
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(camera.height, camera.width, 4)[:, :, :3].copy()
