"""The Hugging Face backend: a transformers image-text-to-text VLA with OpenVLA-style action tokens.

The model directory holds what ``save_pretrained`` writes for the model and its processor, plus the
embodiment manifest (``embodiment.json``) whose ``normalization["action"]`` statistics un-normalize the
actions: no ``unnorm_key`` to guess. Loaded with ``AutoModelForImageTextToText`` and ``AutoProcessor`` from
local files only, never with remote code.

Action tokens follow OpenVLA: the last ``n_bins`` ids of the tokenizer's base vocabulary; id ``V - b`` is bin
``b`` (1..n_bins) of ``linspace(-1, 1, n_bins)``, decoded to the bin centre, then mapped from [-1, 1] to
[q01, q99] (or [min, max] when the statistics have no quantiles). Decoding is greedy and constrained to action
tokens, so a model can only answer with actions. ``chunk_size`` > 1 reads H * D tokens as an OFT-style chunk.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vla_common.features import ACTION_KEY, image_key
from vla_common.manifest import EmbodimentManifest, ManifestError
from vla_common.policy import ActionChunk, Observation

DEFAULT_PROMPT = "In: What action should the robot take to {task}?\nOut:"


@dataclass(frozen=True)
class HFConfig:
    model_dir: str
    device: str = "cpu"
    prompt: str = DEFAULT_PROMPT  # {task} is replaced by the instruction
    chunk_size: int = 1  # actions per inference: OpenVLA 1, OFT-style chunks more
    n_bins: int = 256
    camera: str = ""  # the camera the model sees; default: the manifest's first

    def __post_init__(self) -> None:
        if not Path(self.model_dir).is_dir():
            raise ValueError(f"Hugging Face model directory {self.model_dir!r} does not exist")
        if "{task}" not in self.prompt:
            raise ValueError("the prompt must contain {task}")
        if self.chunk_size < 1 or self.n_bins < 2:
            raise ValueError("chunk_size must be >= 1 and n_bins >= 2")


@dataclass(frozen=True)
class ActionBins:
    """OpenVLA's discretization: token ids <-> actions, with the manifest's statistics."""

    vocab_end: int  # tokenizer's base vocabulary size: action ids are [vocab_end - n_bins, vocab_end)
    low: np.ndarray  # [D] un-normalized value of -1
    high: np.ndarray  # [D] un-normalized value of +1
    n_bins: int = 256
    mask: np.ndarray | None = None  # [D] False: that dimension is not normalized (OpenVLA's gripper)

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, float), np.asarray(self.high, float)
        if low.shape != high.shape or low.ndim != 1:
            raise ValueError(f"low/high must be [D] of equal length, got {low.shape} and {high.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high >= low)):
            raise ValueError("action statistics must be finite with high >= low")
        if self.vocab_end < self.n_bins:
            raise ValueError(f"vocabulary of {self.vocab_end} cannot hold {self.n_bins} action tokens")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask, bool).reshape(low.shape))

    @property
    def first_id(self) -> int:
        return self.vocab_end - self.n_bins

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(-1.0, 1.0, self.n_bins)
        return (edges[:-1] + edges[1:]) / 2.0

    def decode(self, token_ids: Sequence[int]) -> np.ndarray:
        """[H * D] token ids -> [H, D] actions in dataset units."""
        ids = np.asarray(token_ids, dtype=np.int64)
        dims = self.low.size
        if ids.size == 0 or ids.size % dims:
            raise ValueError(f"{ids.size} action tokens do not make whole {dims}-d actions")
        if np.any((ids < self.first_id) | (ids >= self.vocab_end)):
            raise ValueError(f"the model answered with non-action tokens: {ids.tolist()}")
        bins = np.clip(self.vocab_end - ids - 1, 0, self.centers.size - 1)
        normalized = self.centers[bins].reshape(-1, dims)
        actions = 0.5 * (normalized + 1.0) * (self.high - self.low) + self.low
        if self.mask is not None:
            actions = np.where(self.mask, actions, normalized)
        return actions

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """[H, D] actions -> [H * D] token ids (the training side; round trip within one bin)."""
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        normalized = np.clip(2.0 * (np.asarray(actions, float) - self.low) / span - 1.0, -1.0, 1.0)
        if self.mask is not None:
            normalized = np.where(self.mask, normalized, np.clip(actions, -1.0, 1.0))
        digitized = np.digitize(normalized, np.linspace(-1.0, 1.0, self.n_bins))
        return (self.vocab_end - digitized).reshape(-1)


def action_bounds(stats: Mapping[str, Any], dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(low, high, mask) from a manifest's ``normalization["action"]``: q01/q99 if present, else min/max."""
    for low_key, high_key in (("q01", "q99"), ("min", "max")):
        if low_key in stats and high_key in stats:
            low = np.asarray(stats[low_key], float).reshape(-1)
            high = np.asarray(stats[high_key], float).reshape(-1)
            if low.size != dims or high.size != dims:
                raise ManifestError(
                    f"action statistics have {low.size} dims, the manifest names {dims} actions"
                )
            mask = np.asarray(stats["mask"], bool) if "mask" in stats else None
            return low, high, mask
    raise ManifestError("the manifest's action statistics need q01/q99 or min/max to un-normalize bins")


