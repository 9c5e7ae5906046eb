"""vla-eval: offline action error (checked against an independent computation) and a short closed loop."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import write_environment_dataset
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.testing import shared_fixtures
from vla_policy.data import compute_normalizer, config_for_dataset, manifest_with_stats, open_datasets
from vla_policy.evaluate import (
    EpisodeOutcome,
    closed_loop,
    explained_variance,
    localization_probe,
    main,
    offline_errors,
    referent_scores,
    ridge_readout,
    summarize_closed_loop,
)
from vla_policy.models import Checkpoint, PolicyKind, VLANetwork, load_policy, save_checkpoint
from vla_policy.testing.synthetic import write_synthetic_dataset
from vla_policy.train import TINY_MODEL, TrainConfig, train

HORIZON = 3

FIXTURE = shared_fixtures(__file__) / "lerobot_v3_reference"
needs_fixture = pytest.mark.skipif(
    not Path(FIXTURE).is_dir(), reason="../shared/fixtures/lerobot_v3_reference missing"
)


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


@needs_fixture
def test_offline_refuses_a_dataset_of_another_embodiment(mean_policy_dir):
    policy = load_policy(mean_policy_dir)
    with pytest.raises(ValueError, match="not trained for"):
        offline_errors(policy, [FIXTURE], None, "x", progress=False)


def test_cli_writes_tables_and_plots(mean_policy_dir, tmp_path):
    assert main([str(mean_policy_dir), "--output", str(tmp_path), "--no-progress"]) == 0
    for name in ("results.md", "offline.csv", "offline.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "offline.csv").open()))
    assert len(rows) == 1 and rows[0]["frames"] == "16"
    assert "l1_panda_joint1" in rows[0] and "l1_step2" in rows[0] and "start_r2" in rows[0]
    assert "| native_vla" in (tmp_path / "results.md").read_text()
    assert "Localization probe" not in (tmp_path / "results.md").read_text()  # no environment_state
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
        EpisodeOutcome(
            "p", "place", "train", "put the red block in the bowl", True, 90, grasped=True, goal_cm=1.0
        ),
        EpisodeOutcome(
            "p", "place", "train", "put the red block in the bowl", False, 200, grasped=True, goal_cm=6.0
        ),
        EpisodeOutcome("p", "place", "train", "put the red block in the bowl", False, 200, goal_cm=20.0),
    ]
    summary = {(s["family"], s["split"]): s for s in summarize_closed_loop(outcomes)}
    assert summary[("pick", "train")]["success_rate"] == 0.5
    assert summary[("pick", "train")]["mean_steps"] == 95.0
    assert summary[("pick", "heldout")]["successes"] == 0
    # Where the failures happen: two of three grasped the block, the median came within 6 cm of the bowl.
    assert summary[("place", "train")]["grasped"] == 2 and summary[("place", "train")]["goal_cm"] == 6.0


def test_closed_loop_runs_the_policy_in_the_simulator(mean_policy_dir):
    policy = load_policy(mean_policy_dir)
    outcomes = closed_loop(
        policy, "mean", families=["pick"], splits=["train", "heldout"], episodes=1, seed=0, execute_steps=2, progress=False,
        max_steps=6,
    )  # fmt: skip
    assert [(o.family, o.split, o.steps) for o in outcomes] == [("pick", "train", 6), ("pick", "heldout", 6)]
    assert outcomes[0].instruction != outcomes[1].instruction
    assert not any(o.success or o.grasped for o in outcomes)  # the mean action does not pick anything up
    assert all(math.isnan(o.goal_cm) for o in outcomes)  # pick's goal is the block itself


# --- the closed loop drives through policy_node's executor ---------------------------------------------


@pytest.fixture(scope="module")
def random_policy_dir(dataset_root, tmp_path_factory):
    """A native VLA with random weights and a 6-step horizon: every chunk step differs from the others."""
    datasets, manifest = open_datasets([dataset_root])
    cfg = config_for_dataset(
        manifest, datasets[0].camera_names, PolicyKind.NATIVE_VLA, **dict(TINY_MODEL, horizon=6)
    )
    normalizer = compute_normalizer(datasets, [(0, e.index) for e in datasets[0].episodes])
    torch.manual_seed(0)
    net = VLANetwork(cfg, load_pretrained=False)
    out = tmp_path_factory.mktemp("random")
    save_checkpoint(Checkpoint(net, normalizer, manifest_with_stats(manifest, normalizer), {}), out)
    return out


def record_rollout(monkeypatch, loader):
    """Spies on a rollout: the chunks the policy that ``loader.load_policy`` loads returns, and the actions
    stepped in every env ``vla_sim.make_env`` makes (vla-eval's closed loop, vla-dagger collect)."""
    import vla_sim

    chunks, played = [], []
    real_load, real_make_env = loader.load_policy, vla_sim.make_env

    def load(path, **kwargs):
        policy = real_load(path, **kwargs)
        infer = policy.infer

        def recorded(observation):
            chunks.append(infer(observation))
            return chunks[-1]

        policy.infer = recorded
        return policy

    def make_env(*args, **kwargs):
        env = real_make_env(*args, **kwargs)
        step = env.step

        def recorded(action):
            played.append(np.array(action, dtype=np.float64))
            return step(action)

        env.step = recorded
        return env

    monkeypatch.setattr(loader, "load_policy", load)
    monkeypatch.setattr(vla_sim, "make_env", make_env)
    return chunks, played


@pytest.mark.parametrize("blend", ["crossfade", "latest"])
def test_closed_loop_plays_chunks_through_the_nodes_executor(random_policy_dir, tmp_path, monkeypatch, blend):
    import vla_policy.evaluate as evaluate

    chunks, played = record_rollout(monkeypatch, evaluate)
    assert main([str(random_policy_dir), "--output", str(tmp_path), "--no-offline", "--no-progress",
                 "--closed-loop", "--families", "pick", "--splits", "train", "--episodes", "1", "--seed", "0",
                 "--max-steps", "7", "--execute-steps", "3", "--blend", blend]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "closed_loop.csv").open()))
    assert [(r["family"], r["split"]) for r in rows] == [("pick", "train")]
    episode = next(csv.DictReader((tmp_path / "closed_loop_episodes.csv").open()))
    assert episode["steps"] == "7" and episode["grasped"] == "False" and episode["goal_cm"] == "nan"
    # One inference per 3 actions played, each stamped with the sim time it was asked at.
    assert len(played) == 7 and len(chunks) == 3
    np.testing.assert_allclose([c.stamp for c in chunks], [0.0, 0.3, 0.6], atol=1e-9)
    c0, c1, c2 = (c.actions for c in chunks)
    if blend == "crossfade":
        # policy_node's default: a new chunk fades in over 0.2 s from its arrival (weight 0, 1/2, 1).
        expected = [c0[0], c0[1], c0[2], c0[3], 0.5 * c0[4] + 0.5 * c1[1], c1[2], c1[3]]
    else:
        expected = [c0[0], c0[1], c0[2], c1[0], c1[1], c1[2], c2[0]]
    np.testing.assert_allclose(np.array(played), np.array(expected, dtype=np.float32), atol=1e-6)
    assert not np.allclose(c0[3], c1[0], atol=1e-3)  # the two blends are told apart


