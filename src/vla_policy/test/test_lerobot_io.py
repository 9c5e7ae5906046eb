"""The LeRobot backend's pure half, in the main venv (no torch, no LeRobot): features checked against the
manifest, observations mapped to a LeRobot batch, chunks checked and mapped back; the loader's refusals that
come before LeRobot is imported; vla-serve's hand-over to the LeRobot venv; the node refusing backend:=lerobot."""

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest, ManifestError
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_policy.backends import BackendKind
from vla_policy.backends.lerobot_io import (
    Feature,
    LeRobotFeatureError,
    LeRobotPolicy,
    features_from_config,
    plan_io,
)

JOINTS = tuple(PANDA_COMMAND_JOINTS)


def manifest(units=None, cameras=(("front", 96, 96), ("wrist", 96, 96)), fps=10.0):
    return EmbodimentManifest(
        robot_type="panda",
        joint_names=JOINTS,
        action_names=JOINTS,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=fps,
        cameras=tuple(CameraSpec(n, h, w) for n, h, w in cameras),
        joint_units=units or tuple("m" if "finger" in j else "rad" for j in JOINTS),
        normalization={"action": {"mean": [0.0] * 8, "std": [1.0] * 8}},
    )


def act_inputs(state=8, cameras=("front", "wrist"), size=(96, 96)):
    features = [Feature(f"observation.images.{c}", "VISUAL", (3, *size)) for c in cameras]
    if state:
        features.append(Feature("observation.state", "STATE", (state,)))
    return features


ACTION = [Feature("action", "ACTION", (8,))]


def observation(stamp=42.5, size=96):
    rng = np.random.default_rng(0)
    return {
        "observation.images.front": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation.state": np.linspace(-1, 1, 8),
        "task": "pick up the red block",
        "timestamp": stamp,
    }


# --- features against the manifest ------------------------------------------------------------------------


def test_features_from_config_json_and_policy_feature_objects():
    config = {
        "observation.state": {"type": "STATE", "shape": [8]},
        "observation.images.front": {"type": "VISUAL", "shape": [3, 96, 96]},
    }
    assert features_from_config(config) == (
        Feature("observation.state", "STATE", (8,)),
        Feature("observation.images.front", "VISUAL", (3, 96, 96)),
    )

    class Kind(str):  # LeRobot's FeatureType is a str enum with .value
        value = "ACTION"

    class PolicyFeature:
        type = Kind("ACTION")
        shape = (8,)

    assert features_from_config({"action": PolicyFeature()}) == (Feature("action", "ACTION", (8,)),)


def test_a_fitting_policy_is_served_with_the_manifest_it_reads():
    io = plan_io(manifest(), act_inputs(cameras=("front",)), ACTION, actions_per_chunk=5)
    assert io.manifest.joint_names == JOINTS and io.manifest.fps == 10.0
    # Only the cameras the policy reads: the node needs no more.
    assert [c.name for c in io.manifest.cameras] == ["front"]
    assert io.manifest.normalization == {}  # LeRobot's statistics live in its processor files
    assert io.state_key == "observation.state"
    assert io.cameras == (("front", "observation.images.front", 96, 96),)


@pytest.mark.parametrize(
    "inputs, outputs, named",
    [
        (act_inputs(state=7), ACTION, "observation.state has shape [7], the manifest has 8 joints"),
        (act_inputs(), [Feature("action", "ACTION", (7,))], "action has shape [7], the manifest has 8 action names"),
        (act_inputs(cameras=("front", "top")), ACTION, "image input 'observation.images.top' is not a camera"),
        ([*act_inputs(), Feature("observation.environment_state", "ENV", (6,))], ACTION,
         "'observation.environment_state' (ENV) has no source on the robot"),
        ([*act_inputs(), Feature("observation.gripper", "STATE", (2,))], ACTION,
         "state input 'observation.gripper' has no source"),
        ([Feature("observation.images.front", "VISUAL", (1, 96, 96))], ACTION,
         "observation.images.front has shape [1, 96, 96], not [3, H, W]"),
        (act_inputs(), [Feature("action.ee", "ACTION", (7,))], "must output one 'action' feature"),
        ([Feature("observation.state", "STATE", (8,))], ACTION, "reads no camera of the manifest"),
    ],
    ids=["state_dims", "action_dims", "unknown_camera", "environment_state", "extra_state", "gray_image",
         "action_key", "no_camera"],
)  # fmt: skip
def test_a_policy_that_does_not_fit_is_refused_naming_the_mismatch(inputs, outputs, named):
    with pytest.raises(LeRobotFeatureError, match="does not fit the embodiment manifest") as info:
        plan_io(manifest(), inputs, outputs)
    assert named in str(info.value)
    # vla-serve reports it and exits 2, as for any manifest error.
    assert isinstance(info.value, ManifestError)


