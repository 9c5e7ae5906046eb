import math
from pathlib import Path

import pytest
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_safety.limits import (
    JointLimits,
    LimitsError,
    available_profiles,
    check_armable,
    limited_joints,
    load_limits,
    load_profile,
    merge_limits,
    parse_profile,
    parse_urdf_limits,
    position_bounds,
)


@pytest.fixture
def panda_urdf() -> str:
    pybullet_data = pytest.importorskip("pybullet_data", reason="the Panda URDF ships with pybullet")
    return str(Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf")


def test_panda_urdf_limits_use_the_soft_limits_and_include_the_fingers(panda_urdf):
    table = parse_urdf_limits(Path(panda_urdf).read_text())
    assert table["panda_joint1"].min_position == -2.8973  # safety_controller soft limit, tighter than 2.9671
    assert table["panda_joint4"].max_position == -0.0698
    assert table["panda_joint5"].max_velocity == 2.61
    finger = table["panda_finger_joint1"]
    assert (finger.min_position, finger.max_position, finger.max_velocity) == (0.0, 0.04, 0.2)
    assert "panda_joint8" not in table  # fixed joint
    check_armable(table, list(PANDA_COMMAND_JOINTS))


def test_urdf_continuous_joint_is_unbounded_and_refused():
    urdf = """<robot name="r"><joint name="spin" type="continuous"><limit velocity="1.0" effort="1"/></joint>
    <joint name="zero_v" type="revolute"><limit lower="-1" upper="1" velocity="0"/></joint></robot>"""
    table = parse_urdf_limits(urdf)
    assert math.isinf(table["spin"].max_position)
    assert "zero_v" not in table  # velocity=0 means unspecified in URDF
    with pytest.raises(LimitsError, match="lack finite position"):
        check_armable(table, ["spin"])
    with pytest.raises(LimitsError, match="no limits for commanded joints"):
        check_armable(table, ["zero_v"])


def test_malformed_urdf_is_a_clear_error(tmp_path):
    with pytest.raises(LimitsError, match="not valid XML"):
        parse_urdf_limits("<robot>")
    with pytest.raises(LimitsError, match="not a number"):
        parse_urdf_limits(
            '<robot><joint name="a" type="revolute"><limit lower="x" upper="1" velocity="1"/></joint></robot>'
        )
    with pytest.raises(LimitsError, match="cannot read URDF"):
        load_limits(urdf_path=str(tmp_path / "missing.urdf"))


@pytest.mark.parametrize("profile", ["panda", "ur5e", "so101"])
def test_shipped_profiles_load_and_are_armable(profile):
    table = load_profile(profile)
    check_armable(table, list(table))
    assert profile in available_profiles()


def test_panda_profile_matches_libfranka_and_the_finger_convention():
    table = load_profile("panda")
    assert table["panda_joint2"].max_acceleration == 7.5
    assert table["panda_joint7"].max_jerk == 10000.0
    assert table["panda_finger_joint1"].max_position == 0.04


def test_position_bounds_are_the_enforced_range_in_the_given_order():
    table = {"a": JointLimits("a", -2.0, 1.0, max_velocity=1.0, position_margin=0.1),
             "b": JointLimits("b", 0.0, 0.04, max_velocity=0.2)}  # fmt: skip
    assert position_bounds(table, ["b", "a"]) == ([0.0, -1.9], [0.04, 0.9])
    with pytest.raises(LimitsError, match="c"):
        position_bounds(table, ["a", "c"])


def test_merge_takes_the_most_restrictive_of_each_limit():
    a = JointLimits("j", -2.0, 1.0, max_velocity=3.0, max_acceleration=5.0, position_margin=0.1)
    b = JointLimits("j", -1.0, 2.0, max_velocity=2.0, max_effort=4.0)
    m = merge_limits({"j": a}, {"j": b})["j"]
    assert (m.min_position, m.max_position, m.max_velocity) == (-1.0, 1.0, 2.0)
    assert (m.max_acceleration, m.max_effort, m.position_margin) == (5.0, 4.0, 0.1)
    assert (m.lower, m.upper) == (-0.9, 0.9)


def test_merge_of_disjoint_ranges_is_refused():
    with pytest.raises(LimitsError, match="do not overlap"):
        merge_limits({"j": JointLimits("j", 0.0, 1.0, 1.0)}, {"j": JointLimits("j", 2.0, 3.0, 1.0)})


def test_profile_and_urdf_merge(panda_urdf):
    table = load_limits("panda", panda_urdf)
    assert table["panda_joint1"].max_effort == 87.0
    assert table["panda_joint1"].max_acceleration == 15.0  # only the profile has it
    assert table["panda_joint1"].position_margin == 0.02


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_position": 1.0, "max_position": 1.0}, "below max_position"),
        ({"min_position": math.nan}, "must be a number"),
        ({"max_velocity": 0.0}, "max_velocity must be positive"),
        ({"max_velocity": -1.0}, "max_velocity must be positive"),
        ({"max_acceleration": math.inf}, "max_acceleration"),
        ({"max_acceleration": -1.0}, "max_acceleration"),
        ({"position_margin": 0.6}, "leaves no room"),
        ({"position_margin": -0.1}, "position_margin"),
    ],
)
def test_invalid_joint_limits_are_refused(kwargs, match):
    base = {"name": "j", "min_position": -0.5, "max_position": 0.5, "max_velocity": 1.0}
    with pytest.raises(LimitsError, match=match):
        JointLimits(**{**base, **kwargs})


def test_infinite_velocity_cannot_arm():
    table = {"j": JointLimits("j", -1.0, 1.0, max_velocity=math.inf)}
    with pytest.raises(LimitsError, match="lack finite"):
        check_armable(table, ["j"])


def test_arming_needs_joints_without_duplicates():
    table = {"j": JointLimits("j", -1.0, 1.0, 1.0)}
    with pytest.raises(LimitsError, match="no commanded joints"):
        check_armable(table, [])
    with pytest.raises(LimitsError, match="duplicates"):
        check_armable(table, ["j", "j"])


def test_profile_validation_names_the_problem():
    with pytest.raises(LimitsError, match="lacks max_velocity"):
        parse_profile({"joints": {"a": {"min_position": 0, "max_position": 1}}})
    with pytest.raises(LimitsError, match="unknown keys"):
        parse_profile(
            {"joints": {"a": {"min_position": 0, "max_position": 1, "max_velocity": 1, "speed": 2}}}
        )
    with pytest.raises(LimitsError, match="non-empty mapping"):
        parse_profile({"robot": "x"})
    with pytest.raises(LimitsError, match="non-numeric"):
        parse_profile({"joints": {"a": {"min_position": "low", "max_position": 1, "max_velocity": 1}}})


def test_unknown_profile_and_no_source_are_errors():
    with pytest.raises(LimitsError, match="no robot profile 'nope'"):
        load_limits("nope")
    with pytest.raises(LimitsError, match="no limit source"):
        load_limits()


def test_limited_joints_is_the_public_list_for_manifest_checks():
    joints = limited_joints("panda")
    assert set(PANDA_COMMAND_JOINTS) <= set(joints)
    assert "shoulder_pan_joint" in limited_joints("ur5e")


def test_profile_from_a_yaml_path(tmp_path):
    path = tmp_path / "bot.yaml"
    path.write_text("robot: bot\njoints:\n  a: {min_position: -1, max_position: 1, max_velocity: 0.5}\n")
    assert limited_joints(str(path)) == ("a",)
