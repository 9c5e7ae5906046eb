"""The remote backend against a real vla-serve PolicyServer over a localhost websocket."""

import socket
import threading
import time

import numpy as np
import pytest
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.policy import ActionChunk
from vla_policy.backends import InferenceTimeout, InferenceUnavailable, load_remote_backend
from vla_policy.backends.remote import RemoteConfig, RemotePolicy
from vla_policy.backends.wire import RemoteError
from vla_policy.serve import PolicyServer

NAMES = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")
TOKEN = "s3cret-token"


def manifest():
    return EmbodimentManifest(
        robot_type="panda",
        joint_names=NAMES,
        action_names=NAMES,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=(CameraSpec("front", 48, 64),),
    )


class EchoPolicy:
    """A deterministic policy whose chunk depends on every observation field, so the round trip is checked."""

    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s
        self.seen = []
        self.resets = 0

    def reset(self):
        self.resets += 1

    def infer(self, observation):
        self.seen.append(observation)
        time.sleep(self.delay_s)
        if observation["task"] == "explode":
            raise RuntimeError("model blew up")
        state = np.asarray(observation["observation.state"], dtype=float)
        brightness = float(np.mean(observation["observation.images.front"])) / 255.0
        actions = state[None, :] + brightness + 0.01 * np.arange(5)[:, None]
        return ActionChunk(actions, NAMES, observation["timestamp"], 0.1)


def observation(seed=0, task="pick up the cube"):
    rng = np.random.default_rng(seed)
    return {
        "observation.images.front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=8).astype(np.float32),
        "task": task,
        "timestamp": 1234.5 + seed,
    }


@pytest.fixture
def served():
    policy = EchoPolicy()
    with PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        yield policy, server


def client(server, **kw):
    return RemotePolicy(RemoteConfig(uri=f"ws://127.0.0.1:{server.port}", **kw), TOKEN)


def test_round_trip_raw_images_are_exact(served):
    policy, server = served
    remote = client(server)
    obs = observation()
    chunk = remote.infer(obs)
    seen = policy.seen[-1]
    np.testing.assert_array_equal(seen["observation.images.front"], obs["observation.images.front"])
    np.testing.assert_array_equal(seen["observation.state"], obs["observation.state"].astype(np.float64))
    assert seen["task"] == "pick up the cube"
    assert seen["timestamp"] == 1234.5
    expected = policy.infer(obs)
    np.testing.assert_array_equal(chunk.actions, expected.actions)
    assert chunk.names == NAMES
    assert chunk.stamp == 1234.5
    assert chunk.dt == 0.1
    remote.close()


def test_jpeg_images_are_close_and_smaller(served):
    from vla_policy.backends.wire import ImageEncoding, encode, observation_message

    policy, server = served
    remote = client(server, image_encoding="jpeg", jpeg_quality=95)
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    obs = {**observation(), "observation.images.front": smooth}
    remote.infer(obs)
    received = policy.seen[-1]["observation.images.front"]
    assert received.shape == smooth.shape
    assert np.abs(received.astype(int) - smooth.astype(int)).mean() < 3.0
    raw = encode(observation_message(obs, 1), ImageEncoding.RAW)
    jpeg = encode(observation_message(obs, 1), ImageEncoding.JPEG)
    assert len(jpeg) < len(raw) / 3
    remote.close()


def test_manifest_and_reset_cross_the_wire(served):
    policy, server = served
    loaded = load_remote_backend(f"ws://127.0.0.1:{server.port}", TOKEN, timeout_s=2.0)
    assert loaded.manifest == manifest()
    loaded.policy.reset()
    assert policy.resets == 1
    loaded.policy.close()


def test_wrong_token_is_refused_before_the_model(served):
    policy, server = served
    bad = RemotePolicy(RemoteConfig(uri=f"ws://127.0.0.1:{server.port}"), "wrong")
    with pytest.raises(PermissionError, match="refused the token"):
        bad.infer(observation())
    assert policy.seen == []
    assert server.rejected_connections == 1


def test_no_token_is_refused_on_both_sides():
    with pytest.raises(ValueError, match="token"):
        RemotePolicy(RemoteConfig(), "")
    with pytest.raises(ValueError, match="token"):
        PolicyServer(EchoPolicy(), manifest(), "")


def test_timeout_means_no_chunk_and_late_answers_are_discarded():
    policy = EchoPolicy(delay_s=0.4)
    with PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        remote = client(server, timeout_s=0.1)
        start = time.monotonic()
        with pytest.raises(InferenceTimeout):
            remote.infer(observation(seed=1))
        assert time.monotonic() - start < 0.35  # gave up at the timeout, did not wait for the model
        policy.delay_s = 0.0
        remote.config = RemoteConfig(uri=remote.config.uri, timeout_s=2.0)
        chunk = remote.infer(observation(seed=2))
        # The late answer to seed 1 arrived first and was dropped: this is seed 2's chunk.
        assert chunk.stamp == 1234.5 + 2
        remote.close()


def test_unreachable_server_is_unavailable_not_a_crash():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    remote = RemotePolicy(RemoteConfig(uri=f"ws://127.0.0.1:{port}", connect_timeout_s=0.5), TOKEN)
    with pytest.raises(InferenceUnavailable):
        remote.infer(observation())


def test_model_errors_come_back_as_remote_errors(served):
    _, server = served
    remote = client(server)
    with pytest.raises(RemoteError, match="model blew up"):
        remote.infer(observation(task="explode"))
    assert remote.infer(observation()).horizon == 5  # the connection survives
    remote.close()


def test_lost_connection_reconnects():
    policy = EchoPolicy()
    server = PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=0).start()
    port = server.port
    remote = client(server)
    remote.infer(observation())
    server.close()
    with pytest.raises(InferenceUnavailable):
        remote.infer(observation())
    with PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=port):
        assert remote.infer(observation()).horizon == 5
    remote.close()


def test_concurrent_clients_are_served():
    policy = EchoPolicy(delay_s=0.01)
    with PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        results = []

        def run(seed):
            remote = client(server, timeout_s=5.0)
            results.append(remote.infer(observation(seed)).stamp)
            remote.close()

        threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results) == [1234.5 + s for s in range(4)]