def test_a_policy_reading_several_observations_is_refused():
    """Diffusion Policy's default n_obs_steps=2: consecutive frames at the manifest's rate, which the node,
    sending one observation per chunk it asks for, never gives."""
    with pytest.raises(
        LeRobotFeatureError, match=r"n_obs_steps=2 consecutive observations, 0\.1 s apart"
    ) as info:
        plan_io(manifest(), act_inputs(), ACTION, n_obs_steps=2)
    assert "train it with --policy.n_obs_steps=1" in str(info.value)


def test_units_without_an_si_conversion_are_refused():
    units = ("rad",) * 7 + ("range_m100_100",)
    with pytest.raises(LeRobotFeatureError, match="panda_finger_joint1 is in 'range_m100_100'"):
        plan_io(manifest(units=units), act_inputs(), ACTION)


def test_the_preprocessors_renaming_is_followed():
    inputs = [
        Feature("observation.images.top", "VISUAL", (3, 96, 96)),
        Feature("observation.state", "STATE", (8,)),
    ]
    io = plan_io(
        manifest(), inputs, ACTION, rename_map={"observation.images.front": "observation.images.top"}
    )
    assert io.cameras == (("front", "observation.images.top", 96, 96),)
    batch = io.inputs(observation())
    assert set(batch) == {"observation.images.top", "observation.state", "task", "robot_type"}


# --- observations in, chunks out ---------------------------------------------------------------------------


def test_observation_becomes_lerobots_batch():
    io = plan_io(manifest(), act_inputs(), ACTION)
    obs = observation()
    batch = io.inputs(obs)
    front = batch["observation.images.front"]
    assert front.shape == (1, 3, 96, 96) and front.dtype == np.float32
    np.testing.assert_allclose(
        front[0].transpose(1, 2, 0) * 255.0, obs["observation.images.front"], atol=1e-3
    )
    assert batch["observation.state"].shape == (1, 8) and batch["observation.state"].dtype == np.float32
    np.testing.assert_allclose(batch["observation.state"][0], obs["observation.state"], atol=1e-6)
    assert batch["task"] == "pick up the red block" and batch["robot_type"] == "panda"


def test_frames_of_another_size_are_resized_to_the_policys():
    io = plan_io(manifest(), act_inputs(), ACTION)
    batch = io.inputs({**observation(), "observation.images.wrist": np.full((480, 640, 3), 200, np.uint8)})
    assert batch["observation.images.wrist"].shape == (1, 3, 96, 96)
    np.testing.assert_allclose(batch["observation.images.wrist"], 200 / 255, atol=1e-6)


def test_bad_observations_are_refused():
    io = plan_io(manifest(), act_inputs(), ACTION)
    obs = observation()
    with pytest.raises(ValueError, match="no image from camera 'wrist'"):
        io.inputs({k: v for k, v in obs.items() if k != "observation.images.wrist"})
    with pytest.raises(ValueError, match="7 values, the manifest names 8 joints"):
        io.inputs({**obs, "observation.state": np.zeros(7)})
    with pytest.raises(ValueError, match="NaN"):
        io.inputs({**obs, "observation.state": np.full(8, math.nan)})


def test_degrees_are_converted_both_ways():
    units = ("deg",) * 7 + ("mm",)
    io = plan_io(manifest(units=units), act_inputs(), ACTION)
    assert io.manifest.joint_units == ("rad",) * 7 + ("m",)  # the node speaks SI
    obs = {**observation(), "observation.state": np.array([math.pi / 2] * 7 + [0.04])}
    np.testing.assert_allclose(io.inputs(obs)["observation.state"][0], [90.0] * 7 + [40.0], rtol=1e-6)
    chunk = io.chunk(np.array([[[180.0] * 7 + [20.0]]]), stamp=1.0)
    np.testing.assert_allclose(chunk.actions[0], [math.pi] * 7 + [0.02])


