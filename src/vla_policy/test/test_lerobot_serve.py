"""LeRobot's own ACT behind our stack (heavy): a small randomly initialised ACT saved with LeRobot's
``save_pretrained`` in the LeRobot venv, served by ``vla-serve --backend lerobot`` (started from this venv,
which hands it over to the LeRobot one), driven by ``policy_node -p backend:=remote`` in the embedded sim
behind the safety monitor. Also: the chunk's stamp, a NaN model refused, mismatched features refused at start,
a small Diffusion Policy served (n_obs_steps=1) and one reading two observations refused.

Needs the LeRobot venv (scripts/setup-lerobot.sh: about 2.5 min and 5.5 GB). Without it these tests skip,
unless VLA_MAKE_LEROBOT_VENV=1 asks them to make it first.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from vla_common.robots import PANDA_COMMAND_JOINTS

pytestmark = [pytest.mark.heavy, pytest.mark.ros]
rclpy = pytest.importorskip("rclpy")
from sim_stack import SimStack, sim_manifest  # noqa: E402
from vla_policy.backends.isolated import _wait_ready  # noqa: E402
from vla_policy.backends.remote import RemoteConfig, RemotePolicy  # noqa: E402
from vla_policy.serve import _FOREIGN_ENV, lerobot_python  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "lerobot-heavy-token"
CAMERAS = ("front", "wrist")
HOME = (0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.7853981633974483, 0.04)  # vla_sim.robot.HOME_POSITIONS


@pytest.fixture(scope="module")
def lerobot():
    """The LeRobot venv's Python; made by scripts/setup-lerobot.sh when VLA_MAKE_LEROBOT_VENV=1."""
    python = lerobot_python()
    if python is None and os.environ.get("VLA_MAKE_LEROBOT_VENV") == "1":
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "setup-lerobot.sh")], env=env, check=True, timeout=3600
        )
        python = lerobot_python()
    if python is None:
        pytest.skip(
            "no LeRobot venv (.venv-lerobot or $VLA_LEROBOT_VENV): run scripts/setup-lerobot.sh "
            "(~2.5 min, 5.5 GB), or set VLA_MAKE_LEROBOT_VENV=1 to let this test make it"
        )
    return python


