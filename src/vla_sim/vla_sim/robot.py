"""The Franka Panda as the simulator and the experts see it: limits, home pose, kinematics.

The joint names and their order (the convention shared by the whole workspace) are in
:mod:`vla_common.robots`; the arrays here follow ``PANDA_COMMAND_JOINTS``.

:class:`PandaKinematics` is a private PyBullet client holding only the arm, used for inverse and forward
kinematics without touching a running simulation (so an expert can plan from joint states received over ROS
exactly as it does inside the Gymnasium env). Pure Python, no rclpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

PANDA_URDF = "franka_panda/panda.urdf"
# PyBullet link indices of panda.urdf (joint i moves link i).
ARM_JOINT_INDICES: tuple[int, ...] = tuple(range(7))
FINGER_JOINT_INDICES: tuple[int, int] = (9, 10)
GRASP_LINK_INDEX = 11  # panda_grasptarget: between the finger tips

# From panda.urdf (and Franka's datasheet): position limits, effort (N m / N) and velocity limits.
LOWER_LIMITS = np.array([-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671, 0.0])
UPPER_LIMITS = np.array([2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671, 0.04])
ARM_EFFORT = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
ARM_MAX_VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
FINGER_MAX_VELOCITY = 0.2  # m/s, panda.urdf
COMMAND_MAX_VELOCITY = np.append(ARM_MAX_VELOCITY, FINGER_MAX_VELOCITY)
FINGER_OPEN = 0.04
FINGER_CLOSED = 0.0

# Arm over the table, hand pointing down, gripper open.
HOME_POSITIONS = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, math.pi / 4, FINGER_OPEN])


def clip_command(command: np.ndarray) -> np.ndarray:
    """Clip an 8-d joint target into the joint limits (the simulator's joints cannot go beyond them)."""
    return np.clip(command, LOWER_LIMITS, UPPER_LIMITS)


def down_orientation(yaw: float) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of the hand pointing straight down, rotated by ``yaw`` about the vertical."""
    return tuple(pybullet.getQuaternionFromEuler((math.pi, 0.0, yaw)))  # type: ignore[return-value]


@dataclass(frozen=True)
class IkSolution:
    arm_positions: np.ndarray  # [7] rad
    position_error: float  # m, between the reached and the requested grasp point


class PandaKinematics:
    """Inverse and forward kinematics of the grasp point, on a private PyBullet client."""

    def __init__(self) -> None:
        self._client = BulletClient(connection_mode=pybullet.DIRECT)
        self._client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self._robot = self._client.loadURDF(PANDA_URDF, useFixedBase=True)
        self._rest = [*list(HOME_POSITIONS[:7]), FINGER_OPEN, FINGER_OPEN]

    def close(self) -> None:
        self._client.disconnect()

    def _set_arm(self, arm_positions: Sequence[float]) -> None:
        for index, value in zip(ARM_JOINT_INDICES, arm_positions, strict=True):
            self._client.resetJointState(self._robot, index, float(value))

    def grasp_pose(
        self, arm_positions: Sequence[float]
    ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Forward kinematics: world position and orientation of the grasp point."""
        self._set_arm(arm_positions)
        state = self._client.getLinkState(self._robot, GRASP_LINK_INDEX, computeForwardKinematics=True)
        return np.array(state[4]), tuple(state[5])

    def solve(
        self,
        position: Sequence[float],
        orientation: Sequence[float],
        seed: Sequence[float],
        iterations: int = 3,
    ) -> IkSolution:
        """Arm joint positions that put the grasp point at ``position`` with ``orientation``.

        Starts from ``seed`` (the current arm) and refines a few times, because one call of PyBullet's damped
        least squares IK stops short on large moves.
        """
        arm = np.asarray(seed[:7], dtype=float)
        lower, upper = LOWER_LIMITS[:7], UPPER_LIMITS[:7]
        error = math.inf
        for _ in range(iterations):
            self._set_arm(arm)
            solution = self._client.calculateInverseKinematics(
                self._robot,
                GRASP_LINK_INDEX,
                list(position),
                list(orientation),
                lowerLimits=[*list(lower), 0.0, 0.0],
                upperLimits=[*list(upper), 0.04, 0.04],
                jointRanges=[*list(upper - lower), 0.04, 0.04],
                restPoses=self._rest,
                maxNumIterations=100,
                residualThreshold=1e-5,
            )
            arm = np.clip(np.array(solution[:7]), lower, upper)
            reached, _ = self.grasp_pose(arm)
            error = float(np.linalg.norm(reached - np.asarray(position)))
            if error < 1e-3:
                break
        return IkSolution(arm, error)
