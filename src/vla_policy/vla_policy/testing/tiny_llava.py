"""A tiny Llava-style VLA (SigLIP vision + Llama text) built offline from configs, for tests and benchmarks.

Random weights, a word-level tokenizer whose last 256 ids are OpenVLA action tokens, saved with
``save_pretrained`` beside an embodiment manifest: a directory the Hugging Face backend loads exactly like a
downloaded model. Nothing is fetched from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.robots import PANDA_COMMAND_JOINTS

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
    "put",
    "the",
    "a",
    "cube",
    "block",
    "red",
    "green",
    "blue",
    "left",
    "right",
    "on",
    "?",
    ":",
    "out",
]
# Panda joint ranges (rad, finger in m) as un-normalization bounds: q01 / q99 of a plausible dataset.
PANDA_Q01 = (-2.8, -1.7, -2.8, -3.0, -2.8, 0.0, -2.8, 0.0)
PANDA_Q99 = (2.8, 1.7, 2.8, -0.1, 2.8, 3.7, 2.8, 0.04)


def write_tiny_llava(
    directory: str | Path,
    *,
    hidden_size: int = 32,
    layers: int = 1,
    image_size: int = 32,
    seed: int = 0,
    joints: Sequence[str] = PANDA_COMMAND_JOINTS,
    camera: str = "front",
    fps: float = 10.0,
) -> Path:
    import torch
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

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", *WORDS]
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f"<act_{i}>": len(words) + i for i in range(256)})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    heads = max(2, hidden_size // 32)
    patch = 8
    vision = SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch,
    )
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_seq_length=(image_size // patch) ** 2,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).eval().save_pretrained(path)
    LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=fast,
        patch_size=patch,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    ).save_pretrained(path)
    dims = len(joints)
    q01 = list(PANDA_Q01[:dims]) if tuple(joints) == PANDA_COMMAND_JOINTS else [-1.0] * dims
    q99 = list(PANDA_Q99[:dims]) if tuple(joints) == PANDA_COMMAND_JOINTS else [1.0] * dims
    EmbodimentManifest(
        robot_type="panda" if tuple(joints) == PANDA_COMMAND_JOINTS else "tiny",
        joint_names=tuple(joints),
        action_names=tuple(joints),
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=fps,
        cameras=(CameraSpec(camera, image_size, image_size),),
        joint_units=tuple("m" if "finger" in j else "rad" for j in joints),
        normalization={"action": {"q01": q01, "q99": q99, "min": q01, "max": q99}},
    ).save(path / "embodiment.json")
    return path