def test_closed_loop_at_the_nodes_rate_through_the_safety_monitor(random_policy_dir, tmp_path, monkeypatch):
    import vla_policy.evaluate as evaluate

    chunks, played = record_rollout(monkeypatch, evaluate)
    assert main([str(random_policy_dir), "--output", str(tmp_path), "--no-offline", "--no-progress",
                 "--closed-loop", "--families", "pick", "--splits", "train", "--episodes", "1", "--seed", "0",
                 "--max-steps", "12", "--control-hz", "40", "--safety", "panda",
                 "--interpolation", "cubic"]) == 0  # fmt: skip
    # 40 commands per second of a 10 Hz policy: 12 ticks are 0.3 s, re-planned after 5 of its steps (0.5 s).
    assert len(played) == 12 and len(chunks) == 1
    row = next(csv.DictReader((tmp_path / "closed_loop.csv").open()))
    assert 0.0 <= float(row["safety_limited"]) <= 1.0
    assert "safety_limited" in (tmp_path / "results.md").read_text()


# --- localization probe ----------------------------------------------------------------------------------


def test_ridge_readout_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    weights, bias = rng.normal(size=(8, 6)), rng.normal(size=6)
    x_fit, x_test = rng.normal(size=(300, 8)) * 3 + 1, rng.normal(size=(50, 8)) * 3 + 1
    pred = ridge_readout(x_fit, x_fit @ weights + bias, x_test)
    truth = x_test @ weights + bias
    assert explained_variance(truth, pred) > 0.999
    np.testing.assert_allclose(pred, truth, atol=0.05 * np.abs(truth).max())
    # The penalty is applied: ridge=1 per row on standardized, nearly uncorrelated features halves the slopes.
    shrunk = ridge_readout(x_fit, x_fit @ weights + bias, x_test, ridge=1.0)
    ratio = (shrunk - shrunk.mean(0)).std() / (truth - truth.mean(0)).std()
    assert ratio == pytest.approx(0.5, abs=0.05)
    # Features without variance do not break the fit.
    x_fit[:, 3] = 2.0
    assert np.isfinite(ridge_readout(x_fit, x_fit @ weights, x_test)).all()


