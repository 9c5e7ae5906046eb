"""The Hugging Face backend on a tiny Llava (SigLIP + Llama) built offline and round-tripped through
save_pretrained/from_pretrained; plus OpenVLA's bin arithmetic with known values."""

import numpy as np
import pytest
from vla_collector.manifest import ActionType, CameraSpec, EmbodimentManifest, ManifestError
from vla_policy.backends.huggingface import ActionBins, action_bounds

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")
WORDS = [
    "in",
    "what",
    "action",
    "should",
    "the",
    "robot",
    "take",
    "to",
    "pick",
    "up",
    "push",
    "cube",
    "left",
    "?",
    "out",
    ":",
]


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
    """A tiny Llava with a word-level tokenizer whose last 256 ids are action tokens, saved like a hub model."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", *WORDS]
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f"<act_{i}>": len(words) + i for i in range(256)})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_seq_length=16,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=fast,
        patch_size=8,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )
    path = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    stats = {"q01": [-1.0] * 7 + [0.0], "q99": [1.0] * 7 + [0.04], "min": [-2.0] * 8, "max": [2.0] * 8}
    EmbodimentManifest(
        robot_type="panda",
        joint_names=JOINTS,
        action_names=JOINTS,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=(CameraSpec("front", 48, 64),),
        normalization={"action": stats},
    ).save(path / "embodiment.json")
    return path, len(vocab)


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
    lo, hi = np.array([-1.0] * 7 + [0.0]), np.array([1.0] * 7 + [0.04])
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
