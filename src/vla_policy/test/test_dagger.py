"""vla-dagger: expert demonstrations and a DAgger round in the embedded simulator, written as LeRobot v3."""

import json

import numpy as np
import pytest
from test_backend_native import train_tiny_checkpoint
from test_eval import record_rollout
from vla_collector.lerobot import LeRobotV3Dataset
from vla_policy.dagger import main, rollout_dataset


def test_expert_demonstrations_are_a_valid_dataset_of_successes(tmp_path, capsys):
    out = tmp_path / "d0"
    code = main(["expert", str(out), "--families", "pick", "--episodes", "2", "--image-size", "32",
                 "--cameras", "front", "--no-progress"])  # fmt: skip
    assert code == 0
    assert "| pick | 2 | 2 | 100% |" in capsys.readouterr().out
    ds = LeRobotV3Dataset(out)
    assert ds.num_episodes == 2 and ds.camera_names == ("front",)
    ep = ds.episode(0)
    # The expert drove, so each stored state is where the previous label led (within tracking error).
    assert np.abs(ep.state[1:, :7] - ep.action[:-1, :7]).max() < 0.05
    record = json.loads((out / "dagger_rounds.jsonl").read_text().splitlines()[0])
    assert record["driver"] == "expert" and record["stats"][0]["successes"] == 2


def test_expert_episodes_record_the_envs_environment_state(tmp_path):
    from vla_sim.tasks import REFERENT_NAMES

    import vla_sim

    out = tmp_path / "d0"
    assert main(["expert", str(out), "--families", "stack", "--episodes", "1", "--image-size", "32",
                 "--cameras", "front", "--no-progress", "--seed", "5"]) == 0  # fmt: skip
    ds = LeRobotV3Dataset(out)
    assert ds.has_environment_state and ds.environment_state_names == REFERENT_NAMES
    ep = ds.episode(0)
    assert ep.environment_state.shape == (len(ep), 6)
    # Replaying the stored actions (the expert drove) in the same scene gives the same state at every frame.
    env = vla_sim.make_env("stack", cameras=(), control_hz=10)
    try:
        obs, _ = env.reset(seed=5)
        for t in range(len(ep)):
            np.testing.assert_allclose(
                ep.environment_state[t], obs["observation.environment_state"], atol=1e-6
            )
            obs, *_ = env.step(ep.action[t])
    finally:
        env.close()
    # The block moved onto its goal block: the target ends about one block above the goal.
    np.testing.assert_allclose(
        ep.environment_state[-1, :3] - ep.environment_state[-1, 3:], [0, 0, 0.04], atol=0.01
    )


def test_settle_steps_record_the_release_after_the_success(tmp_path):
    """Place succeeds the instant the fingers open; --settle-steps keeps recording the release and the retreat."""
    cut, settled = tmp_path / "cut", tmp_path / "settled"
    for out, extra in ((cut, []), (settled, ["--settle-steps", "5"])):
        assert main(["expert", str(out), "--families", "place", "--episodes", "1", "--image-size", "32",
                     "--cameras", "front", "--no-progress", "--seed", "2", *extra]) == 0  # fmt: skip
    a, b = LeRobotV3Dataset(cut).episode(0), LeRobotV3Dataset(settled).episode(0)
    assert len(b) == len(a) + 5 and np.array_equal(b.action[: len(a)], a.action)
    opening = b.action[:, 7]  # the finger command (m)
    assert (opening[len(a) - 1 :] > 0.025).sum() >= 5  # one frame of opening before, six now
    assert (opening[len(a) - 1 :] > 0.025).all() and (opening[: len(a) - 1] < 0.025).sum() > 10
    with pytest.raises(SystemExit):
        main(["expert", str(tmp_path / "x"), "--settle-steps", "-1"])


def test_appending_to_a_dataset_without_environment_state_keeps_it_without(tmp_path):
    from vla_collector.lerobot import LeRobotV3Writer
    from vla_policy.dagger import dataset_spec

    out = tmp_path / "old"
    LeRobotV3Writer.create(out, dataset_spec(["front"], (32, 32), 10, environment_state=False))
    assert main(["expert", str(out), "--families", "pick", "--episodes", "1", "--image-size", "32",
                 "--cameras", "front", "--no-progress"]) == 0  # fmt: skip
    ds = LeRobotV3Dataset(out)
    assert ds.num_episodes == 1 and not ds.has_environment_state and ds.episode(0).environment_state is None


def test_a_round_stores_the_experts_labels_for_the_states_the_policy_visits(tmp_path):
    from vla_sim.experts import make_expert

    import vla_sim

    checkpoint = train_tiny_checkpoint(tmp_path)  # an untrained-ish policy: it will not solve the task
    out = tmp_path / "d1"
    stats = rollout_dataset(
        out, families=["pick"], episodes=1, seed=7, cameras=(), image_size=(0, 0), fps=10,
        policy_dir=str(checkpoint), progress=False,
    )  # fmt: skip
    assert stats[0].episodes == 1 and stats[0].successes == 0
    ds = LeRobotV3Dataset(out)
    assert ds.camera_names == ("front",) and ds.manifest.cameras[0].height == 48  # the policy's camera
    ep = ds.episode(0)
    assert len(ep) == 150  # pick's 15 s limit at 10 Hz: the policy never succeeded
    # Labels are the expert's for the visited state: the same scene and state give the same expert action.
    env = vla_sim.make_env("pick", cameras=("front",), image_size=(48, 64), control_hz=10)
    try:
        env.reset(seed=7)
        assert np.allclose(make_expert(env).act_env(), ep.action[0], atol=1e-5)
    finally:
        env.close()
    # The policy, not the expert, drove: the visited states leave the expert's path.
    assert np.abs(ep.state[1:, :7] - ep.action[:-1, :7]).max() > 0.05


