"""The policy node's pure decisions: config validation, embodiment check, hold reasons, state order, timing."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from vla_collector.manifest import ActionType, CameraSpec, EmbodimentManifest, ManifestError
from vla_policy.node_core import (
    ChangeReporter,
    ControlTiming,
    HoldReason,
    PolicyNodeConfig,
    StateIndex,
    cameras_from_lists,
    check_embodiment,
    hold_reason,
)

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")
ROBOT = ("panda_finger_joint2", *reversed(JOINTS))
CONFIG = PolicyNodeConfig(backend="remote")


def manifest(action_type=ActionType.ABSOLUTE_JOINT_POSITION, cameras=("front",)):
    return EmbodimentManifest(
        robot_type="panda",
        joint_names=JOINTS,
        action_names=JOINTS,
        action_type=action_type,
        fps=10.0,
        cameras=tuple(CameraSpec(c, 96, 96) for c in cameras),
    )


def test_matching_embodiment_passes():
    check_embodiment(manifest(), ROBOT, JOINTS, ["front", "wrist"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"joint_state_names": ROBOT[:-1]}, "panda_joint1"),
        ({"limited_joints": JOINTS[:-1]}, "no limits"),
        ({"cameras": ["wrist"]}, "front"),
        ({"joint_state_names": (*ROBOT, "panda_joint1")}, "duplicate"),
    ],
)
def test_mismatches_are_refused(kwargs, match):
    args = {"joint_state_names": ROBOT, "limited_joints": JOINTS, "cameras": ["front"], **kwargs}
    with pytest.raises(ManifestError, match=match):
        check_embodiment(manifest(), **args)


@pytest.mark.parametrize("action_type", [ActionType.JOINT_DELTA, ActionType.EE_DELTA])
def test_non_absolute_actions_are_refused(action_type):
    with pytest.raises(ManifestError, match=action_type.value):
        check_embodiment(manifest(action_type), ROBOT, JOINTS, ["front"])


def test_state_index_reorders_and_refuses_nan():
    index = StateIndex(JOINTS)
    positions = [float(i) for i in range(len(ROBOT))]
    state = index(ROBOT, positions)
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, [float(ROBOT.index(j)) for j in JOINTS])
    with pytest.raises(ValueError, match="NaN"):
        index(ROBOT, [math.nan] * len(ROBOT))
    with pytest.raises(ValueError, match="lacks"):
        index(ROBOT[:-1], positions[:-1])
    with pytest.raises(ValueError, match="positions"):
        index(ROBOT, positions[:-1])


def fresh(**kw):
    args = {
        "started": True,
        "enabled": True,
        "instruction": "pick up the cube",
        "state_age_s": 0.01,
        "image_ages_s": {"front": 0.05},
        "config": CONFIG,
    }
    return hold_reason(**{**args, **kw})


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({}, HoldReason.NONE),
        ({"started": False}, HoldReason.STARTING),
        ({"enabled": False}, HoldReason.DISABLED),
        ({"instruction": "  "}, HoldReason.NO_INSTRUCTION),
        ({"state_age_s": None}, HoldReason.NO_STATE),
        ({"state_age_s": 1.0}, HoldReason.STALE_STATE),
        ({"state_age_s": -1.0}, HoldReason.STALE_STATE),  # stamped in the future: clocks disagree
        ({"image_ages_s": {"front": None}}, HoldReason.NO_IMAGE),
        ({"image_ages_s": {"front": 0.05, "wrist": 0.9}}, HoldReason.STALE_IMAGE),
    ],
)
def test_hold_reasons(kw, reason):
    assert fresh(**kw) is reason


@pytest.mark.parametrize(
    "kw",
    [
        {"backend": "native"},  # no checkpoint
        {"backend": "remote", "control_rate_hz": 0.5},
        {"backend": "remote", "heartbeat_rate_hz": 5.0},
        {"backend": "remote", "max_image_age_s": 0.0},
        {"backend": "remote", "cameras": ()},
        {"backend": "remote", "robot_profile": "", "urdf_path": ""},
        {"backend": "teleport"},
    ],
)
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        PolicyNodeConfig(**kw)


def test_camera_lists_must_pair():
    assert cameras_from_lists(["front"], ["/cam"])[0].topic == "/cam"
    with pytest.raises(ValueError, match="camera"):
        cameras_from_lists(["front", "wrist"], ["/cam"])


def test_control_timing_rate_jitter_and_latency():
    timing = ControlTiming(0.02)
    now = 100.0
    for i in range(200):
        now += 0.02 + (0.004 if i % 50 == 0 else 0.0)
        chunk_stamp = 100.0 + 0.1 * (i // 10)  # a new chunk every 10 ticks
        timing.tick(now, published=True, chunk_stamp=chunk_stamp)
    assert timing.achieved_rate_hz == pytest.approx(1 / (0.02 + 3 * 0.004 / 199), rel=1e-9)
    assert timing.jitter_p99_s() == pytest.approx(0.004, abs=1e-9)
    assert len(timing.latencies) == 20  # one sample per chunk: its first command
    timing.tick(now + 0.02, published=False, chunk_stamp=None)
    assert timing.published == 200 and timing.ticks == 201


def test_yaml_declares_exactly_the_node_parameters():
    from vla_policy.policy_node import PARAMETERS

    data = yaml.safe_load((Path(__file__).parent.parent / "config" / "policy_node.yaml").read_text())
    params = data["policy_node"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert type(value) is type(PARAMETERS[name][0]), name


def test_change_reporter_rate_limits_but_never_ends_on_a_stale_value():
    log = ChangeReporter(1.0, HoldReason.STARTING)
    assert not log.update(HoldReason.STARTING, 0.0)  # no change
    assert log.update(HoldReason.NO_STATE, 0.1)
    assert not log.update(HoldReason.STALE_IMAGE, 0.5)  # too soon after the last report...
    assert not log.update(HoldReason.STALE_IMAGE, 1.0)
    assert log.update(HoldReason.STALE_IMAGE, 1.1)  # ...but reported once the interval has passed
    assert not log.update(HoldReason.STALE_IMAGE, 5.0)  # reported already
    assert log.update(HoldReason.NONE, 5.0)
