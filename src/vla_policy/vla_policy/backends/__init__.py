"""Policy backends behind :class:`vla_common.policy.Policy`, each with the embodiment manifest it was made for.

* ``native``: a checkpoint of our own model, through ``vla_policy.load_policy`` (issue 7).
* ``huggingface``: a transformers image-text-to-text VLA (OpenVLA-style action tokens) from a local directory.
* ``remote``: a policy served by ``vla-serve`` on another machine, over websocket.
* ``lerobot``: a LeRobot-trained policy through LeRobot's own API; only in ``vla-serve`` in the LeRobot venv
  (``scripts/setup-lerobot.sh``), which the node reaches as ``remote``.

Heavy imports (torch, transformers, websockets) happen inside the loaders, so importing this is cheap.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np
from vla_common.features import STATE_KEY
from vla_common.manifest import EmbodimentManifest
from vla_common.policy import Policy

from vla_policy.backends.errors import InferenceTimeout, InferenceUnavailable

__all__ = [
    "BackendKind",
    "InferenceTimeout",
    "InferenceUnavailable",
    "LoadedPolicy",
    "load_local_backend",
    "load_remote_backend",
    "warm_up",
]


class BackendKind(str, enum.Enum):
    NATIVE = "native"
    HUGGINGFACE = "huggingface"
    REMOTE = "remote"
    LEROBOT = "lerobot"  # vla-serve only, in LeRobot's venv


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    manifest: EmbodimentManifest
    description: str  # one line for logs: backend and where the model came from


def load_local_backend(
    kind: BackendKind,
    model_dir: str,
    device: str = "cpu",
    hf_chunk_size: int = 1,
    *,
    manifest: str | None = None,
    actions_per_chunk: int = 0,
) -> LoadedPolicy:
    """A policy that runs in this process (native checkpoint, Hugging Face or LeRobot directory).
    ``manifest`` and ``actions_per_chunk``: the LeRobot backend's (see :func:`~vla_policy.backends.lerobot.load_lerobot`)."""
    kind = BackendKind(kind)
    if kind is BackendKind.NATIVE:
        from vla_policy.backends.native import load_native

        return load_native(model_dir, device=device)
    if kind is BackendKind.HUGGINGFACE:
        from vla_policy.backends.huggingface import HFConfig, HuggingFacePolicy

        policy = HuggingFacePolicy(HFConfig(model_dir=model_dir, device=device, chunk_size=hf_chunk_size))
        return LoadedPolicy(policy, policy.manifest, f"huggingface model {model_dir}")
    if kind is BackendKind.LEROBOT:
        from vla_policy.backends.lerobot import load_lerobot

        return load_lerobot(model_dir, device=device, manifest=manifest, actions_per_chunk=actions_per_chunk)
    raise ValueError(f"{kind.value} is not a local backend")


def load_remote_backend(uri: str, token: str, timeout_s: float, image_encoding: str = "raw") -> LoadedPolicy:
    """Connect to ``vla-serve`` and fetch the served model's manifest (raises if unreachable)."""
    from vla_policy.backends.remote import RemoteConfig, RemotePolicy

    policy = RemotePolicy(RemoteConfig(uri=uri, timeout_s=timeout_s, image_encoding=image_encoding), token)
    return LoadedPolicy(policy, policy.manifest(), f"remote policy at {uri}")


def warmup_observation(manifest: EmbodimentManifest) -> dict[str, object]:
    """A neutral observation shaped like the manifest's inputs."""
    observation: dict[str, object] = {
        c.feature_key: np.zeros((c.height, c.width, 3), np.uint8) for c in manifest.cameras
    }
    observation[STATE_KEY] = np.zeros(len(manifest.joint_names), np.float32)
    observation["task"] = "warm up"
    observation["timestamp"] = 0.0
    return observation


def warm_up(loaded: LoadedPolicy) -> float:
    """Run the model once on neutral input, then reset it: the first call of a torch model is several times
    slower than the rest, and must not be the first real one. Its chunk is thrown away. Returns seconds."""
    started = time.monotonic()
    loaded.policy.infer(warmup_observation(loaded.manifest))
    loaded.policy.reset()
    return time.monotonic() - started
