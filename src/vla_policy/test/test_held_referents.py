"""Perceive once, hold, act: the held-referent model (``vla-train-held``), its policy and its export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_data import write_environment_dataset
from test_model import observation
from test_train import tiny_cfg
from vla_policy.data import DataError
from vla_policy.export import export_checkpoint
from vla_policy.held_referents import TRAINED, main, referent_questions, train_held
from vla_policy.models import load_checkpoint, load_policy
from vla_policy.models.config import ModelConfig
from vla_policy.train import TINY_MODEL, train

TASKS = ("stack the red block on the blue block", "push the red block to the left")


def test_config_refuses_held_referents_without_the_referent_pathway():
    base = dict(TINY_MODEL, kind="native_vla", camera_names=("front",), state_dim=8, action_dim=8)
    referent = dict(base, localization_dim=6, localization_weight=1.0, referent_input=True)
    with pytest.raises(ValueError, match="held_referents"):
        ModelConfig(**base, held_referents=True)
    with pytest.raises(ValueError, match="held_referents"):
        ModelConfig(**referent, locator_camera="front", held_referents=True)
    assert ModelConfig(**referent, referent_slots="goal", held_referents=True).held_referents


def test_the_questions_name_the_target_and_the_goal_as_pick_does():
    # Stack's base is where a pick question about it finds the named block: its answer's target half.
    assert referent_questions(TASKS[0]) == ("pick up the red block", "pick up the blue block", True, "stack")
    assert referent_questions(TASKS[1]) == ("pick up the red block", TASKS[1], False, "push")
    assert referent_questions("put the green block in the bowl")[:3] == (
        "pick up the green block",
        "put the green block in the bowl",
        False,
    )
    with pytest.raises(DataError, match="referents"):
        referent_questions("dance")


@pytest.fixture(scope="module")
def environment_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("env") / "env"
    return write_environment_dataset(root, episodes=8, frames=10, tasks=TASKS)


@pytest.fixture(scope="module")
def base_checkpoint(environment_root, tmp_path_factory):
    referent = dict(
        TINY_MODEL, horizon=4, localization_weight=1.0, referent_input=True, referent_slots="goal"
    )
    out = tmp_path_factory.mktemp("base")
    return train(tiny_cfg(environment_root, out, epochs=1, model_overrides=referent)).last


@pytest.fixture(scope="module")
def held(environment_root, base_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("held") / "held"
    figures = train_held(
        str(base_checkpoint), [str(environment_root)], str(out),
        epochs=40, batch_size=8, lr=3e-3, val_fraction=0.25, probe_episodes=2, progress=False,
    )  # fmt: skip
    return out, figures


def tiny_observation(task: str, environment_state=None) -> dict:
    obs = observation(task=task)
    obs.pop("observation.images.wrist")
    obs["observation.images.front"] = obs["observation.images.front"][:32, :32]
    if environment_state is not None:
        obs["observation.environment_state"] = np.asarray(environment_state, np.float32)
    return obs


def test_training_fits_questions_and_held_actor_and_keeps_the_rest(held, base_checkpoint):
    out, figures = held
    checkpoint = load_checkpoint(out)
    assert checkpoint.config.held_referents
    history = checkpoint.info["held_referents"]["history"]
    assert len(history) == 40 and history[-1]["train_l1"] < 0.5 * history[0]["train_l1"], history
    assert figures["question_cosine"] > 0.99 and figures["flags_right"] == 1.0
    (probe,) = figures["first_frame_error_cm"].values()
    assert 1 <= probe["episodes"] <= 2 and np.isfinite(probe["target_cm"]) and np.isfinite(probe["goal_cm"])
    # Everything but the new parts is the base checkpoint's, bit for bit.
    start, end = (
        load_file(str(base_checkpoint / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert all(k.startswith(TRAINED) for k in set(end) - set(start)) and set(start) <= set(end)
    assert all(torch.equal(start[k], end[k]) for k in start)


def test_policy_looks_once_per_instruction_and_the_mlp_keeps_the_others(held, base_checkpoint, monkeypatch):
    policy, base = load_policy(held[0]), load_policy(base_checkpoint)
    looks = []
    perceive = policy.network.perceive
    monkeypatch.setattr(policy.network, "perceive", lambda *a: looks.append(1) or perceive(*a))
    first = policy.infer(tiny_observation(TASKS[0])).actions
    assert len(looks) == 1 and policy.held_referents.shape == (6,)
    held_now = policy.held_referents
    moved = tiny_observation(TASKS[0])
    moved["observation.images.front"] = np.full((32, 32, 3), 200, np.uint8)
    np.testing.assert_array_equal(policy.infer(moved).actions, first)  # held: the images are not read again
    assert len(looks) == 1 and np.array_equal(policy.held_referents, held_now)
    # Push is the MLP's: the base checkpoint's actions, exactly, and nothing held.
    push = tiny_observation(TASKS[1])
    np.testing.assert_array_equal(policy.infer(push).actions, base.infer(push).actions)
    assert len(looks) == 2 and policy.held_referents is None
    policy.reset()
    np.testing.assert_allclose(policy.infer(tiny_observation(TASKS[0])).actions, first, atol=1e-6)
    assert len(looks) == 3


def test_truth_oracle_holds_the_first_frames_referents(held):
    policy = load_policy(held[0], referents="truth")
    a = policy.infer(tiny_observation(TASKS[0], [0.4, 0.1, 0.02, 0.6, -0.1, 0.02])).actions
    b = policy.infer(tiny_observation(TASKS[0], [0.6, -0.1, 0.02, 0.4, 0.1, 0.02])).actions
    np.testing.assert_array_equal(a, b)  # the second frame's truth is not read: the first is held
    policy.reset()
    c = policy.infer(tiny_observation(TASKS[0], [0.6, -0.1, 0.02, 0.4, 0.1, 0.02])).actions
    assert not np.allclose(a, c)


def test_onnx_runtime_acts_as_eager_on_both_pathways(held):
    report = export_checkpoint(held[0], repeats=1)
    assert report.actions_max_abs_diff < 1e-4
    eager, onnx = load_policy(held[0]), load_policy(held[0], runtime="onnx")
    for task in TASKS:
        obs = tiny_observation(task)
        np.testing.assert_allclose(onnx.infer(obs).actions, eager.infer(obs).actions, atol=1e-4)


def test_offline_errors_feed_the_held_actor_its_first_look(held, environment_root):
    from vla_policy.evaluate import offline_errors

    policy = load_policy(held[0])
    refs = [(0, 0), (0, 1), (0, 2)]
    result = offline_errors(policy, [str(environment_root)], refs, "held", progress=False)
    assert np.isfinite(result.mean)
    with pytest.raises(ValueError, match="ablate"):
        offline_errors(policy, [str(environment_root)], refs, "held", progress=False, ablate=True)


def test_cli_writes_a_checkpoint_and_refuses_bad_starts(
    environment_root, base_checkpoint, held, tmp_path, capsys
):
    rc = main([str(base_checkpoint), str(environment_root), "--output", str(tmp_path / "a"), "--epochs", "1",
               "--batch-size", "16", "--probe-episodes", "1", "--no-progress"])  # fmt: skip
    assert rc == 0 and "first frame, target" in capsys.readouterr().out
    plain = train(tiny_cfg(environment_root, tmp_path / "plain", epochs=1)).last
    rc = main([str(plain), str(environment_root), "--output", str(tmp_path / "b"), "--no-progress"])
    assert rc == 2 and "referent pathway" in capsys.readouterr().err
    rc = main([str(held[0]), str(environment_root), "--output", str(tmp_path / "c"), "--no-progress"])
    assert rc == 2 and "already" in capsys.readouterr().err
    rc = main([str(base_checkpoint), str(environment_root), "--output", str(tmp_path / "d"),
               "--held-families", "pick", "--no-progress"])  # fmt: skip
    assert rc == 2 and "no episode" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(base_checkpoint), str(environment_root), "--output", str(tmp_path / "e"), "--epochs", "0"])


def test_one_held_actor_reads_the_instruction_for_several_families(
    environment_root, base_checkpoint, tmp_path
):
    out = tmp_path / "both"
    figures = train_held(
        str(base_checkpoint), [str(environment_root)], str(out), held_families=("stack", "push"),
        instruction=True, epochs=2, batch_size=8, probe_episodes=0, progress=False,
    )  # fmt: skip
    assert figures["flags_right"] == 1.0
    policy = load_policy(out)
    assert policy.config.held_instruction
    for task in TASKS:  # both are the held pathway's now
        policy.infer(tiny_observation(task))
        assert policy.held_referents is not None
    # The actor reads the instruction: another sentence, the same held look, other actions.
    a = policy.network.head.held_actor
    state, referents = torch.zeros(1, 8), torch.tensor([[0.5, 0.1, 0.02, 0.6, -0.1, 0.02]])
    text = policy.network.head.project_instruction(policy._text(list(TASKS)).float())
    with torch.no_grad():
        assert not torch.allclose(a(state, referents, text[:1]), a(state, referents, text[1:]))


def test_the_look_is_tuned_on_first_frames_and_the_mlp_keeps_its_encoders(
    environment_root, base_checkpoint, tmp_path
):
    out = tmp_path / "look"
    figures = train_held(
        str(base_checkpoint), [str(environment_root)], str(out), epochs=1, batch_size=8,
        look_epochs=3, look_lr=3e-3, probe_episodes=1, progress=False,
    )  # fmt: skip
    info = load_checkpoint(out).info["held_referents"]
    history = info["look_history"]
    assert len(history) == 3 and history[-1]["train_l1"] < history[0]["train_l1"], history
    start, end = (
        load_file(str(base_checkpoint / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert all(torch.equal(start[k], end[k]) for k in start)  # the MLP's encoders and head: bit for bit
    tuned = {k[len("head.look_") :]: v for k, v in end.items() if k.startswith("head.look_")}
    assert tuned and any(not torch.equal(v, start["head." + k]) for k, v in tuned.items())
    # The held look reads the tuned copies: another look than the base encoders give.
    policy = load_policy(out)
    assert policy.config.held_look
    policy.infer(tiny_observation(TASKS[0]))
    tuned_look = policy.held_referents
    policy.network.head.look_encoders.load_state_dict(policy.network.head.encoders.state_dict())
    policy.network.head.look_localize.load_state_dict(policy.network.head.localize.state_dict())
    policy.reset()
    policy.infer(tiny_observation(TASKS[0]))
    assert not np.allclose(policy.held_referents, tuned_look)
    ((_, probe),) = figures["first_frame_error_cm"].items()
    assert np.isfinite(probe["goal_cm"])
