"""The goal locator: learned token queries, the locator's training (vla-train-locator), and the policy and
ONNX graph reading its goal in place of the localization head's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_data import write_environment_dataset
from test_model import observation
from test_train import tiny_cfg
from vla_policy.export import export_checkpoint
from vla_policy.locator import frame_indices, main, train_locator
from vla_policy.models import load_checkpoint, load_policy
from vla_policy.models.config import ModelConfig
from vla_policy.models.networks import TokenQueries
from vla_policy.train import TINY_MODEL, train


def test_token_queries_ignore_padding():
    torch.manual_seed(0)
    queries = TokenQueries(16, queries=2)
    tokens = torch.randn(1, 5, 16)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    other = tokens.clone()
    other[:, 3:] = torch.randn(1, 2, 16) * 10
    torch.testing.assert_close(queries(tokens, mask), queries(other, mask))
    assert queries(tokens, mask).shape == (1, 32)
    assert not torch.allclose(queries(tokens, torch.ones(1, 5)), queries(tokens, mask))


def test_frame_indices_are_spread_over_the_episode_and_start_at_the_first():
    assert frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert frame_indices(3, 6).tolist() == [0, 1, 2]


def test_config_refuses_a_locator_without_the_referent_pathway_or_its_camera():
    base = dict(TINY_MODEL, kind="native_vla", camera_names=("front",), state_dim=8, action_dim=8)
    referent = dict(base, localization_dim=6, localization_weight=1.0, referent_input=True)
    with pytest.raises(ValueError, match="referent"):
        ModelConfig(**base, locator_camera="front")
    with pytest.raises(ValueError, match="wrist"):
        ModelConfig(**referent, locator_camera="wrist")
    assert ModelConfig(**referent, locator_camera="front").locator_camera == "front"


@pytest.fixture(scope="module")
def environment_root(tmp_path_factory):
    return write_environment_dataset(tmp_path_factory.mktemp("env") / "env", episodes=6, frames=10)


@pytest.fixture(scope="module")
def base_checkpoint(environment_root, tmp_path_factory):
    referent = dict(
        TINY_MODEL, horizon=4, localization_weight=1.0, referent_input=True, referent_slots="goal"
    )
    out = tmp_path_factory.mktemp("base")
    return train(tiny_cfg(environment_root, out, epochs=1, model_overrides=referent)).last


def test_the_locator_learns_the_goal_and_leaves_the_policy_as_it_was(
    environment_root, base_checkpoint, tmp_path
):
    summary = train_locator(
        str(base_checkpoint), [str(environment_root)], str(tmp_path / "located"),
        epochs=8, frames_per_episode=5, batch_size=8, lr=3e-3, progress=False,
    )  # fmt: skip
    losses = summary["loss_per_epoch"]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0], losses
    assert summary["training_frames"] == 25  # 5 training episodes (one held out), 5 frames each
    checkpoint = load_checkpoint(tmp_path / "located")
    assert checkpoint.config.locator_camera == "front"
    assert checkpoint.info["goal_locator"]["validation_goal_error_cm"] == summary["validation_goal_error_cm"]
    # Everything but the locator is the base checkpoint's, bit for bit.
    start, end = (
        load_file(str(base_checkpoint / "model.safetensors")),
        load_file(str(tmp_path / "located" / "model.safetensors")),
    )
    assert set(end) - set(start) and all(k.startswith("head.locator.") for k in set(end) - set(start))
    assert all(torch.equal(start[k], end[k]) for k in start)
    # The policy's referent pathway reads the locator's goal: moving the locator's output moves the actions.
    policy = load_policy(tmp_path / "located")
    obs = observation(task="push the red block left")
    obs.pop("observation.images.wrist")
    obs["observation.images.front"] = np.full((32, 32, 3), 30, np.uint8)
    obs["observation.state"] = obs["observation.state"][:8]
    before = policy.infer(obs).actions
    policy.network.locator.goal_mean += 0.5
    assert not np.allclose(policy.infer(obs).actions, before)
    # Without the instruction's tokens the network refuses rather than fall back silently.
    images, text, state = policy.prepare(obs)
    with pytest.raises(ValueError, match="tokens"):
        policy.network(images, text, state)


def test_export_of_a_model_with_a_locator_feeds_it_the_tokens(environment_root, base_checkpoint, tmp_path):
    train_locator(str(base_checkpoint), [str(environment_root)], str(tmp_path), epochs=1, progress=False)
    report = export_checkpoint(tmp_path, repeats=1)
    assert report.actions_max_abs_diff < 1e-4
    eager, onnx = load_policy(tmp_path), load_policy(tmp_path, runtime="onnx")
    for task in ("push the red block left", "push the blue block to the right of the red one"):
        obs = observation(task=task)
        obs.pop("observation.images.wrist")
        obs["observation.images.front"] = obs["observation.images.front"][:32, :32]
        np.testing.assert_allclose(onnx.infer(obs).actions, eager.infer(obs).actions, atol=1e-4)


def test_cli_copies_a_locator_with_zero_epochs_and_refuses_bad_input(
    environment_root, base_checkpoint, tmp_path, capsys
):
    train_locator(
        str(base_checkpoint), [str(environment_root)], str(tmp_path / "a"), epochs=1, progress=False
    )
    rc = main([str(base_checkpoint), str(environment_root), "--output", str(tmp_path / "b"), "--epochs", "0",
               "--locator-from", str(tmp_path / "a"), "--no-progress"])  # fmt: skip
    assert rc == 0 and "validation goal error" in capsys.readouterr().out
    a, b = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((tmp_path / "b" / "config.json").read_text())["info"]["goal_locator"]
    assert info["locator_from"].endswith("a") and info["loss_per_epoch"] == []
    assert len(info["locator_from_training"]["loss_per_epoch"]) == 1  # how the copied locator was trained
    with pytest.raises(SystemExit):
        main([str(base_checkpoint), str(environment_root), "--output", str(tmp_path / "c"), "--epochs", "0"])
    rc = main(
        [str(base_checkpoint), str(environment_root), "--output", str(tmp_path / "d"), "--camera", "wrist"]
    )
    assert rc == 2 and "wrist" in capsys.readouterr().err


def test_offline_errors_and_ablation_feed_a_locator_model_its_tokens(
    environment_root, base_checkpoint, tmp_path
):
    from vla_policy.evaluate import offline_errors

    train_locator(str(base_checkpoint), [str(environment_root)], str(tmp_path), epochs=1, progress=False)
    policy = load_policy(tmp_path)
    refs = [(0, 0), (0, 1), (0, 2)]
    result = offline_errors(policy, [str(environment_root)], refs, "located", progress=False, ablate=True)
    assert np.isfinite(result.mean)
    # The instruction swap takes the donor's tokens with its embedding; the actions move.
    assert result.ablated["instruction"] != pytest.approx(result.mean, rel=1e-6)