def make_act(python, out, *args):
    """Save an ACT with LeRobot in its venv, and the sim's embodiment manifest beside it."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["PYTHONPATH"] = str(Path(__file__).parent)
    script = str(Path(__file__).with_name("lerobot_make_act.py"))
    mean = ",".join(str(v) for v in HOME)
    result = subprocess.run(
        [str(python), script, str(out), "--action-mean", mean, *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sim_manifest().save(Path(out) / "embodiment.json")
    return Path(out)


class Served:
    """``vla-serve --backend lerobot`` as the policy node's child would run it: port 0, ready line, stdin."""

    def __init__(self, model, log, *extra):
        env = {**os.environ, "VLA_SERVE_TOKEN": TOKEN}
        args = [
            sys.executable, "-m", "vla_policy.serve", "--backend", "lerobot", "--model", str(model),
            "--port", "0", "--child", "--threads", "1", *extra,
        ]  # fmt: skip
        self.log = log
        with open(log, "w") as err:
            self.process = subprocess.Popen(
                args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        try:
            self.port = _wait_ready(self.process, 240.0)
        except BaseException as e:  # no caller holds this object to close it: stop the server, then raise
            self.process.kill()
            self.process.wait(10)
            if isinstance(e, RuntimeError):
                raise AssertionError(f"{e}\n{Path(log).read_text()[-3000:]}") from None
            raise
        self.uri = f"ws://127.0.0.1:{self.port}"

    def close(self):
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()  # its cue to exit
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def observation(stamp):
    rng = np.random.default_rng(1)
    obs = {f"observation.images.{c}": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for c in CAMERAS}
    return {**obs, "observation.state": np.array(HOME), "task": "pick up the red block", "timestamp": stamp}


def test_lerobot_act_drives_the_sim_through_the_node_and_the_safety_monitor(lerobot, tmp_path):
    model = make_act(lerobot, tmp_path / "act")
    served = Served(model, tmp_path / "vla-serve.log")
    try:
        log = Path(served.log).read_text()
        assert "handing over to" in log and "LeRobot act policy" in log, log

        # The chunk over the wire: the observation's stamp, the manifest's rate and names, n_action_steps long.
        client = RemotePolicy(RemoteConfig(uri=served.uri, timeout_s=30.0), TOKEN)
        manifest = client.manifest()
        assert manifest.joint_names == tuple(PANDA_COMMAND_JOINTS)
        assert [c.name for c in manifest.cameras] == list(CAMERAS)
        chunk = client.infer(observation(stamp=1234.25))
        assert chunk.stamp == 1234.25 and chunk.dt == pytest.approx(0.1)
        assert chunk.horizon == 10 and chunk.names == tuple(PANDA_COMMAND_JOINTS)
        assert np.all(np.abs(chunk.actions - np.array(HOME)) < 0.1), chunk.actions  # un-normalized by LeRobot
        client.reset()
        client.close()

        stack = SimStack(tmp_path, served.uri, TOKEN, cameras=CAMERAS)
        try:
            started = time.monotonic()
            assert stack.spin(
                120.0, until=lambda: len(stack.policy_commands) >= 20 and stack.accepted() >= 10
            ), f"{len(stack.policy_commands)} commands, monitor {stack.safety}\n{stack.output()}"
            print(f"first 20 commands through the monitor after {time.monotonic() - started:.1f} s")
            assert len(stack.safe_commands) > 0
            assert stack.safety.get("status") in ("OK", "CLAMPED"), stack.safety
            last = stack.policy_commands[-1]
            assert tuple(last.name) == tuple(PANDA_COMMAND_JOINTS)
            assert np.all(np.abs(np.array(last.position) - np.array(HOME)) < 0.2), last.position
        finally:
            stack.close()
        assert "connection open" in Path(served.log).read_text()
    finally:
        served.close()
    assert served.process.returncode == 0, Path(served.log).read_text()[-3000:]


def test_a_lerobot_policy_answering_nan_is_refused_at_start(lerobot, tmp_path):
    """vla-serve's warm-up inference already meets the NaN: it refuses to serve, naming it (exit 2). A policy
    that answers NaN only later is refused chunk by chunk (test_lerobot_bad_output.py, the node and monitor)."""
    model = make_act(lerobot, tmp_path / "act_nan", "--nan")
    result = serve_once(model)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "the LeRobot policy answered NaN or inf (80 values" in result.stderr and "refused" in result.stderr


def test_lerobot_diffusion_policy_is_served_a_fresh_chunk_per_observation(lerobot, tmp_path):
    """LeRobot's Diffusion Policy (n_obs_steps=1): its observation queues filled as its select_action does, so
    predict_action_chunk reads this observation (it asserted on our batch before); each request a chunk of
    n_action_steps, stamped, un-normalized by LeRobot within the statistics' [min, max] around the pose."""
    model = make_act(lerobot, tmp_path / "diffusion", "--policy", "diffusion")
    served = Served(model, tmp_path / "vla-serve.log")
    try:
        assert "LeRobot diffusion policy" in Path(served.log).read_text()
        client = RemotePolicy(RemoteConfig(uri=served.uri, timeout_s=30.0), TOKEN)
        for stamp in (10.0, 10.5, 11.0):
            chunk = client.infer(observation(stamp=stamp))
            assert chunk.stamp == stamp and chunk.horizon == 8 and chunk.names == tuple(PANDA_COMMAND_JOINTS)
            assert np.all(np.abs(chunk.actions - np.array(HOME)) <= 0.05 + 1e-5), chunk.actions
            if stamp == 10.5:
                client.reset()  # the queues emptied: the next observation fills them again
        client.close()
    finally:
        served.close()
    assert served.process.returncode == 0, Path(served.log).read_text()[-3000:]


def test_a_diffusion_policy_reading_two_observations_is_refused_at_start(lerobot, tmp_path):
    """Diffusion Policy's default n_obs_steps=2 needs consecutive frames the node does not send: refused from
    config.json, before LeRobot loads anything, naming what to train with."""
    model = make_act(lerobot, tmp_path / "diffusion2", "--policy", "diffusion", "--n-obs-steps", "2")
    result = serve_once(model)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "n_obs_steps=2 consecutive observations" in result.stderr, result.stderr
    assert "--policy.n_obs_steps=1" in result.stderr and "Traceback" not in result.stderr


def test_the_venv_wrapper_unsets_what_the_hand_over_strips(lerobot):
    """.venv-lerobot/bin/vla-serve (written by setup-lerobot.sh) and vla-serve's hand-over: one list."""
    wrapper = Path(lerobot).parent / "vla-serve"
    unset = [line.split()[1:] for line in wrapper.read_text().splitlines() if line.startswith("unset ")]
    assert unset == [list(_FOREIGN_ENV)], wrapper.read_text()


def serve_once(model):
    env = {**os.environ, "VLA_SERVE_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "vla_policy.serve", "--backend", "lerobot", "--model", str(model), "--port", "0"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, named",
    [
        (["--action", "7"], "action has shape [7], the manifest has 8 action names"),
        (["--state", "7"], "observation.state has shape [7], the manifest has 8 joints"),
        (["--cameras", "front,top"], "image input 'observation.images.top' is not a camera of the manifest"),
        (
            ["--extra-input", "observation.environment_state:ENV:6"],
            "'observation.environment_state' (ENV) has no source",
        ),
    ],
    ids=["action_size", "state_size", "unknown_camera", "environment_state"],
)
def test_a_lerobot_policy_that_does_not_fit_the_manifest_is_refused_at_start(lerobot, tmp_path, args, named):
    model = make_act(lerobot, tmp_path / "act", *args)
    result = serve_once(model)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "does not fit the embodiment manifest" in result.stderr and named in result.stderr, result.stderr
