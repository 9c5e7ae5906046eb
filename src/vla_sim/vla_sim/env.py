"""The Gymnasium env over :class:`vla_sim.scene.Scene` (see the package docstring for the API)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from vla_common.features import ENVIRONMENT_STATE_KEY, STATE_KEY, image_key

from vla_sim import robot
from vla_sim.scene import CameraConfig, Renderer, Scene, SceneConfig
from vla_sim.tasks import (
    REFERENT_NAMES,
    Split,
    Task,
    TaskRequest,
    WorldState,
    is_success,
    referent_positions,
    resolve_task,
)

VELOCITY_KEY = "observation.velocity"
GRIPPER_KEY = "observation.gripper"
# ENVIRONMENT_STATE_KEY: privileged ground truth (LeRobot's name for it): float32[6] named REFERENT_NAMES,
# robot base frame.


@dataclass(frozen=True)
class EnvConfig:
    cameras: tuple[str, ...] = ("front",)
    image_width: int = 128
    image_height: int = 128
    control_hz: float = 10.0
    physics_hz: float = 240.0
    # Camera frames per simulated second (0: one per control step). Below control_hz the observation keeps the
    # last frame in between, as a camera slower than the control loop delivers it (sim_node's camera_rate).
    camera_hz: float = 0.0
    split: Split = Split.TRAIN
    terminate_on_success: bool = True
    renderer: Renderer = Renderer.TINY

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "split", Split(self.split))
        object.__setattr__(self, "renderer", Renderer(self.renderer))
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate camera names in {self.cameras}")
        for name in self.cameras:  # validates names and sizes
            CameraConfig(name=name, width=self.image_width, height=self.image_height)
        if self.camera_hz < 0 or self.camera_hz > self.control_hz:
            raise ValueError(
                f"camera_hz must be within [0, control_hz={self.control_hz}], got {self.camera_hz}"
            )

    def camera_configs(self) -> tuple[CameraConfig, ...]:
        return tuple(
            CameraConfig(name=n, width=self.image_width, height=self.image_height) for n in self.cameras
        )


class VlaSimEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Franka Panda tabletop with a language task. Action: float32[8] absolute joint targets + finger opening."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self, task: TaskRequest = None, config: EnvConfig | None = None, seed: int | None = None
    ) -> None:
        self.config = config or EnvConfig()
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}
        self.render_mode = "rgb_array"
        self.scene = Scene(
            SceneConfig(
                physics_hz=self.config.physics_hz,
                control_hz=self.config.control_hz,
                renderer=self.config.renderer,
            )
        )
        self._cameras = self.config.camera_configs()
        self._request = task
        self._seed = seed
        self.task: Task | None = None
        self._steps = 0
        self._limit = 0
        self._frames: dict[str, np.ndarray] = {}
        self._next_frame_time = 0.0
        low = robot.LOWER_LIMITS.astype(np.float32)
        high = robot.UPPER_LIMITS.astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        spaces: dict[str, gym.Space[Any]] = {
            image_key(c.name): gym.spaces.Box(0, 255, (c.height, c.width, 3), dtype=np.uint8)
            for c in self._cameras
        }
        # Measured joints can sit a hair outside their limits (contact, solver slack): a small margin.
        margin = np.array([0.05] * 7 + [0.005], dtype=np.float32)
        spaces[STATE_KEY] = gym.spaces.Box(low - margin, high + margin, dtype=np.float32)
        spaces[VELOCITY_KEY] = gym.spaces.Box(-np.inf, np.inf, (8,), dtype=np.float32)
        spaces[GRIPPER_KEY] = gym.spaces.Box(0.0, robot.FINGER_OPEN, (2,), dtype=np.float32)
        spaces[ENVIRONMENT_STATE_KEY] = gym.spaces.Box(
            -np.inf, np.inf, (len(REFERENT_NAMES),), dtype=np.float32
        )
        self.observation_space = gym.spaces.Dict(spaces)

    # --- gymnasium API ---------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``options={"task": family | instruction | Task}`` overrides the env's task for this episode."""
        if seed is None and self._seed is not None and self.task is None:
            seed = self._seed
        super().reset(seed=seed)
        request = (options or {}).get("task", self._request)
        self.task = resolve_task(request, self.np_random, self.config.split)
        self.scene.reset(self.task, self.np_random)
        self._steps = 0
        self._next_frame_time = 0.0
        self._limit = round(self.task.time_limit_s * self.config.control_hz)
        world = self.scene.world_state()
        return self._observation(world), self._info(world)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply the joint target (clipped into the joint limits) for one control period."""
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        target = np.asarray(action, dtype=np.float64).reshape(-1)
        self.scene.step(target)  # raises ValueError for a wrong shape or NaN
        self._steps += 1
        world = self.scene.world_state()
        info = self._info(world)
        terminated = bool(info["success"] and self.config.terminate_on_success)
        truncated = self._steps >= self._limit and not terminated
        return self._observation(world), float(info["success"]), terminated, truncated, info

    def render(self) -> np.ndarray:  # type: ignore[override]
        camera = self._cameras[0] if self._cameras else CameraConfig()
        return self.scene.render(camera)

    def close(self) -> None:
        self.scene.close()

    # --- helpers ---------------------------------------------------------------------------------------

    def _observation(self, world: WorldState) -> dict[str, np.ndarray]:
        if self.task is None:
            raise RuntimeError("no task")
        positions = self.scene.joint_positions()
        velocities = self.scene.joint_velocities()
        now = self._steps / self.config.control_hz
        if not self.config.camera_hz or now >= self._next_frame_time - 1e-9:
            self._frames = {image_key(c.name): self.scene.render(c) for c in self._cameras}
            if self.config.camera_hz:  # on the camera's own grid of frame times, so the rate does not drift
                self._next_frame_time = (
                    math.floor(now * self.config.camera_hz + 1e-9) + 1
                ) / self.config.camera_hz
        obs: dict[str, np.ndarray] = dict(self._frames)
        obs[STATE_KEY] = positions[:8].astype(np.float32)
        obs[VELOCITY_KEY] = velocities[:8].astype(np.float32)
        obs[GRIPPER_KEY] = np.clip(positions[7:9], 0.0, robot.FINGER_OPEN).astype(np.float32)
        obs[ENVIRONMENT_STATE_KEY] = referent_positions(self.task, world)
        return obs

    def _info(self, world: Any) -> dict[str, Any]:
        if self.task is None:
            raise RuntimeError("no task")
        return {
            "success": is_success(self.task, world),
            # The named block is in the gripper (where an episode fails: before the grasp or after it).
            "target_held": self.task.slots["block"] in world.held,
            "task": self.task.instruction,
            "family": self.task.family.value,
            "split": self.task.split.value,
            "step": self._steps,
            "time_limit_steps": self._limit,
            "sim_time": self.scene.sim_time,
        }


def make_env(
    task: TaskRequest = None,
    seed: int | None = None,
    *,
    cameras: Sequence[str] = ("front",),
    image_size: tuple[int, int] = (128, 128),
    control_hz: float = 10.0,
    split: Split | str = Split.TRAIN,
    **config: Any,
) -> VlaSimEnv:
    """A :class:`VlaSimEnv`; ``image_size`` is (height, width); other :class:`EnvConfig` fields by keyword."""
    env_config = EnvConfig(
        cameras=tuple(cameras),
        image_height=image_size[0],
        image_width=image_size[1],
        control_hz=control_hz,
        split=Split(split),
        **config,
    )
    return VlaSimEnv(task, env_config, seed)
