"""The sim_node core without ROS: command validation, trajectories, the publication schedule, episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vla_common.robots import PANDA_COMMAND_JOINTS, PANDA_STATE_JOINTS
from vla_sim.bridge import (
    BridgeConfig,
    CommandStatus,
    EpisodeStatus,
    SimRunner,
    array_command,
    joint_state_command,
    parse_scene_message,
    trajectory_command,
    world_from_scene_message,
)
from vla_sim.experts import DriverStatus, ExpertDriver
from vla_sim.tasks import REFERENT_NAMES, referent_positions

from vla_sim import robot

HOME = robot.HOME_POSITIONS.copy()


def test_joint_state_command_by_name_and_subset():
    result = joint_state_command(["panda_joint2", "panda_finger_joint1"], [0.1, 0.01], HOME)
    assert result.accepted
    expected = HOME.copy()
    expected[1], expected[7] = 0.1, 0.01
    np.testing.assert_allclose(result.target, expected)
    mirrored = joint_state_command(["panda_finger_joint2"], [0.02], HOME)
    assert mirrored.accepted and mirrored.target[7] == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("names", "positions", "status"),
    [
        ([], [], CommandStatus.EMPTY),
        (["panda_joint1", "elbow"], [0.0, 0.0], CommandStatus.UNKNOWN_JOINT),
        (["panda_joint1"], [0.0, 1.0], CommandStatus.LENGTH_MISMATCH),
        (["panda_joint1", "panda_joint1"], [0.0, 1.0], CommandStatus.DUPLICATE_JOINT),
        (["panda_joint1"], [float("nan")], CommandStatus.NOT_FINITE),
        (["panda_joint1"], [float("inf")], CommandStatus.NOT_FINITE),
    ],
)
def test_bad_joint_state_commands_are_rejected(names, positions, status):
    result = joint_state_command(names, positions, HOME)
    assert result.status is status and result.target is None and result.detail


def test_array_command_uses_the_joint_order_and_clips():
    order = list(reversed(PANDA_COMMAND_JOINTS))
    values = [0.03, 0, 0, 0, -9.0, 0, 0, 0.5]
    result = array_command(values, order, HOME)
    assert result.accepted
    assert result.target[0] == pytest.approx(0.5)
    assert result.target[3] == pytest.approx(robot.LOWER_LIMITS[3])  # -9 clipped into the limit
    assert result.target[7] == pytest.approx(0.03)
    assert array_command([0.0] * 7, PANDA_COMMAND_JOINTS, HOME).status is CommandStatus.LENGTH_MISMATCH


def test_trajectory_interpolates_and_holds_the_last_point():
    names = ["panda_joint1"]
    result, trajectory = trajectory_command(names, [(1.0, [0.5]), (2.0, [1.0])], 10.0, HOME)
    assert result.accepted and trajectory is not None
    assert trajectory.sample(9.0)[0] == pytest.approx(HOME[0])
    assert trajectory.sample(10.5)[0] == pytest.approx(0.25)
    assert trajectory.sample(11.5)[0] == pytest.approx(0.75)
    assert trajectory.sample(50.0)[0] == pytest.approx(1.0)
    assert trajectory.sample(11.5)[1] == pytest.approx(HOME[1])  # untouched joints hold
    bad_time, _ = trajectory_command(names, [(1.0, [0.5]), (1.0, [1.0])], 0.0, HOME)
    assert bad_time.status is CommandStatus.BAD_TIMING
    bad_joint, _ = trajectory_command(["wrist"], [(1.0, [0.5])], 0.0, HOME)
    assert bad_joint.status is CommandStatus.UNKNOWN_JOINT
    empty, _ = trajectory_command(names, [], 0.0, HOME)
    assert empty.status is CommandStatus.EMPTY


def test_config_validation():
    with pytest.raises(ValueError):
        BridgeConfig(mode="fast")
    with pytest.raises(ValueError):
        BridgeConfig(joint_state_rate=0.0)
    with pytest.raises(ValueError):
        BridgeConfig(camera_rate=1000.0)
    with pytest.raises(ValueError):
        BridgeConfig(control_hz=7.0)  # 240 / 7 is no whole number of physics steps


@pytest.fixture(scope="module")
def runner():
    sim = SimRunner(BridgeConfig(camera_width=32, camera_height=32))
    yield sim
    sim.close()


def test_schedule_rates_over_one_simulated_second(runner):
    runner.reset("pick", seed=0)
    counts = {"joint_state": 0, "camera": 0, "object_poses": 0, "control": 0}
    for _ in range(240):
        due = runner.step()
        for key in counts:
            counts[key] += getattr(due, key)
    assert counts == {"joint_state": 100, "camera": 15, "object_poses": 30, "control": 10}


def test_runner_commands_and_rejections(runner):
    runner.reset("push", seed=1)
    before = runner.accepted, runner.rejected
    runner.command(joint_state_command(["bogus"], [0.0], runner.current_target()))
    runner.command(joint_state_command(["panda_joint1"], [0.3], runner.current_target()))
    assert (runner.accepted, runner.rejected) == (before[0] + 1, before[1] + 1)
    for _ in range(240):
        runner.step()
    assert runner.scene.joint_positions()[0] == pytest.approx(0.3, abs=0.01)
    assert runner.status is EpisodeStatus.RUNNING


def test_reset_is_seeded_and_the_clock_never_goes_back(runner):
    task_a = runner.reset("", seed=42)
    layout_a = runner.scene.layout
    clock = runner.sim_clock
    runner.step()
    task_b = runner.reset("", seed=42)
    assert task_a == task_b and runner.scene.layout == layout_a
    assert runner.sim_clock > clock


def test_scene_message_round_trip_drives_the_expert(runner):
    runner.reset("put the red block in the zone", seed=3)
    description = parse_scene_message(json.dumps(runner.scene_description()))
    world = world_from_scene_message(description, runner.object_poses())
    truth = runner.scene.world_state()
    for colour, block in truth.blocks.items():
        np.testing.assert_allclose(world.blocks[colour].position, block.position)
        np.testing.assert_allclose(world.blocks[colour].initial_position, block.initial_position)
    assert world.targets == truth.targets
    # The referents the message names resolve, from the poses alone, to the env's environment state.
    refs = description["referents"]
    assert refs["names"] == list(REFERENT_NAMES)
    assert refs["target"] == {"object": "red"} and refs["goal"] == {"object": "zone"}
    positions = dict(zip(description["objects"], (p for p, _ in runner.object_poses()), strict=True))
    resolved = [positions[refs[r]["object"]] for r in ("target", "goal")]
    np.testing.assert_allclose(np.concatenate(resolved), referent_positions(runner.task, truth), atol=1e-6)
    np.testing.assert_allclose(
        referent_positions(runner.task, world), referent_positions(runner.task, truth), atol=1e-6
    )
    with pytest.raises(ValueError, match="different episodes"):
        world_from_scene_message(description, runner.object_poses()[:-1])

    driver = ExpertDriver()
    try:
        assert driver.decide(0.0)[0] is DriverStatus.NO_TASK
        assert driver.set_instruction("dance a jig") is DriverStatus.BAD_TASK
        assert driver.set_instruction("") is DriverStatus.IDLE
        driver.set_instruction(runner.task.instruction)
        assert driver.decide(0.0)[0] is DriverStatus.NO_SCENE
        driver.set_scene(description)
        assert driver.decide(0.0)[0] is DriverStatus.NO_STATE
        driver.update_joints(list(PANDA_STATE_JOINTS), runner.scene.joint_positions(), 0.0)
        driver.update_poses(runner.object_poses(), 0.0)
        assert driver.decide(5.0)[0] is DriverStatus.STALE
        for step in range(200):
            now = float(step)
            driver.update_joints(list(PANDA_STATE_JOINTS), runner.scene.joint_positions(), now)
            driver.update_poses(runner.object_poses(), now)
            status, target = driver.decide(now)
            assert status is DriverStatus.ACTING
            runner.command(joint_state_command(list(PANDA_COMMAND_JOINTS), target, runner.current_target()))
            for _ in range(24):
                runner.step()
            if runner.success:
                break
        assert runner.success
    finally:
        driver.close()
