"""Dataset and observation feature keys: LeRobot's names, defined once (as LeRobot's ``utils/constants.py``).

A dataset frame, a policy observation and the simulator's Gymnasium observation all use these keys, so a
model trained on a recorded dataset reads a live observation without renaming anything.
"""

from __future__ import annotations

IMAGE_PREFIX = "observation.images."  # + camera name: HxWx3 uint8 RGB
STATE_KEY = "observation.state"  # the joint positions, in the manifest's joint order
ENVIRONMENT_STATE_KEY = "observation.environment_state"  # privileged world state (the sim's referents)
ACTION_KEY = "action"  # the commanded joint targets, in the manifest's action order


def image_key(camera: str) -> str:
    """The feature key of a camera's images: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera
