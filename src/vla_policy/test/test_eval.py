"""vla-eval: offline action error (checked against an independent computation) and a short closed loop."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from vla_collector.lerobot_v3 import LeRobotV3Dataset
from vla_policy.data import compute_normalizer, config_for_dataset, manifest_with_stats, open_datasets
from vla_policy.evaluate import (
    EpisodeOutcome,
    closed_loop,
    explained_variance,
    main,
    offline_errors,
    summarize_closed_loop,
)
from vla_policy.models import Checkpoint, PolicyKind, VLANetwork, load_policy, save_checkpoint
from vla_policy.synthetic import write_synthetic_dataset
from vla_policy.train import TINY_MODEL

HORIZON = 3


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "syn", episodes=3, frames=8)


@pytest.fixture(scope="module")
def mean_policy_dir(dataset_root, tmp_path_factory):
    """A native VLA whose head predicts 0 (normalized), i.e. the dataset's mean action at every step."""
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(
        manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **dict(TINY_MODEL, horizon=HORIZON)
    )
    refs = [(0, e.index) for e in datasets[0].episodes]
    normalizer = compute_normalizer(datasets, refs)
    net = VLANetwork(cfg, load_pretrained=False)
    with torch.no_grad():
        net.head.regression.weight.zero_()
        net.head.regression.bias.zero_()
    info = {"datasets": [str(dataset_root)], "val_episodes": [[0, 1], [0, 2]]}
    out = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(Checkpoint(net, normalizer, manifest_with_stats(manifest, normalizer), info), out)
    return out


def test_offline_error_matches_an_independent_computation(dataset_root, mean_policy_dir):
    policy = load_policy(mean_policy_dir)
    result = offline_errors(policy, [dataset_root], [(0, 1), (0, 2)], "mean", progress=False)
    ds = LeRobotV3Dataset(dataset_root)
    mean = policy.normalizer.action.mean
    errors = {k: [] for k in range(HORIZON)}
    for e in (1, 2):
        actions = ds.episode(e).action.astype(np.float64)
        for t in range(len(actions)):
            for k in range(HORIZON):
                if t + k < len(actions):
                    errors[k].append(np.abs(actions[t + k] - mean))
    all_errors = np.concatenate([np.stack(v) for v in errors.values()])
    np.testing.assert_allclose(result.per_joint, all_errors.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        result.per_step, [np.stack(errors[k]).mean() for k in range(HORIZON)], rtol=1e-5
    )
    assert result.frames == 16 and result.per_step.shape == (HORIZON,)
    # start R2: the first chunk's motion from the start state, explained across the two episodes.
    truth = np.stack([ds.episode(e).action[HORIZON - 1] - ds.episode(e).state[0] for e in (1, 2)])
    pred = np.stack([mean - ds.episode(e).state[0] for e in (1, 2)])
    expected = 1 - ((truth - pred) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum()
    assert result.start_r2 == pytest.approx(expected, rel=1e-6)


def test_explained_variance_is_one_for_perfect_zero_for_the_mean_nan_when_undefined():
    truth = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, 3.0]])
    assert explained_variance(truth, truth) == 1.0
    assert explained_variance(truth, np.tile(truth.mean(0), (3, 1))) == pytest.approx(0.0)
    assert np.isnan(explained_variance(truth[:1], truth[:1]))
    assert np.isnan(explained_variance(np.ones((3, 2)), np.zeros((3, 2))))


def test_ablation_moves_the_error_only_for_inputs_the_policy_uses(dataset_root, tmp_path):
    # The textbook baseline reads no state; with random weights it does read the images and the instruction.
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.TEXTBOOK_BASELINE, **TINY_MODEL)
    refs = [(0, e.index) for e in datasets[0].episodes]
    normalizer = compute_normalizer(datasets, refs)
    torch.manual_seed(0)
    net = VLANetwork(cfg, load_pretrained=False)
    save_checkpoint(Checkpoint(net, normalizer, manifest_with_stats(manifest, normalizer), {}), tmp_path)
    policy = load_policy(tmp_path)
    result = offline_errors(policy, [dataset_root], refs, "baseline", progress=False, ablate=True)
    assert set(result.ablated) == {"state", "instruction", "camera front", "camera wrist"}
    assert result.ablated["state"] == pytest.approx(result.mean, rel=1e-9)
    assert result.ablated["camera front"] != pytest.approx(result.mean, rel=1e-6)
    # Without --ablate nothing is swapped, and the plain figures are the same either way.
    plain = offline_errors(policy, [dataset_root], refs, "baseline", progress=False)
    assert plain.ablated == {}
    np.testing.assert_allclose(plain.per_joint, result.per_joint)


def test_ablation_shows_the_native_vla_reads_every_input(dataset_root, tmp_path):
    # The native VLA's MLP reads the keypoints of both cameras, the state and the instruction.
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(
        manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **dict(TINY_MODEL, horizon=HORIZON)
    )
    refs = [(0, e.index) for e in datasets[0].episodes]
    normalizer = compute_normalizer(datasets, refs)
    torch.manual_seed(0)
    net = VLANetwork(cfg, load_pretrained=False)
    save_checkpoint(Checkpoint(net, normalizer, manifest_with_stats(manifest, normalizer), {}), tmp_path)
    result = offline_errors(
        load_policy(tmp_path), [dataset_root], refs, "native", progress=False, ablate=True
    )
    assert set(result.ablated) == {"state", "instruction", "camera front", "camera wrist"}
    for name in ("state", "instruction", "camera front"):
        assert result.ablated[name] != pytest.approx(result.mean, rel=1e-6), name
    # The synthetic wrist view is the same at a given step of every episode: swapping it changes nothing.
    assert result.ablated["camera wrist"] == pytest.approx(result.mean, rel=1e-9)


def test_offline_refuses_a_dataset_of_another_embodiment(mean_policy_dir):
    policy = load_policy(mean_policy_dir)
    with pytest.raises(ValueError, match="not trained for"):
        offline_errors(policy, ["/work/shared/fixtures/lerobot_v3_reference"], None, "x", progress=False)


def test_cli_writes_tables_and_plots(mean_policy_dir, tmp_path):
    assert main([str(mean_policy_dir), "--output", str(tmp_path), "--no-progress"]) == 0
    for name in ("results.md", "offline.csv", "offline.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "offline.csv").open()))
    assert len(rows) == 1 and rows[0]["frames"] == "16"
    assert "l1_panda_joint1" in rows[0] and "l1_step2" in rows[0] and "start_r2" in rows[0]
    assert "| native_vla" in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "offline_ablation.csv").exists()
    assert main([str(mean_policy_dir), "--output", str(tmp_path / "ab"), "--no-progress", "--ablate"]) == 0
    rows = list(csv.DictReader((tmp_path / "ab" / "offline_ablation.csv").open()))
    assert [r["input from another episode"] for r in rows] == [
        "state",
        "instruction",
        "camera front",
        "camera wrist",
    ]
    assert "Which inputs the policy uses" in (tmp_path / "ab" / "results.md").read_text()


def test_closed_loop_summary_counts_per_family_and_split():
    outcomes = [
        EpisodeOutcome("p", "pick", "train", "pick up the red block", True, 40),
        EpisodeOutcome("p", "pick", "train", "lift the red block", False, 150),
        EpisodeOutcome("p", "pick", "heldout", "raise the red cube off the table", False, 150),
    ]
    summary = {(s["family"], s["split"]): s for s in summarize_closed_loop(outcomes)}
    assert summary[("pick", "train")]["success_rate"] == 0.5
    assert summary[("pick", "train")]["mean_steps"] == 95.0
    assert summary[("pick", "heldout")]["successes"] == 0


def test_closed_loop_runs_the_policy_in_the_simulator(mean_policy_dir):
    policy = load_policy(mean_policy_dir)
    outcomes = closed_loop(
        policy, "mean", families=["pick"], splits=["train", "heldout"], episodes=1, seed=0, execute_steps=2, progress=False,
        max_steps=6,
    )  # fmt: skip
    assert [(o.family, o.split, o.steps) for o in outcomes] == [("pick", "train", 6), ("pick", "heldout", 6)]
    assert outcomes[0].instruction != outcomes[1].instruction
    assert not any(o.success for o in outcomes)  # the mean action does not pick anything up
