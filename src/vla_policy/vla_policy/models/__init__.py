"""The native VLA and the textbook baseline: config, encoders, networks, tokenizer, checkpoints, policy."""

from vla_policy.models.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from vla_policy.models.config import ImageEncoderKind, ModelConfig, PolicyKind, TextEncoderKind
from vla_policy.models.networks import VLANetwork
from vla_policy.models.normalization import FeatureStats, Normalizer
from vla_policy.models.policy import ActionDecoding, NativePolicy, Runtime, load_policy
from vla_policy.models.tokenizer import ActionTokenizer

__all__ = [
    "ActionDecoding",
    "ActionTokenizer",
    "Checkpoint",
    "CheckpointError",
    "FeatureStats",
    "ImageEncoderKind",
    "ModelConfig",
    "NativePolicy",
    "Normalizer",
    "PolicyKind",
    "Runtime",
    "TextEncoderKind",
    "VLANetwork",
    "load_checkpoint",
    "load_policy",
    "save_checkpoint",
]
