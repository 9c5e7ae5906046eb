"""The native backend: a tiny checkpoint trained for one epoch by vla-train, loaded through load_policy."""

import shutil

import numpy as np
import pytest
from vla_common.manifest import CameraSpec, EmbodimentManifest, ManifestError
from vla_policy.backends import BackendKind, LoadedPolicy, load_local_backend


def train_tiny_checkpoint(root, horizon=8):
    """One epoch of the tiny recipe on a generated dataset: a real checkpoint in a few seconds."""
    from vla_policy.testing.synthetic import write_synthetic_dataset
    from vla_policy.train import TINY_MODEL, TrainConfig, train

    dataset = write_synthetic_dataset(
        root / "dataset", episodes=2, frames=8, cameras=(CameraSpec("front", 48, 64),)
    )
    result = train(
        TrainConfig(
            datasets=(str(dataset),),
            output=str(root / "run"),
            epochs=1,
            batch_size=8,
            warmup_steps=1,
            val_fraction=0.5,
            augmented_copies=0,
            seed=0,
            device="cpu",
            progress=False,
            model_overrides=dict(TINY_MODEL, horizon=horizon),
        )
    )
    return result.best


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_tiny_checkpoint(tmp_path_factory.mktemp("native"))


def observation():
    return {
        "observation.images.front": np.full((48, 64, 3), 90, np.uint8),
        "observation.state": np.linspace(-0.5, 0.5, 8).astype(np.float32),
        "task": "pick up the red cube",
        "timestamp": 42.0,
    }


def test_native_backend_loads_checkpoint_and_manifest(checkpoint):
    loaded = load_local_backend(BackendKind.NATIVE, str(checkpoint))
    assert isinstance(loaded, LoadedPolicy)
    assert loaded.manifest == EmbodimentManifest.load(checkpoint)
    chunk = loaded.policy.infer(observation())
    assert chunk.actions.shape == (8, 8)
    assert chunk.names == loaded.manifest.action_names
    assert chunk.stamp == 42.0
    assert chunk.dt == pytest.approx(1 / loaded.manifest.fps)
    loaded.policy.reset()
    np.testing.assert_allclose(loaded.policy.infer(observation()).actions, chunk.actions, atol=1e-6)


def test_native_backend_without_manifest_is_refused(checkpoint, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint, copy)
    (copy / "embodiment.json").unlink()
    with pytest.raises(ManifestError, match="no embodiment manifest"):
        load_local_backend(BackendKind.NATIVE, str(copy))


def test_remote_is_not_a_local_backend():
    with pytest.raises(ValueError, match="not a local backend"):
        load_local_backend(BackendKind.REMOTE, "/nowhere")


def test_isolated_process_serves_the_same_chunks_and_dies_with_its_owner(checkpoint):
    from vla_policy.backends import InferenceUnavailable
    from vla_policy.backends.isolated import start_isolated_backend

    local = load_local_backend(BackendKind.NATIVE, str(checkpoint))
    isolated = start_isolated_backend(BackendKind.NATIVE, str(checkpoint), timeout_s=10.0)
    try:
        assert isolated.manifest == local.manifest
        np.testing.assert_allclose(
            isolated.policy.infer(observation()).actions, local.policy.infer(observation()).actions, atol=1e-5
        )
        process = isolated.policy.process
        assert isolated.policy.alive()
    finally:
        isolated.policy.close()
    assert process.poll() is not None  # closing the client ends the child
    with pytest.raises(InferenceUnavailable, match="exited"):
        isolated.policy.infer(observation())


def test_isolated_process_with_a_bad_model_fails_to_start(tmp_path):
    from vla_policy.backends.isolated import start_isolated_backend

    with pytest.raises(RuntimeError, match="exited with code 2 before it was ready"):
        start_isolated_backend(BackendKind.NATIVE, str(tmp_path))