def test_referent_scores_pool_r2_per_referent_and_measure_xy_error_in_cm():
    names = ("target.x", "target.y", "target.z", "goal.x", "goal.y", "goal.z")
    rng = np.random.default_rng(1)
    truth = rng.uniform(-0.3, 0.3, size=(20, 6))
    pred = truth.copy()
    pred[:, :3] += [0.03, 0.04, 0.5]  # 5 cm off horizontally (3-4-5), far off in height
    r2, error_cm = referent_scores(names, truth, pred)
    assert list(r2) == ["target", "goal"] and list(error_cm) == ["target", "goal"]
    assert error_cm["target"] == pytest.approx(5.0) and error_cm["goal"] == 0.0
    assert r2["goal"] == 1.0
    assert r2["target"] == pytest.approx(explained_variance(truth[:, :3], pred[:, :3]))
    assert r2["target"] < 0  # the height error counts in R2


@pytest.fixture(scope="module")
def environment_checkpoint(tmp_path_factory):
    """A native VLA trained (one epoch, localization loss on) on a dataset with environment_state."""
    root = tmp_path_factory.mktemp("env")
    dataset = write_environment_dataset(root / "dataset", episodes=6, frames=12)
    result = train(
        TrainConfig(
            datasets=(str(dataset),), output=str(root / "run"), epochs=1, batch_size=16, warmup_steps=1,
            val_fraction=0.34, augmented_copies=0, seed=0, device="cpu", progress=False,
            model_overrides=dict(TINY_MODEL, horizon=4, localization_weight=0.5),
        )
    )  # fmt: skip
    return dataset, result.best


def test_localization_probe_fits_on_training_episodes_and_scores_held_out_ones(environment_checkpoint):
    dataset, checkpoint = environment_checkpoint
    policy = load_policy(checkpoint)
    info = policy.checkpoint.info
    fit, held_out = [tuple(r) for r in info["train_episodes"]], [tuple(r) for r in info["val_episodes"]]
    assert len(fit) == 4 and len(held_out) == 2
    result = localization_probe(policy, [dataset], fit, held_out, "native")
    # Frames 0, 5 and 10 of every 12-frame episode.
    assert (result.label, result.fit_frames, result.test_frames) == ("native", 12, 6)
    assert set(result.r2) == set(result.error_cm) == {"target", "goal"}
    assert all(np.isfinite(v) for v in (*result.r2.values(), *result.error_cm.values()))
    assert all(v >= 0 for v in result.error_cm.values())


def test_localization_probe_needs_the_native_vla_and_environment_state(environment_checkpoint, dataset_root,
                                                                      mean_policy_dir, tmp_path):  # fmt: skip
    dataset, _ = environment_checkpoint
    datasets, manifest = open_datasets([dataset])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.TEXTBOOK_BASELINE, **TINY_MODEL)
    normalizer = compute_normalizer(datasets, [(0, 0)])
    net = VLANetwork(cfg, load_pretrained=False)
    save_checkpoint(Checkpoint(net, normalizer, manifest_with_stats(manifest, normalizer), {}), tmp_path)
    with pytest.raises(ValueError, match="native"):
        localization_probe(load_policy(tmp_path), [dataset], [(0, 0)], [(0, 1)], "baseline")
    with pytest.raises(ValueError, match=r"observation\.environment_state"):
        localization_probe(load_policy(mean_policy_dir), [dataset_root], [(0, 0)], [(0, 1)], "mean")


def test_cli_reports_the_probe_for_native_checkpoints_on_environment_state(environment_checkpoint, tmp_path):
    dataset, checkpoint = environment_checkpoint
    # A baseline on the same data and split: evaluated offline, but the probe reads native keypoints only.
    datasets, manifest = open_datasets([dataset])
    cfg = config_for_dataset(manifest, datasets[0].camera_names, PolicyKind.TEXTBOOK_BASELINE, **TINY_MODEL)
    normalizer = compute_normalizer(datasets, [(0, 0)])
    info = load_policy(checkpoint).checkpoint.info
    baseline = tmp_path / "baseline" / "best"
    save_checkpoint(
        Checkpoint(VLANetwork(cfg, load_pretrained=False), normalizer, manifest_with_stats(manifest, normalizer),
                   {k: info[k] for k in ("datasets", "train_episodes", "val_episodes")}),
        baseline,
    )  # fmt: skip
    assert main([str(checkpoint), str(baseline), "--output", str(tmp_path / "eval"), "--no-progress"]) == 0
    report = (tmp_path / "eval" / "results.md").read_text()
    assert "## Localization probe" in report
    probe = report.split("## Localization probe")[1].split("##")[0]
    assert (
        "| policy | fit frames | test frames | target R2 | target xy error cm | goal R2 | goal xy error cm |"
        in probe
    )
    rows = [
        line
        for line in probe.splitlines()
        if line.startswith("| native_vla") or line.startswith("| textbook")
    ]
    assert len(rows) == 1 and rows[0].startswith("| native_vla") and "| 12 | 6 |" in rows[0]
    assert "| textbook_baseline" in report.split("## Localization probe")[0]  # offline table: both
