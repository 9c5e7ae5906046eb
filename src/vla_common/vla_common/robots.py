"""The robots' joint conventions: names and order, the one place every package takes them from.

The Franka Panda: ``panda_joint1`` .. ``panda_joint7`` (rad) and ``panda_finger_joint1`` (m, the opening of
each finger, 0.0 closed .. 0.04 open), mirrored to ``panda_finger_joint2``. Commands and actions carry the
eight ``PANDA_COMMAND_JOINTS``; joint states carry all nine ``PANDA_STATE_JOINTS``.

Limits are not here: they belong to the safety monitor's robot profiles (``vla_safety/config/robots``), which
it loads and checks itself.
"""

from __future__ import annotations

from collections.abc import Mapping

PANDA_ARM_JOINTS: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
PANDA_FINGER_JOINT = "panda_finger_joint1"
PANDA_MIRRORED_FINGER_JOINT = "panda_finger_joint2"
PANDA_COMMAND_JOINTS: tuple[str, ...] = (*PANDA_ARM_JOINTS, PANDA_FINGER_JOINT)
PANDA_STATE_JOINTS: tuple[str, ...] = (*PANDA_COMMAND_JOINTS, PANDA_MIRRORED_FINGER_JOINT)

# Commanded joints per robot profile, in the order its driver's controllers expect them (Float64MultiArray
# adapters send positions in this order). Limits come from vla_safety's robot profile of the same name.
ROBOT_COMMAND_JOINTS: Mapping[str, tuple[str, ...]] = {
    "panda": PANDA_COMMAND_JOINTS,
    "ur5e": (  # ur_robot_driver's order
        "shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint",
    ),
    "so101": ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"),  # LeRobot's order
}  # fmt: skip