def test_chunk_carries_the_observation_stamp_and_the_manifest_rate():
    io = plan_io(manifest(fps=15.0), act_inputs(), ACTION, actions_per_chunk=4)
    chunk = io.chunk(np.zeros((1, 20, 8)), stamp=42.5)
    assert chunk.stamp == 42.5 and chunk.dt == pytest.approx(1 / 15)
    assert chunk.horizon == 4 and chunk.names == JOINTS


@pytest.mark.parametrize(
    "actions, named",
    [
        (np.full((1, 10, 8), math.nan), "answered NaN or inf (80 values"),
        (np.concatenate([np.zeros((1, 9, 8)), np.full((1, 1, 8), math.inf)], axis=1), "steps 9..9"),
        (np.zeros((1, 10, 7)), "actions of size 7, the manifest has 8 action names"),
        (np.zeros((1, 10, 9)), "actions of size 9"),
        (np.zeros((2, 10, 8)), "not [H, D]"),
    ],
    ids=["nan", "inf", "too_few", "too_many", "batch_of_two"],
)
def test_bad_policy_output_is_refused(actions, named):
    io = plan_io(manifest(), act_inputs(), ACTION)
    with pytest.raises(ValueError, match=r"refused|not \[H, D\]") as info:
        io.chunk(actions, stamp=1.0)
    assert named in str(info.value)


def test_policy_wrapper_runs_lerobot_and_resets_it():
    io = plan_io(manifest(), act_inputs(), ACTION)
    seen, resets = [], []

    def run(batch):
        seen.append(batch)
        return np.tile(batch["observation.state"].astype(np.float64), (1, 10, 1)) + 0.5

    policy = LeRobotPolicy(io, run, lambda: resets.append(1))
    chunk = policy.infer(observation(stamp=7.25))
    assert chunk.stamp == 7.25 and chunk.horizon == 10
    np.testing.assert_allclose(chunk.actions[3], np.linspace(-1, 1, 8) + 0.5, atol=1e-6)
    policy.reset()
    assert resets == [1] and set(seen[0]) >= {"observation.images.front", "task"}
    broken = LeRobotPolicy(io, lambda _batch: np.full((1, 10, 8), math.nan), lambda: None)
    with pytest.raises(ValueError, match="NaN"):
        broken.infer(observation())


def test_an_observation_without_a_timestamp_is_refused():
    """Not stamped with the server's clock: under sim time (or another machine's clock) that time is wrong."""
    policy = LeRobotPolicy(
        plan_io(manifest(), act_inputs(), ACTION), lambda _b: np.zeros((1, 10, 8)), lambda: None
    )
    obs = observation()
    for missing in ({k: v for k, v in obs.items() if k != "timestamp"}, {**obs, "timestamp": math.nan}):
        with pytest.raises(ValueError, match="the observation has no timestamp"):
            policy.infer(missing)
    assert policy.infer({**obs, "timestamp": 0.0}).stamp == 0.0  # sim time starts at 0


# --- the loader's refusals before LeRobot is imported ------------------------------------------------------


def lerobot_dir(tmp_path, action_dim=8, with_processors=True, with_manifest=True, kind="act", n_obs_steps=1):
    model = tmp_path / "pretrained_model"
    model.mkdir(parents=True)
    config = {
        "type": kind,
        "n_obs_steps": n_obs_steps,
        "input_features": {f.key: {"type": f.type, "shape": list(f.shape)} for f in act_inputs()},
        "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}},
    }
    (model / "config.json").write_text(json.dumps(config))
    if with_processors:
        for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
            (model / name).write_text("{}")
    if with_manifest:
        manifest().save(model / "embodiment.json")
    return model


def test_loader_refuses_what_is_not_a_fitting_lerobot_policy(tmp_path):
    from vla_policy.backends.lerobot import load_lerobot

    with pytest.raises(ValueError, match=r"not a LeRobot pretrained directory: no config\.json"):
        load_lerobot(str(tmp_path))
    with pytest.raises(ValueError, match=r"policy_preprocessor\.json"):
        load_lerobot(str(lerobot_dir(tmp_path / "a", with_processors=False)))
    with pytest.raises(ManifestError, match="pass --manifest"):
        load_lerobot(str(lerobot_dir(tmp_path / "b", with_manifest=False)))
    with pytest.raises(LeRobotFeatureError, match="action has shape \\[7\\]"):
        load_lerobot(str(lerobot_dir(tmp_path / "c", action_dim=7)))
    with pytest.raises(LeRobotFeatureError, match="n_obs_steps=2"):
        load_lerobot(str(lerobot_dir(tmp_path / "d", kind="diffusion", n_obs_steps=2)))