def test_max_steps_ends_a_rounds_episodes_early(tmp_path):
    checkpoint = train_tiny_checkpoint(tmp_path)
    out = tmp_path / "capped"
    assert main(["collect", str(checkpoint), str(out), "--families", "pick", "--episodes", "2",
                 "--max-steps", "12", "--no-progress"]) == 0  # fmt: skip
    ds = LeRobotV3Dataset(out)
    assert [len(ds.episode(e.index)) for e in ds.episodes] == [12, 12]
    with pytest.raises(SystemExit):
        main(["collect", str(checkpoint), str(out), "--max-steps", "-1"])


def test_beta_one_is_the_expert(tmp_path):
    checkpoint = train_tiny_checkpoint(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    rollout_dataset(a, families=["push"], episodes=1, seed=3, cameras=("front",), image_size=(48, 64),
                    fps=10, progress=False)  # fmt: skip
    rollout_dataset(b, families=["push"], episodes=1, seed=3, cameras=(), image_size=(0, 0), fps=10,
                    policy_dir=str(checkpoint), beta=1.0, progress=False)  # fmt: skip
    ea, eb = LeRobotV3Dataset(a).episode(0), LeRobotV3Dataset(b).episode(0)
    assert np.array_equal(ea.action, eb.action) and np.array_equal(ea.state, eb.state)


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["collect", "ckpt", str(tmp_path / "x"), "--beta", "2"])
    assert main(["collect", str(tmp_path / "missing"), str(tmp_path / "x"), "--no-progress"]) == 2
    assert "vla-dagger:" in capsys.readouterr().err
    assert main(["expert", str(tmp_path / "y"), "--release-height", "-0.01", "--no-progress"]) == 2
    assert "release_height" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_ctrl_c_keeps_the_episodes_written_and_their_record(tmp_path, monkeypatch, caplog):
    import vla_policy.dagger as dagger

    calls = {"n": 0}
    real = dagger.LeRobotV3Writer.write_episode

    def write_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(dagger.LeRobotV3Writer, "write_episode", write_then_interrupt)
    out = tmp_path / "d"
    code = main(["expert", str(out), "--families", "push", "pick", "--episodes", "3", "--image-size", "32",
                 "--cameras", "front", "--no-progress"])  # fmt: skip
    assert code == 0
    assert "interrupted during push: keeping the 1 episodes written" in caplog.text
    assert LeRobotV3Dataset(out).num_episodes == 1
    record = json.loads((out / "dagger_rounds.jsonl").read_text())
    assert [(s["family"], s["episodes"]) for s in record["stats"]] == [("push", 1)]


def test_collect_drives_the_policy_through_the_nodes_executor(tmp_path, monkeypatch):
    """The policy's chunks reach the arm through policy_node's executor (ChunkDriver): re-planned every
    ``execute_steps`` actions or right after the expert took a step, new chunks crossfading in."""
    import vla_policy.models.policy as policy_module

    checkpoint = train_tiny_checkpoint(tmp_path)  # horizon 8
    chunks, played = record_rollout(monkeypatch, policy_module)
    out = tmp_path / "d1"
    rollout_dataset(
        out, families=["pick"], episodes=1, seed=7, cameras=(), image_size=(0, 0), fps=10,
        policy_dir=str(checkpoint), beta=0.25, execute_steps=5, progress=False,
    )  # fmt: skip
    ep = LeRobotV3Dataset(out).episode(0)
    assert len(played) == len(ep)
    rng = np.random.default_rng(7)  # the round's own draw: the expert drives where rng.random() < beta
    expert = [bool(rng.random() < 0.25) for _ in range(len(ep))]
    # Expected inferences: at the first policy step, after every expert step, and 5 actions after the last.
    inferred, last = [], None
    for t in range(len(ep)):
        if expert[t]:
            last = None
        elif last is None or t - last >= 5:
            inferred.append(t)
            last = t
    assert [round(c.stamp * 10) for c in chunks] == inferred
    np.testing.assert_allclose([c.stamp for c in chunks], np.array(inferred) / 10, atol=1e-9)
    # What was played: the expert's label on its steps; the newest chunk's step for the time on the policy's,
    # except at a re-plan that found the previous chunk still queued: it fades in (weights 0, 1/2, 1 at 10 Hz).
    at = dict(zip(inferred, (c.actions for c in chunks), strict=True))
    blended, current, previous = 0, None, None
    for t in range(len(ep)):
        if expert[t]:
            np.testing.assert_array_equal(played[t], ep.action[t])
            current = previous = None
            continue
        if t in at:
            previous, current = current, (t, at[t])
        chunk, k = current[1], t - current[0]
        if previous is not None and k < 2:
            old = previous[1][t - previous[0]]
            expected = old if k == 0 else 0.5 * old + 0.5 * chunk[1]
            blended += 1
        else:
            expected = chunk[k]
        np.testing.assert_allclose(played[t], expected.astype(np.float32), atol=1e-6, err_msg=f"step {t}")
    assert blended > 0  # some re-plans happened with the previous chunk queued
    assert 0 < sum(expert) < len(ep) / 2  # both drove
