"""A small, learnable synthetic LeRobot v3 dataset (written with the collector's writer) for tests and benches.

Two instructions drive joint 1 in opposite directions; the front camera shows a square in the instruction's
colour whose position follows the arm, the wrist camera a brightness that follows the gripper. The action is
the next state, so a policy that reads the instruction and the images can predict it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from vla_collector.lerobot import DatasetSpec, LeRobotV3Writer, VideoCodecConfig
from vla_common.manifest import CameraSpec
from vla_common.robots import PANDA_COMMAND_JOINTS

SYNTHETIC_TASKS = ("push the red block left", "push the blue block right")


def _frame(height: int, width: int, t: float, red: bool) -> np.ndarray:
    img = np.full((height, width, 3), 30, np.uint8)
    size = max(4, height // 5)
    col = int((width - size) * t)
    row = (height - size) // 2
    img[row : row + size, col : col + size] = (220, 40, 40) if red else (40, 40, 220)
    return img


def write_synthetic_dataset(
    root: str | Path,
    *,
    episodes: int = 4,
    frames: int = 12,
    cameras: Sequence[CameraSpec] = (CameraSpec("front", 48, 64), CameraSpec("wrist", 32, 32)),
    fps: int = 10,
    seed: int = 0,
    tasks: Sequence[str] = SYNTHETIC_TASKS,
) -> Path:
    """Write ``episodes`` episodes of ``frames`` frames; even episodes use the first task, odd the second
    (of ``tasks``, whose first is the red block's motion and second the blue one's)."""
    rng = np.random.default_rng(seed)
    spec = DatasetSpec(
        fps=fps,
        robot_type="panda",
        state_names=PANDA_COMMAND_JOINTS,
        action_names=PANDA_COMMAND_JOINTS,
        cameras=tuple(cameras),
        video=VideoCodecConfig(codec="libx264", pix_fmt="yuv444p", crf=0),  # lossless: exact pixels
    )
    writer = LeRobotV3Writer.create(root, spec)
    for ep in range(episodes):
        red = ep % 2 == 0
        direction = 1.0 if red else -1.0
        start = rng.normal(0.0, 0.05, size=len(PANDA_COMMAND_JOINTS))
        start[-1] = 0.04
        n = frames + 1
        progress = np.linspace(0.0, 1.0, n)
        states = np.repeat(start[None], n, axis=0)
        states[:, 0] += direction * 0.8 * progress
        states[:, 3] += -0.3 * progress
        states[:, -1] = 0.04 * (1.0 - progress)  # the gripper closes
        states = states.astype(np.float32)
        images = {}
        for cam in cameras:
            if cam.name == "front":
                pos = progress if red else 1.0 - progress
                images[cam.name] = [_frame(cam.height, cam.width, float(p), red) for p in pos[:frames]]
            else:
                images[cam.name] = [
                    np.full((cam.height, cam.width, 3), int(40 + 180 * (1 - p)), np.uint8)
                    for p in progress[:frames]
                ]
        writer.write_episode(states[:frames], states[1:], images, tasks[ep % 2])
    return Path(root)