def test_manifest_is_found_beside_the_policy_or_in_the_dataset_it_was_trained_on(tmp_path):
    from vla_policy.backends.lerobot import find_manifest

    model = lerobot_dir(tmp_path, with_manifest=False)
    dataset = tmp_path / "dataset"
    (dataset / "meta").mkdir(parents=True)
    manifest(fps=15.0).save(dataset / "meta" / "embodiment.json")
    (model / "train_config.json").write_text(
        json.dumps({"dataset": {"repo_id": "local/x", "root": str(dataset)}})
    )
    found, source = find_manifest(model)
    assert found.fps == 15.0 and source == dataset / "meta" / "embodiment.json"
    manifest(fps=20.0).save(model / "embodiment.json")
    assert find_manifest(model)[0].fps == 20.0  # beside the policy wins
    assert find_manifest(model, dataset)[0].fps == 15.0  # --manifest wins over both


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("lerobot") is not None, reason="LeRobot is installed here"
)
def test_loader_without_lerobot_says_how_to_get_it(tmp_path):
    from vla_policy.backends.lerobot import load_lerobot

    with pytest.raises(RuntimeError, match=r"setup-lerobot\.sh"):
        load_lerobot(str(lerobot_dir(tmp_path)))


# --- vla-serve hands itself over to the LeRobot venv --------------------------------------------------------


