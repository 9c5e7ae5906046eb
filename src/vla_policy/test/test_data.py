"""Datasets -> training samples: episode split, statistics, chunks, shared preprocessing, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_collector.lerobot_v3 import LeRobotV3Dataset
from vla_collector.manifest import CameraSpec
from vla_perception.preprocess import preprocess
from vla_policy.data import (
    DataError,
    action_chunks,
    build_samples,
    chunk_targets,
    chunk_valid,
    color_jitter,
    compute_normalizer,
    config_for_dataset,
    estimate_cache_bytes,
    manifest_with_stats,
    open_datasets,
    split_episodes,
)
from vla_policy.models import PolicyKind, VLANetwork
from vla_policy.models.checkpoint import Checkpoint
from vla_policy.models.policy import NativePolicy
from vla_policy.synthetic import write_synthetic_dataset
from vla_policy.train import TINY_MODEL

FIXTURE = "/work/shared/fixtures/lerobot_v3_reference"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "syn", episodes=5, frames=10)


def test_split_is_by_episode_seeded_and_complete(dataset_root):
    datasets, _ = open_datasets([dataset_root, dataset_root])
    train, val = split_episodes(datasets, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8
    assert not set(train) & set(val)
    assert sorted(train + val) == [(d, e) for d in range(2) for e in range(5)]
    assert split_episodes(datasets, 0.2, seed=1) == (train, val)
    assert split_episodes(datasets, 0.2, seed=2) != (train, val)
    assert split_episodes(datasets, 0.0, seed=1)[1] == []


def test_action_chunks_repeat_the_last_action_past_the_end():
    actions = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    chunks = action_chunks(actions, 3)
    assert chunks.shape == (5, 3, 2)
    np.testing.assert_array_equal(chunks[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(chunks[4, :, 0], [4, 4, 4])


def test_normalizer_uses_training_episodes_only(dataset_root):
    datasets, _ = open_datasets([dataset_root])
    norm = compute_normalizer(datasets, [(0, 0)])
    ep = datasets[0].episode(0)
    np.testing.assert_allclose(norm.action.mean, ep.action.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.state.max, ep.state.max(0), rtol=1e-6)
    other = compute_normalizer(datasets, [(0, 1)])
    assert not np.allclose(other.action.mean, norm.action.mean)


def test_relative_targets_are_the_chunk_minus_the_current_state(dataset_root):
    datasets, manifest = open_datasets([dataset_root])
    ep = datasets[0].episode(0)
    rel = chunk_targets(ep.action, ep.state, 3, relative=True)
    np.testing.assert_allclose(rel + ep.state[:, None], action_chunks(ep.action, 3), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        chunk_targets(ep.action, ep.state, 3, relative=False), action_chunks(ep.action, 3)
    )
    # The statistics are those of the motions over every existing chunk step, and the samples use them.
    cfg = config_for_dataset(
        manifest,
        datasets[0].camera_names,
        PolicyKind.NATIVE_VLA,
        **TINY_MODEL,
        horizon=3,
        relative_actions=True,
    )
    norm = compute_normalizer(datasets, [(0, 0)], cfg)
    np.testing.assert_allclose(norm.action.mean, rel[chunk_valid(len(ep), 3)].mean(0), rtol=1e-5, atol=1e-7)
    samples = build_samples(
        datasets, [(0, 0)], cfg, norm, encode=None, augmented_copies=0, seed=0, progress=False
    )
    np.testing.assert_allclose(norm.unnormalize_action(samples.target.double()).numpy(), rel, atol=1e-5)


def test_relative_actions_need_actions_over_the_state_joints(dataset_root):
    datasets, manifest = open_datasets([dataset_root])
    data = manifest.to_dict()
    data["action_names"] = [*manifest.action_names[:-1], "gripper"]
    other = type(manifest).from_dict(data)
    config_for_dataset(other, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL)  # absolute: fine
    with pytest.raises(DataError, match="same order"):
        config_for_dataset(other, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL,
                           relative_actions=True)  # fmt: skip


def test_config_adapts_to_the_reference_fixture():
    datasets, manifest = open_datasets([FIXTURE])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL)
    assert cfg.camera_names == ("front", "wrist")
    assert cfg.state_dim == 8 and cfg.action_dim == 8
    assert manifest.action_names[-1] == "gripper"


def test_datasets_of_different_embodiments_are_refused(dataset_root, tmp_path):
    other = write_synthetic_dataset(
        tmp_path / "other", episodes=1, frames=4, fps=5, cameras=(CameraSpec("front", 32, 32),)
    )
    with pytest.raises(DataError, match="fps"):
        open_datasets([dataset_root, other])


def test_color_jitter_changes_pixels_not_shape():
    frame = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    out = color_jitter(frame, np.random.default_rng(1))
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not np.array_equal(out, frame)
    np.testing.assert_array_equal(
        frame, np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    )


def _policy_and_observation(net, norm, manifest, dataset_root, episode, frame):
    ds = LeRobotV3Dataset(dataset_root)
    policy = NativePolicy(Checkpoint(net, norm, manifest_with_stats(manifest, norm)))
    obs = {
        "observation.images.front": ds.frames(episode, "front")[frame],
        "observation.images.wrist": ds.frames(episode, "wrist")[frame],
        "observation.state": ds.episode(episode).state[frame],
        "task": "push the blue block right",
    }
    return policy, obs


def test_native_samples_cache_the_uint8_pixels_inference_sees(dataset_root):
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL)
    net = VLANetwork(cfg, load_pretrained=False)
    norm = compute_normalizer(datasets, [(0, 0), (0, 1)])
    samples = build_samples(
        datasets, [(0, 1)], cfg, norm, encode=None, augmented_copies=0, seed=0, progress=False
    )
    assert samples.features.dtype == torch.uint8
    assert samples.features.shape == (10, 1, 2, 3, 32, 32) and samples.copies == 1
    assert samples.target.shape == (10, cfg.horizon, 8)
    assert samples.texts == ["push the blue block right"]
    # Frame 4: the cache holds preprocess(frame, inference spec) byte for byte ...
    for cam_index, cam in enumerate(cfg.camera_names):
        frame = datasets[0].frames(1, cam)[4]
        expected = preprocess(frame, cfg.input_spec(False))
        assert expected.dtype == np.uint8
        np.testing.assert_array_equal(samples.features[4, 0, cam_index].numpy(), expected)
    # ... which is what the policy's own inference path feeds the network.
    policy, obs = _policy_and_observation(net, norm, manifest, dataset_root, 1, 4)
    images, _, state = policy.prepare(obs)
    assert images.dtype == torch.uint8
    torch.testing.assert_close(samples.features[4, 0], images[0], atol=0, rtol=0)
    torch.testing.assert_close(samples.state[4], state[0])
    assert estimate_cache_bytes(10, net, 1) == samples.features.nbytes


def test_baseline_samples_cache_trunk_features_of_the_inference_view(dataset_root):
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.TEXTBOOK_BASELINE, **TINY_MODEL)
    torch.manual_seed(0)
    net = VLANetwork(cfg, load_pretrained=False)
    norm = compute_normalizer(datasets, [(0, 0), (0, 1)])
    samples = build_samples(
        datasets, [(0, 1)], cfg, norm, encode=net.trunk, augmented_copies=2, seed=0, progress=False
    )
    assert samples.features.shape[:3] == (10, 3, 2)
    assert samples.features.dtype == torch.float16
    assert estimate_cache_bytes(10, net, 3) == samples.features.nbytes
    # Frame 4 through the policy's own input path (preprocess with the inference spec, then the trunk).
    policy, obs = _policy_and_observation(net, norm, manifest, dataset_root, 1, 4)
    images, _, state = policy.prepare(obs)
    with torch.inference_mode():
        expected = net.encode_images(images)[0].to(torch.float16)
    torch.testing.assert_close(samples.features[4, 0], expected, atol=0, rtol=0)
    torch.testing.assert_close(samples.state[4], state[0])
    # The augmented copies differ from the clean one (random crop + colour jitter).
    assert not torch.equal(samples.features[4, 1], samples.features[4, 0])


def test_preprocess_spec_crops_randomly_only_in_baseline_training(dataset_root):
    datasets, manifest = open_datasets([dataset_root])
    frame = datasets[0].frames(0, "front")[0]
    baseline = config_for_dataset(
        manifest, datasets[0].camera_names, PolicyKind.TEXTBOOK_BASELINE, **TINY_MODEL
    )
    infer = baseline.input_spec(training=False)
    np.testing.assert_array_equal(preprocess(frame, infer), preprocess(frame, infer))
    train = baseline.input_spec(training=True)
    views = {preprocess(frame, train, np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(views) > 1
    # The native VLA is fed the whole resized frame in training too: it shifts the pixels itself.
    native = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL)
    assert native.input_spec(training=True) == native.input_spec(training=False)
    views = {preprocess(frame, native.input_spec(True), np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(views) == 1


def test_padded_chunk_steps_are_masked_out_of_the_loss():
    from vla_policy.data import chunk_valid

    valid = chunk_valid(4, 3)
    np.testing.assert_array_equal(valid[-1], [True, False, False])
    assert valid[:2].all()
    cfg = config_for_dataset(
        open_datasets([FIXTURE])[1], ("front", "wrist"), PolicyKind.NATIVE_VLA, **dict(TINY_MODEL, horizon=3)
    )
    net = VLANetwork(cfg, load_pretrained=False)
    pred = torch.zeros(2, 3, 8)
    target = torch.zeros(2, 3, 8)
    target[:, 1:] = 5.0  # wildly wrong only at the padded steps
    mask = torch.tensor([[True, False, False], [True, False, False]])
    loss, _ = net.loss({"actions": pred}, target, mask)
    assert float(loss) == 0.0
    assert float(net.loss({"actions": pred}, target)[0]) > 1.0