class HuggingFacePolicy:
    """Policy protocol over a local transformers image-text-to-text model."""

    def __init__(self, config: HFConfig) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.config = config
        self.manifest = EmbodimentManifest.load(config.model_dir)
        if not self.manifest.cameras:
            raise ManifestError("the manifest names no camera: an image-text-to-text model needs one")
        names = [c.name for c in self.manifest.cameras]
        self.camera = config.camera or names[0]
        if self.camera not in names:
            raise ManifestError(f"camera {self.camera!r} is not in the manifest's cameras {names}")
        dims = len(self.manifest.action_names)
        low, high, mask = action_bounds(self.manifest.normalization.get(ACTION_KEY, {}), dims)
        # Local files only, and never code from the model directory.
        self.processor = AutoProcessor.from_pretrained(
            config.model_dir, local_files_only=True, trust_remote_code=False
        )
        self.model = AutoModelForImageTextToText.from_pretrained(
            config.model_dir, local_files_only=True, trust_remote_code=False
        )
        self.model.eval().to(config.device)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"the processor in {config.model_dir} has no tokenizer")
        self.bins = ActionBins(int(tokenizer.vocab_size), low, high, config.n_bins, mask)
        vocab_out = int(self.model.get_output_embeddings().weight.shape[0])
        if vocab_out < self.bins.vocab_end:
            raise ValueError(f"the model's {vocab_out} output ids do not cover the action tokens")
        self._torch = torch
        self._image_token = getattr(self.processor, "image_token", None)
        self._n_tokens = config.chunk_size * dims
        self._dt = 1.0 / self.manifest.fps

    def reset(self) -> None:
        """OpenVLA-style models keep no state between steps."""

    def prompt(self, task: str) -> str:
        text = self.config.prompt.format(task=task.strip().lower().rstrip("."))
        if self._image_token and self._image_token not in text:
            text = f"{self._image_token}\n{text}"
        return text

    def infer(self, observation: Observation) -> ActionChunk:
        torch = self._torch
        key = image_key(self.camera)
        if key not in observation:
            raise ValueError(f"observation lacks {key}")
        image = np.asarray(observation[key])
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{key} must be HxWx3 uint8, got {image.dtype} {image.shape}")
        inputs = self.processor(
            text=self.prompt(str(observation.get("task", ""))), images=image, return_tensors="pt"
        )
        inputs = inputs.to(self.config.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self._n_tokens,
                min_new_tokens=self._n_tokens,
                do_sample=False,
                logits_processor=[_OnlyActionTokens(self.bins.first_id, self.bins.vocab_end)],
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
        actions = self.bins.decode(tokens[: self._n_tokens])
        stamp = float(observation.get("timestamp", 0.0))
        return ActionChunk(
            actions, self.manifest.action_names, stamp if math.isfinite(stamp) else 0.0, self._dt
        )


class _OnlyActionTokens:
    """A logits processor: everything outside [first, end) is -inf, so greedy decoding emits action tokens."""

    def __init__(self, first: int, end: int) -> None:
        self.first, self.end = first, end

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        masked = scores.clone()
        masked[:, : self.first] = -math.inf
        masked[:, self.end :] = -math.inf
        return masked