def serve(args, env):
    return subprocess.run(
        [sys.executable, "-m", "vla_policy.serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("lerobot") is not None, reason="LeRobot is installed here"
)
def test_vla_serve_without_a_lerobot_venv_says_how_to_make_one(tmp_path):
    env = {**os.environ, "VLA_SERVE_TOKEN": "t", "VLA_LEROBOT_VENV": str(tmp_path / "none")}
    result = serve(["--backend", "lerobot", "--model", str(lerobot_dir(tmp_path))], env)
    assert result.returncode == 2, result.stderr
    assert "run scripts/setup-lerobot.sh" in result.stderr and "VLA_LEROBOT_VENV" in result.stderr


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("lerobot") is not None, reason="LeRobot is installed here"
)
def test_vla_serve_hands_over_to_the_lerobot_venv_with_a_clean_environment(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "record.json"
    fake = venv / "bin" / "python"  # stands in for the LeRobot venv's Python: records how it was started
    base = Path(sys.base_prefix) / "bin" / "python3"  # outside any venv: no ROS wheels bootstrap re-exec
    fake.write_text(
        f"#!{base}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ, "VLA_SERVE_TOKEN": "t", "VLA_LEROBOT_VENV": str(venv),
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), "/somewhere/site-packages"])),
        "LD_LIBRARY_PATH": "/ros/libs",
    }  # fmt: skip
    args = ["--backend", "lerobot", "--model", "/models/act", "--port", "0", "--child"]
    args += ["--actions-per-chunk", "5"]
    result = serve(args, env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == ["-m", "vla_policy.serve", *args]
    assert seen["env"]["VLA_SERVE_TOKEN"] == "t"
    assert "PYTHONPATH" not in seen["env"] and "LD_LIBRARY_PATH" not in seen["env"]


def bare_assert():
    """A function raising AssertionError with no message, as a model's ``assert`` does outside pytest's
    rewriting (compiled here, so pytest does not rewrite it)."""
    namespace = {}
    source = "def check(*_):\n    n_obs_steps = 8\n    assert n_obs_steps == 2\n"
    exec(compile(source, "modeling_x.py", "exec"), namespace)
    return namespace["check"]


def test_an_error_without_a_message_is_named_by_the_line_that_raised():
    from vla_policy.serve import describe_error

    try:
        bare_assert()()
    except AssertionError as e:
        assert describe_error(e) == "AssertionError at modeling_x.py:3: ?"  # no source for the line here
    assert describe_error(ValueError("bad")) == "ValueError: bad"


def test_a_model_assertion_at_warm_up_is_a_refusal_not_a_traceback(monkeypatch, tmp_path, caplog):
    """As LeRobot's Diffusion Policy asserted on a batch it did not expect: vla-serve exits 2 naming it."""
    import vla_policy.backends as backends
    from vla_policy.serve import main

    monkeypatch.setenv("VLA_SERVE_TOKEN", "t")
    monkeypatch.setattr(backends, "load_local_backend", lambda *_a, **_k: object())
    monkeypatch.setattr(backends, "warm_up", bare_assert())
    assert main(["--backend", "native", "--model", str(tmp_path)]) == 2
    assert "the policy failed its warm-up inference: AssertionError at modeling_x.py:3" in caplog.text


def test_a_model_assertion_at_inference_is_an_error_answer_naming_it():
    from vla_policy.backends.wire import MessageType, encode, observation_message
    from vla_policy.serve import PolicyServer

    class Asserting:
        manifest = manifest()

        def infer(self, observation):
            bare_assert()()

        def reset(self):
            pass

    answer = PolicyServer(Asserting(), manifest(), "t")._answer(encode(observation_message(observation(), 7)))
    assert answer.type is MessageType.ERROR and answer.id == 7
    assert answer.fields["message"] == "AssertionError at modeling_x.py:3: ?"


def test_lerobot_only_options_are_refused_for_other_backends(tmp_path):
    env = {**os.environ, "VLA_SERVE_TOKEN": "t"}
    result = serve(["--backend", "native", "--model", str(tmp_path), "--manifest", str(tmp_path)], env)
    assert (
        result.returncode == 2
        and "--manifest and --actions-per-chunk are for --backend lerobot" in result.stderr
    )


def test_policy_node_refuses_backend_lerobot_and_says_what_to_run():
    from vla_policy.node_core import PolicyNodeConfig

    with pytest.raises(ValueError, match=r"vla-serve --backend lerobot .* backend:=remote"):
        PolicyNodeConfig(backend=BackendKind.LEROBOT, checkpoint="/models/act")


def test_setup_script_names_python_when_none_fits(tmp_path):
    script = Path(__file__).resolve().parents[3] / "scripts" / "setup-lerobot.sh"
    env = {**os.environ, "PYTHON": sys.executable, "VLA_LEROBOT_VENV": str(tmp_path / "venv")}
    if sys.version_info >= (3, 12):
        pytest.skip("this Python is 3.12+: the script would accept it")
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert f"PYTHON={sys.executable}" in result.stderr and "needs Python >= 3.12" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_setup_script_names_python_when_it_finds_no_312(tmp_path):
    script = Path(__file__).resolve().parents[3] / "scripts" / "setup-lerobot.sh"
    path = "/usr/bin:/bin"
    probe = subprocess.run(
        ["bash", "-c", "for p in python3.12 python3.13 python3; do command -v $p && $p -c 'import sys; "
         "sys.exit(sys.version_info < (3, 12))' && exit 0; done; exit 1"],
        env={"PATH": path}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode == 0:
        pytest.skip(f"{probe.stdout.strip()} on {path} is 3.12+")
    env = {"PATH": path, "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv")}
    env["VLA_LEROBOT_VENV"] = str(tmp_path / "venv")
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "no Python >= 3.12 found" in result.stderr and "PYTHON=/path/to/python3.12" in result.stderr


def test_setup_script_refuses_a_python_without_ensurepip_naming_the_package(tmp_path):
    """Debian/Ubuntu's python3.12 without python3.12-venv: venv would leave a Python with no pip."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "setup-lerobot.sh"
    fake = tmp_path / "python3.12"  # a 3.12 as the script probes it, whose ensurepip is missing
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *ensurepip*) echo \"ModuleNotFoundError: No module named 'ensurepip'\" >&2; exit 1 ;;\n"
        "  *'version_info[:2]'*) exit 0 ;;\n"
        "  *'version_info[0]'*) echo 3.12; exit 0 ;;\n"
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PYTHON": str(fake), "VLA_LEROBOT_VENV": str(tmp_path / "venv")}
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "no ensurepip module" in result.stderr and "apt install python3.12-venv" in result.stderr
    assert not (tmp_path / "venv").exists()
