"""observation.environment_state from a scene description and object poses (the recorder's side)."""

import json

import numpy as np
import pytest
from streams import ENV_NAMES, environment_at, object_positions, pose_array, scene_description
from vla_collector.environment import (
    EnvironmentStateError,
    environment_state,
    parse_scene,
    pose_positions,
)


def test_referents_are_looked_up_in_the_poses():
    description = parse_scene(json.dumps(scene_description()))
    positions = pose_positions(pose_array(5, object_positions(0.3)))
    sample = environment_state(description, positions)
    assert sample.names == ENV_NAMES and sample.values.dtype == np.float32
    np.testing.assert_allclose(sample.values, environment_at(0.3), atol=1e-7)
    # A fixed point (push's destination) is taken as it is.
    fixed = {**description, "referents": {**description["referents"], "goal": {"point": [0.1, 0.2, 0.3]}}}
    np.testing.assert_allclose(environment_state(fixed, positions).values[3:], [0.1, 0.2, 0.3], atol=1e-7)


def test_bad_descriptions_and_poses_are_refused_with_reasons():
    good = {"objects": ["red"], "referents": {"names": ["target.x"], "target": {"object": "red"}}}
    assert parse_scene(json.dumps(good)) == good
    cases = {
        "not JSON": "{",
        "objects": json.dumps({"referents": good["referents"]}),
        "no 'referents'": json.dumps({"objects": ["red"]}),  # a scene without them: no environment state
        "not <referent>": json.dumps({**good, "referents": {**good["referents"], "names": ["target.w"]}}),
        "unknown object": json.dumps({**good, "objects": ["blue"]}),
    }
    for reason, text in cases.items():
        with pytest.raises(EnvironmentStateError, match=reason):
            parse_scene(text)
    with pytest.raises(EnvironmentStateError, match="different episodes"):
        environment_state(good, [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)])
    with pytest.raises(EnvironmentStateError, match="not finite"):
        environment_state(good, [(float("nan"), 0.0, 0.0)])
    with pytest.raises(EnvironmentStateError, match="PoseArray"):
        pose_positions(b"\x00\x01\x00\x00\x01")


def test_the_recorder_computes_what_the_sim_and_its_env_compute_for_every_family():
    """The simulator's /sim/scene and /sim/object_poses give, through this package alone, exactly
    vla_sim.tasks.referent_positions (which the Gymnasium env and vla-dagger record)."""
    bridge = pytest.importorskip("vla_sim.bridge", reason="vla_sim is not available")
    from vla_sim.tasks import REFERENT_NAMES, TaskFamily, referent_positions

    runner = bridge.SimRunner(bridge.BridgeConfig(camera_width=32, camera_height=32))
    try:
        for seed, family in enumerate(TaskFamily):
            task = runner.reset(family.value, seed=seed)
            for _ in range(30):  # let the world move a little (the arm holds still; blocks settle)
                runner.step()
            description = parse_scene(json.dumps(runner.scene_description()))
            positions = [p for p, _ in runner.object_poses()]
            sample = environment_state(description, positions)
            assert sample.names == REFERENT_NAMES, family
            truth = referent_positions(task, runner.scene.world_state())
            np.testing.assert_allclose(sample.values, truth, atol=1e-6, err_msg=family.value)
    finally:
        runner.close()
