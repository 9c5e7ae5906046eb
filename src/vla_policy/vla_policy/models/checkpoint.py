"""Checkpoint directory: weights as safetensors, everything else as JSON. No pickle anywhere.

```
<checkpoint>/
  config.json          {"format": ..., "model": ModelConfig, "info": {...training facts...}}
  model.safetensors    trunk + head weights (+ the tokenizer bounds); the text encoder comes from its package
  normalization.json   state/action statistics (must hash to the manifest's normalization_hash)
  embodiment.json      vla_common.manifest.EmbodimentManifest
  encoder.onnx, head.onnx   optional, written by ``vla_policy.export``
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from vla_common.atomic import write_bytes_atomic, write_json_atomic
from vla_common.manifest import CHECKPOINT_MANIFEST_PATH, EmbodimentManifest, ManifestError, stats_hash

from vla_policy.models.config import ModelConfig
from vla_policy.models.networks import VLANetwork
from vla_policy.models.normalization import Normalizer

CHECKPOINT_FORMAT = "vla_policy.checkpoint/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
ENCODER_ONNX = "encoder.onnx"
HEAD_ONNX = "head.onnx"


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or inconsistent."""


@dataclass
class Checkpoint:
    network: VLANetwork
    normalizer: Normalizer
    manifest: EmbodimentManifest
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.network.config


def save_checkpoint(checkpoint: Checkpoint, directory: str | os.PathLike[str]) -> Path:
    """Write a complete checkpoint; every file is written atomically, so a crash leaves the old one intact."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    norm = checkpoint.normalizer.to_dict()
    if checkpoint.manifest.normalization_hash != stats_hash(norm):
        raise CheckpointError("the manifest's normalization statistics are not the model's")
    state = {k: v.detach().cpu().contiguous() for k, v in checkpoint.network.state_dict().items()}
    write_bytes_atomic(out / WEIGHTS_FILE, save(state, metadata={"format": CHECKPOINT_FORMAT}))
    write_json_atomic(
        out / CONFIG_FILE,
        {"format": CHECKPOINT_FORMAT, "model": checkpoint.config.to_dict(), "info": checkpoint.info},
    )
    write_json_atomic(out / NORMALIZATION_FILE, norm)
    checkpoint.manifest.save(out / CHECKPOINT_MANIFEST_PATH)
    for stale in (ENCODER_ONNX, HEAD_ONNX):  # exported graphs belong to the previous weights
        (out / stale).unlink(missing_ok=True)
    return out


def read_config(directory: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, Any]]:
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is not a vla_policy checkpoint: {CONFIG_FILE} is missing"
        ) from None
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: format {data.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return ModelConfig.from_dict(data["model"]), dict(data.get("info", {}))


def load_checkpoint(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Load and cross-check config, weights, statistics and manifest (strict: every tensor must match)."""
    root = Path(directory)
    config, info = read_config(root)
    try:
        manifest = EmbodimentManifest.load(root / CHECKPOINT_MANIFEST_PATH)
    except ManifestError as e:
        raise CheckpointError(f"{root}: {e}") from None
    try:
        norm_data: Mapping[str, Any] = json.loads((root / NORMALIZATION_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{root}: {NORMALIZATION_FILE} is missing") from None
    if stats_hash(norm_data) != manifest.normalization_hash:
        raise CheckpointError(
            f"{root}: {NORMALIZATION_FILE} does not match the manifest's normalization hash"
        )
    normalizer = Normalizer.from_dict(norm_data)
    if len(manifest.action_names) != config.action_dim or len(manifest.joint_names) != config.state_dim:
        raise CheckpointError(
            f"{root}: manifest has {len(manifest.joint_names)} joints / {len(manifest.action_names)} actions, "
            f"model expects {config.state_dim} / {config.action_dim}"
        )
    network = VLANetwork(config, load_pretrained=False)  # every weight comes from the file below
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{root}: {WEIGHTS_FILE} is missing")
    state = load_file(str(weights), device="cpu")
    result = network.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{root}: weights do not fit the config (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    network.to(device).eval()
    return Checkpoint(network=network, normalizer=normalizer, manifest=manifest, info=info)
