"""The feature keys are LeRobot's; the joint lists are the robots' drivers' order."""

from vla_common.features import (
    ACTION_KEY,
    ENVIRONMENT_STATE_KEY,
    IMAGE_PREFIX,
    STATE_KEY,
    image_key,
)
from vla_common.manifest import CameraSpec
from vla_common.robots import (
    PANDA_ARM_JOINTS,
    PANDA_COMMAND_JOINTS,
    PANDA_FINGER_JOINT,
    PANDA_MIRRORED_FINGER_JOINT,
    PANDA_STATE_JOINTS,
    ROBOT_COMMAND_JOINTS,
)


def test_lerobot_feature_names():
    # LeRobot's utils/constants.py: OBS_STATE, OBS_ENV_STATE, ACTION, OBS_IMAGES + "."
    assert STATE_KEY == "observation.state"
    assert ENVIRONMENT_STATE_KEY == "observation.environment_state"
    assert ACTION_KEY == "action"
    assert IMAGE_PREFIX == "observation.images."


def test_image_keys_round_trip():
    assert image_key("front") == "observation.images.front"
    assert CameraSpec("front", 8, 8).feature_key == image_key("front")


def test_panda_joints():
    assert tuple(f"panda_joint{i}" for i in range(1, 8)) == PANDA_ARM_JOINTS
    assert (*PANDA_ARM_JOINTS, "panda_finger_joint1") == PANDA_COMMAND_JOINTS
    assert (*PANDA_COMMAND_JOINTS, "panda_finger_joint2") == PANDA_STATE_JOINTS
    assert PANDA_STATE_JOINTS[-2:] == (PANDA_FINGER_JOINT, PANDA_MIRRORED_FINGER_JOINT)


def test_every_robot_profile_has_unique_joint_names():
    assert set(ROBOT_COMMAND_JOINTS) == {"panda", "ur5e", "so101"}
    assert ROBOT_COMMAND_JOINTS["panda"] == PANDA_COMMAND_JOINTS
    for joints in ROBOT_COMMAND_JOINTS.values():
        assert len(set(joints)) == len(joints)
