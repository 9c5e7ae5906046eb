"""Datasets -> training samples: episode split, statistics, chunks, shared preprocessing, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.manifest import CameraSpec
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_common.testing import shared_fixtures
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
    environment_state_width,
    estimate_cache_bytes,
    manifest_with_stats,
    open_datasets,
    split_episodes,
)
from vla_policy.models import PolicyKind, VLANetwork
from vla_policy.models.checkpoint import Checkpoint
from vla_policy.models.policy import NativePolicy
from vla_policy.testing.synthetic import SYNTHETIC_TASKS, write_synthetic_dataset
from vla_policy.train import TINY_MODEL

FIXTURE = str(shared_fixtures(__file__) / "lerobot_v3_reference")
needs_fixture = pytest.mark.skipif(
    not Path(FIXTURE).is_dir(), reason="../shared/fixtures/lerobot_v3_reference missing"
)
ENVIRONMENT_NAMES = ("target.x", "target.y", "target.z", "goal.x", "goal.y", "goal.z")  # vla_sim's referents


def write_environment_dataset(
    root,
    *,
    episodes: int = 6,
    frames: int = 12,
    seed: int = 0,
    names=ENVIRONMENT_NAMES,
    tasks=SYNTHETIC_TASKS,
):
    """A small dataset with ``observation.environment_state`` (one 32x32 front camera, as the tiny model's
    input): the camera shows a red target square where the state's target x/y put it and a blue goal square
    at the goal; the target moves to the goal over the episode, and the arm with it (action = next state)."""
    from vla_collector.lerobot import DatasetSpec, LeRobotV3Writer, VideoCodecConfig

    rng = np.random.default_rng(seed)
    spec = DatasetSpec(
        fps=10, robot_type="panda", state_names=PANDA_COMMAND_JOINTS, action_names=PANDA_COMMAND_JOINTS,
        cameras=(CameraSpec("front", 32, 32),), video=VideoCodecConfig(codec="libx264", pix_fmt="yuv444p", crf=0),
        environment_state_names=tuple(names),
    )  # fmt: skip
    writer = LeRobotV3Writer.create(root, spec)

    def pixel(x: float, y: float) -> tuple[int, int]:  # x in [0.3, 0.7] -> rows, y in [-0.2, 0.2] -> columns
        return int((x - 0.3) / 0.4 * 26), int((y + 0.2) / 0.4 * 26)

    for ep in range(episodes):
        target, goal = rng.uniform([0.3, -0.2], [0.7, 0.2]), rng.uniform([0.3, -0.2], [0.7, 0.2])
        progress = np.linspace(0.0, 1.0, frames + 1)
        xy = target + progress[:, None] * (goal - target)  # [T+1, 2]
        environment = np.zeros((frames, 6), np.float32)
        environment[:, :2] = xy[:frames]
        environment[:, 2] = 0.02 + 0.1 * np.sin(np.pi * progress[:frames])
        environment[:, 3:5] = goal
        environment[:, 5] = 0.02
        states = np.tile(rng.normal(0.0, 0.05, len(PANDA_COMMAND_JOINTS)), (frames + 1, 1))
        states[:, 0] += xy[:, 1]
        states[:, 1] += xy[:, 0] - 0.5
        states = states.astype(np.float32)
        images = []
        for t in range(frames):
            img = np.full((32, 32, 3), 30, np.uint8)
            (gr, gc), (tr, tc) = pixel(*goal), pixel(*xy[t])
            img[gr : gr + 6, gc : gc + 6] = (40, 40, 220)
            img[tr : tr + 6, tc : tc + 6] = (220, 40, 40)
            images.append(img)
        writer.write_episode(
            states[:frames],
            states[1:],
            {"front": images},
            tasks[ep % len(tasks)],
            environment_states=environment[:, : len(names)],
        )
    return root


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


@needs_fixture
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


def test_samples_skip_the_pixels_of_the_episodes_asked_and_keep_everything_else(dataset_root):
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL)
    norm = compute_normalizer(datasets, [(0, 0), (0, 1)])
    refs = [(0, 0), (0, 1)]

    def samples(skip: set, copies: int = 0):
        return build_samples(datasets, refs, cfg, norm, encode=None, augmented_copies=copies, seed=0,
                             progress=False, skip_pixels=skip)  # fmt: skip

    whole, part, none = samples(set()), samples({(0, 0)}), samples(set(refs))
    n0 = datasets[0].episodes[0].length
    assert whole.pixel_row is None and part.features.shape[0] == len(part) - n0
    assert part.pixel_row.tolist() == [-1] * n0 + list(range(len(part) - n0))
    torch.testing.assert_close(part.features, whole.features[n0:], atol=0, rtol=0)
    for name in ("state", "target", "valid", "text_index", "frame_index"):
        torch.testing.assert_close(getattr(part, name), getattr(whole, name), atol=0, rtol=0)
    assert part.episode == whole.episode and part.texts == whole.texts
    assert none.features.shape[0] == 0 and len(none) == len(whole)
    with pytest.raises(ValueError, match="augmented_copies"):
        samples({(0, 0)}, copies=1)


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


@needs_fixture
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


@pytest.fixture(scope="module")
def environment_root(tmp_path_factory):
    return write_environment_dataset(tmp_path_factory.mktemp("env") / "env", episodes=3, frames=7)


def test_environment_state_width_is_the_features_and_datasets_without_it_are_refused(
    dataset_root, environment_root, tmp_path
):
    with_env, _ = open_datasets([environment_root, environment_root])
    assert environment_state_width(with_env) == 6
    without = [LeRobotV3Dataset(dataset_root)]
    with pytest.raises(DataError, match=r"observation\.environment_state") as raised:
        environment_state_width([with_env[0], *without])
    assert str(dataset_root) in str(raised.value) and str(environment_root) not in str(raised.value)
    narrow = write_environment_dataset(
        tmp_path / "narrow", episodes=1, frames=3, names=("target.x", "target.y")
    )
    with pytest.raises(DataError, match="widths differ"):
        environment_state_width([with_env[0], LeRobotV3Dataset(narrow)])


def test_localization_samples_carry_each_frames_environment_state(environment_root, dataset_root):
    datasets, manifest = open_datasets([environment_root])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL,
                             localization_dim=6, localization_weight=1.0)  # fmt: skip
    norm = compute_normalizer(datasets, [(0, 0), (0, 2)])
    samples = build_samples(
        datasets, [(0, 2), (0, 0)], cfg, norm, encode=None, augmented_copies=0, seed=0, progress=False
    )
    # Dataset units, float32, one row per sample in the samples' own episode order.
    assert samples.environment_state.dtype == torch.float32 and samples.environment_state.shape == (14, 6)
    expected = np.concatenate([datasets[0].episode(e).environment_state for e in (2, 0)])
    np.testing.assert_array_equal(samples.environment_state.numpy(), expected)
    assert samples.episode[:7] == [(0, 2)] * 7
    # Without the localization head the samples carry none; a dataset without the feature is refused.
    plain = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL)
    assert build_samples(datasets, [(0, 0)], plain, norm, encode=None, augmented_copies=0, seed=0,
                         progress=False).environment_state is None  # fmt: skip
    synthetic, synthetic_manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(synthetic_manifest, synthetic[0].camera_names, PolicyKind.NATIVE_VLA, **TINY_MODEL,
                             localization_dim=6, localization_weight=1.0)  # fmt: skip
    with pytest.raises(DataError, match=r"observation\.environment_state"):
        build_samples(synthetic, [(0, 0)], cfg, compute_normalizer(synthetic, [(0, 0)]), encode=None,
                      augmented_copies=0, seed=0, progress=False)  # fmt: skip
