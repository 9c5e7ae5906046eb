"""A round trip through LeRobot (heavy): demonstrations recorded through ROS topics (``vla-demo --record``: the
simulator, the scripted expert, the safety monitor and the collector as processes) into a LeRobot v3 dataset;
in the LeRobot venv, LeRobot 0.6.1 opens it, ``delete_episodes`` one episode of the packed files into a new
dataset (its video re-encoded from our ``info.json``) and ``recompute_stats``; our reader opens the result and
``vla-train`` trains the native VLA on it, and the checkpoint loads and acts.

Needs the LeRobot venv (scripts/setup-lerobot.sh) and the built workspace; skips without them.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.heavy, pytest.mark.ros]
pytest.importorskip("rclpy")
pytest.importorskip("vla_sim.sim_node", reason="vla_sim's sim_node is not available")
from vla_collector.lerobot import LeRobotV3Dataset  # noqa: E402
from vla_common.manifest import EmbodimentManifest  # noqa: E402
from vla_policy.serve import _FOREIGN_ENV, lerobot_python  # noqa: E402

# recorded; the collector refuses an episode whose real rate drifts (a loaded machine): at least 2 must remain
EPISODES = 4
DELETE = 1  # it shares the data file and the mp4 with its neighbours: LeRobot re-encodes the video


@pytest.fixture(scope="module")
def lerobot():
    python = lerobot_python()
    if python is None:
        pytest.skip("no LeRobot venv (.venv-lerobot or $VLA_LEROBOT_VENV): run scripts/setup-lerobot.sh")
    return python


@pytest.fixture(scope="module")
def built():
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("vla_bringup")
    except PackageNotFoundError:
        pytest.skip("needs the built workspace: source scripts/env.sh")


def ros_env():
    """This process's environment, its ROS traffic on its own domain (scripts/test.sh's, else a random one)."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def record(dataset, out):
    """``vla-demo --commander expert --record``: EPISODES pick episodes through topics."""
    args = [
        sys.executable, "-m", "vla_bringup.demo", "--commander", "expert", "--families", "pick",
        "--episodes", str(EPISODES), "--seed", "1000", "--record", str(dataset), "--out", str(out),
    ]  # fmt: skip
    with open(out.parent / "vla-demo.log", "w") as log:
        proc = subprocess.Popen(args, env=ros_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(180)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # vla-demo stops its stack on SIGTERM
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            code = None
    text = (out.parent / "vla-demo.log").read_text()
    assert code == 0, f"vla-demo --record exited {code}:\n{text[-3000:]}"
    return text


def test_record_through_topics_edit_with_lerobot_then_train(lerobot, built, tmp_path):
    recorded, edited = tmp_path / "demos", tmp_path / "demos_edited"
    log = record(recorded, tmp_path / "demo")
    ours = LeRobotV3Dataset(recorded)
    n = ours.num_episodes
    assert 2 <= n <= EPISODES and log.count(": accepted") == n, log[-3000:]
    lengths = [e.length for e in ours.episodes]
    tasks = [e.tasks[0] for e in ours.episodes]
    states = [ours.episode(i).state for i in range(n)]

    # LeRobot, in its venv: load, delete_episodes, recompute_stats, reopen and decode
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["HF_HUB_OFFLINE"] = "1"  # a local dataset: nothing to download
    script = Path(__file__).with_name("lerobot_edit_dataset.py")
    result = subprocess.run(
        [str(lerobot), str(script), str(recorded), str(edited), "--delete", str(DELETE)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-4000:]}"
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    kept = [i for i in range(n) if i != DELETE]
    assert seen["src_episodes"] == n and seen["src_lengths"] == lengths
    assert seen["src_frames"] == sum(lengths)
    assert seen["dst_episodes"] == n - 1 and seen["kept"] == kept
    assert seen["dst_lengths"] == [lengths[i] for i in kept]
    assert seen["dst_frames"] == seen["dst_len"] == sum(lengths[i] for i in kept)
    assert seen["episode_indices"] == list(range(n - 1))
    # frames decode after the re-encode, close to the originals (0.3-0.7 here; the next frame differs by ~4)
    assert len(seen["frame_errors"]) == 2 * len(kept) and max(seen["frame_errors"]) < 2.0, seen
    # the recomputed stats are those of the kept frames
    assert seen["action_count"] == [sum(lengths[i] for i in kept)]
    np.testing.assert_allclose(seen["action_mean"], seen["action_mean_data"], rtol=1e-5, atol=1e-6)
    front = json.loads((recorded / "meta" / "info.json").read_text())["features"]["observation.images.front"]
    assert seen["video_preset"] == front["info"]["video.preset"]  # as we recorded it, after the re-encode

    # our reader opens what LeRobot wrote (no meta/embodiment.json: the manifest comes from info.json)
    theirs = LeRobotV3Dataset(edited)
    assert not (edited / "meta" / "embodiment.json").exists()
    assert theirs.num_episodes == n - 1
    for new, old in enumerate(kept):
        assert theirs.episodes[new].length == lengths[old] and theirs.episodes[new].tasks[0] == tasks[old]
        np.testing.assert_array_equal(theirs.episode(new).state, states[old])
        frames = theirs.frames(new, "front")
        assert frames.shape[0] == lengths[old] and frames.std() > 5
    recorded_manifest = EmbodimentManifest.load(recorded)

    # our model on the result: two steps, a checkpoint that loads and acts
    run = tmp_path / "train"
    train = subprocess.run(
        [sys.executable, "-m", "vla_policy.train", str(edited), "--tiny", "--max-steps", "2", "--output", str(run),
         "--threads", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-4000:] + train.stdout[-2000:]
    from vla_policy.models.policy import load_policy

    for name in ("best", "last"):
        assert (run / name / "model.safetensors").is_file()
    manifest = EmbodimentManifest.load(run / "best")
    fields = ("robot_type", "joint_names", "action_names", "action_type", "fps", "cameras", "joint_units")
    for field in fields:
        assert getattr(manifest, field) == getattr(recorded_manifest, field), field
    policy = load_policy(run / "best")
    obs = {"observation.images.front": theirs.frames(0, "front")[0], "observation.state": states[0][0]}
    chunk = policy.infer({**obs, "task": tasks[0], "timestamp": 0.0})
    assert chunk.actions.shape[1] == 8 and np.isfinite(chunk.actions).all()
