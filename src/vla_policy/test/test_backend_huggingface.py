"""The Hugging Face backend on a tiny Llava (SigLIP + Llama) built offline and round-tripped through
save_pretrained/from_pretrained; plus OpenVLA's bin arithmetic with known values."""

import numpy as np
import pytest
from vla_common.manifest import EmbodimentManifest, ManifestError
from vla_policy.backends.huggingface import ActionBins, action_bounds
from vla_policy.testing.tiny_llava import PANDA_Q01, PANDA_Q99

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")


def test_openvla_bins_known_values():
    bins = ActionBins(vocab_end=1000, low=np.zeros(2), high=np.full(2, 2.0))
    centers = bins.centers
    assert centers.size == 255
    # id V-1 is bin 1: the lowest centre; id V-256 is bin 256, clipped to the highest centre (OpenVLA).
    np.testing.assert_allclose(bins.decode([999, 744]), [[centers[0] + 1.0, centers[-1] + 1.0]])
    with pytest.raises(ValueError, match="non-action"):
        bins.decode([743, 999])
    with pytest.raises(ValueError, match="whole"):
        bins.decode([999])


def test_bins_round_trip_within_one_bin():
    rng = np.random.default_rng(0)
    low, high = rng.uniform(-2, 0, 8), rng.uniform(0.1, 2, 8)
    bins = ActionBins(32000, low, high)
    actions = rng.uniform(low, high, size=(5, 8))
    back = bins.decode(bins.encode(actions))
    assert np.all(np.abs(back - actions) <= (high - low) * (2.0 / 255) / 2 + 1e-9)


def test_action_bounds_prefer_quantiles_and_check_dims():
    stats = {"min": [0, 0], "max": [1, 1], "q01": [0.1, 0.1], "q99": [0.9, 0.9]}
    low, high, mask = action_bounds(stats, 2)
    np.testing.assert_allclose(low, [0.1, 0.1])
    np.testing.assert_allclose(high, [0.9, 0.9])
    assert mask is None
    with pytest.raises(ManifestError, match="dims"):
        action_bounds(stats, 3)
    with pytest.raises(ManifestError, match="q01/q99 or min/max"):
        action_bounds({"mean": [0, 0]}, 2)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A tiny Llava whose last 256 token ids are action tokens, saved like a hub model (random weights)."""
    pytest.importorskip("transformers")
    from vla_policy.testing.tiny_llava import write_tiny_llava

    path = write_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))
    from transformers import AutoProcessor

    return path, AutoProcessor.from_pretrained(path, local_files_only=True).tokenizer.vocab_size


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "observation.images.front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "observation.state": np.zeros(8, np.float32),
        "task": "Pick up the cube.",
        "timestamp": 12.5,
    }


def test_hf_backend_matches_a_hand_decoded_greedy_pass(tiny_llava):
    import torch
    from vla_policy.backends import BackendKind, load_local_backend

    path, vocab_size = tiny_llava
    loaded = load_local_backend(BackendKind.HUGGINGFACE, str(path))
    assert loaded.manifest.action_names == JOINTS
    policy = loaded.policy
    obs = observation()
    chunk = policy.infer(obs)
    assert chunk.actions.shape == (1, 8)
    assert chunk.names == JOINTS
    assert chunk.stamp == 12.5
    assert chunk.dt == pytest.approx(0.1)
    lo, hi = np.array(PANDA_Q01), np.array(PANDA_Q99)
    assert np.all(chunk.actions >= lo) and np.all(chunk.actions <= hi)

    # The same thing by hand: greedy over the last 256 ids, one token per joint, OpenVLA's decoding.
    processor, model = policy.processor, policy.model
    text = "<image>\nIn: What action should the robot take to pick up the cube?\nOut:"
    inputs = processor(text=text, images=obs["observation.images.front"], return_tensors="pt")
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    tokens = []
    with torch.no_grad():
        for _ in range(8):
            logits = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids)).logits[
                0, -1
            ]
            token = int(torch.argmax(logits[vocab_size - 256 :])) + vocab_size - 256
            tokens.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    edges = np.linspace(-1, 1, 256)
    centers = (edges[:-1] + edges[1:]) / 2
    normalized = centers[np.clip(vocab_size - np.array(tokens) - 1, 0, 254)]
    np.testing.assert_allclose(chunk.actions[0], 0.5 * (normalized + 1) * (hi - lo) + lo, atol=1e-9)


def test_hf_backend_chunks_and_missing_camera(tiny_llava):
    from vla_policy.backends.huggingface import HFConfig, HuggingFacePolicy

    path, _ = tiny_llava
    policy = HuggingFacePolicy(HFConfig(model_dir=str(path), chunk_size=3))
    chunk = policy.infer(observation(1))
    assert chunk.actions.shape == (3, 8)
    with pytest.raises(ValueError, match=r"observation\.images\.front"):
        policy.infer({"task": "pick up the cube"})


def test_hf_backend_refuses_missing_statistics(tiny_llava, tmp_path):
    import shutil

    from vla_policy.backends.huggingface import HFConfig, HuggingFacePolicy

    path, _ = tiny_llava
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    manifest = EmbodimentManifest.load(copy)
    EmbodimentManifest(**{**manifest.__dict__, "normalization": {}, "normalization_hash": ""}).save(
        copy / "embodiment.json"
    )
    with pytest.raises(ManifestError, match="statistics"):
        HuggingFacePolicy(HFConfig(model_dir=str(copy)))
