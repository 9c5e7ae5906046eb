"""The LeRobot backend: a LeRobot-trained policy (ACT, Diffusion Policy, SmolVLA, pi0, ...) loaded with LeRobot's
own API, for ``vla-serve --backend lerobot --model <pretrained dir>``.

LeRobot 0.6 needs Python >= 3.12 and its own torch, so this runs in the venv ``scripts/setup-lerobot.sh``
makes, never in the policy node's: the node reaches it with ``backend:=remote``. The directory is what
``lerobot-train`` writes as ``checkpoints/<step>/pretrained_model`` (or ``save_pretrained``): ``config.json``,
``model.safetensors`` and the processor pipelines saved beside them (``policy_preprocessor.json``,
``policy_postprocessor.json`` and their statistics). It loads them as LeRobot's own inference does
(``get_policy_class(type).from_pretrained``, ``make_pre_post_processors(pretrained_path=...)``), then
``predict_action_chunk`` (after filling the observation queues of the policies that keep them, as LeRobot's
``select_action`` does). Safetensors and JSON only: nothing is unpickled.

The joints, units, rate and cameras come from our embodiment manifest (:func:`find_manifest`); the mapping and
its checks are :mod:`vla_policy.backends.lerobot_io`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from vla_common.manifest import (
    CHECKPOINT_MANIFEST_PATH,
    DATASET_MANIFEST_PATH,
    EmbodimentManifest,
    ManifestError,
)

from vla_policy.backends import LoadedPolicy
from vla_policy.backends.lerobot_io import LeRobotPolicy, features_from_config, plan_io

LOG = logging.getLogger("vla_serve")
PREPROCESSOR = "policy_preprocessor.json"  # LeRobot's POLICY_PREPROCESSOR_DEFAULT_NAME + .json
POSTPROCESSOR = "policy_postprocessor.json"
SETUP_HINT = "run scripts/setup-lerobot.sh and serve from its venv (.venv-lerobot/bin/vla-serve)"
# LeRobot 0.6.1 policies whose predict_action_chunk reads observation queues that only their select_action
# fills (Diffusion Policy, Multi-Task DiT, VQ-BeT): the server fills them as select_action does.
QUEUED_POLICIES = frozenset({"diffusion", "multi_task_dit", "vqbet"})


def find_manifest(
    model_dir: str | Path, manifest: str | Path | None = None
) -> tuple[EmbodimentManifest, Path]:
    """The embodiment manifest for a LeRobot policy, and where it was found: ``manifest`` (a manifest file, a
    dataset root or a checkpoint directory) if given; else ``<model_dir>/embodiment.json``; else the dataset
    ``lerobot-train`` trained on (``train_config.json``'s ``dataset.root``) when it is one of ours."""
    model = Path(model_dir)
    if manifest:
        return EmbodimentManifest.load(manifest), Path(manifest)
    candidates = [model / CHECKPOINT_MANIFEST_PATH]
    train_config = model / "train_config.json"
    if train_config.is_file():
        try:
            root = (json.loads(train_config.read_text()).get("dataset") or {}).get("root")
        except (json.JSONDecodeError, AttributeError):
            root = None
        if root:
            candidates.append(Path(root) / DATASET_MANIFEST_PATH)
    for candidate in candidates:
        if candidate.is_file():
            return EmbodimentManifest.load(candidate), candidate
    raise ManifestError(
        f"no embodiment manifest for the LeRobot policy in {model} (looked for {[str(c) for c in candidates]}): "
        "a LeRobot config names no joints, units or rate; pass --manifest <our dataset root or embodiment.json> "
        "or copy the dataset's meta/embodiment.json into the model directory"
    )


def load_lerobot(
    model_dir: str, *, device: str = "cpu", manifest: str | None = None, actions_per_chunk: int = 0
) -> LoadedPolicy:
    """Load and check a LeRobot pretrained directory; raise ``ValueError`` / ``ManifestError`` /
    ``RuntimeError`` saying what is wrong (the features are checked before any weights are read)."""
    path = Path(model_dir)
    raw = _read_pretrained_dir(path)
    embodiment, source = find_manifest(path, manifest)
    # The features from the file first: a mismatch is refused before torch or LeRobot load anything.
    plan_io(
        embodiment,
        features_from_config(raw.get("input_features") or {}),
        features_from_config(raw.get("output_features") or {}),
        actions_per_chunk=max(actions_per_chunk, 0),
        n_obs_steps=int(raw.get("n_obs_steps") or 1),
    )
    policy, preprocessor, postprocessor, rename = _load_with_lerobot(path, device)
    config = policy.config
    per_chunk = actions_per_chunk if actions_per_chunk > 0 else int(getattr(config, "n_action_steps", 0) or 0)
    io = plan_io(
        embodiment,
        features_from_config(config.input_features),
        features_from_config(config.output_features),
        rename_map=rename,
        actions_per_chunk=per_chunk,
        n_obs_steps=int(getattr(config, "n_obs_steps", 1) or 1),
    )

    def reset() -> None:
        policy.reset()
        preprocessor.reset()
        postprocessor.reset()

    description = f"LeRobot {config.type} policy {path} (manifest {source})"
    LOG.info(
        "%s: %d camera(s) %s, chunk %s, serving %s actions per chunk at %.1f Hz",
        description,
        len(io.cameras),
        [c[0] for c in io.cameras],
        getattr(config, "chunk_size", None) or getattr(config, "horizon", None),
        io.actions_per_chunk or "all",
        io.manifest.fps,
    )
    run = _make_run(policy, preprocessor, postprocessor, device)
    return LoadedPolicy(LeRobotPolicy(io, run, reset, description), io.manifest, description)


def _read_pretrained_dir(path: Path) -> dict[str, Any]:
    """``config.json`` of a LeRobot pretrained directory, after checking its processors are beside it."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a LeRobot pretrained directory: no config.json")
    missing = [name for name in (PREPROCESSOR, POSTPROCESSOR) if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"{path} has no {missing}: LeRobot >= 0.4 saves its processors (normalization) beside the "
            "policy; a policy from an older LeRobot needs lerobot's migrate_policy_normalization first"
        )
    return dict(json.loads(config_file.read_text()))


def _load_with_lerobot(path: Path, device: str) -> tuple[Any, Any, Any, dict[str, str]]:
    """The policy and its pre/post-processors as LeRobot's own inference loads them, and the preprocessor's
    renaming of observation keys (ours -> the policy's)."""
    try:
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors
        from lerobot.processor import RenameObservationsProcessorStep
    except ImportError as e:
        raise RuntimeError(
            f"the lerobot backend needs LeRobot 0.6 in this Python ({e}); {SETUP_HINT}"
        ) from None

    config = PreTrainedConfig.from_pretrained(str(path))
    config.device = device
    policy = get_policy_class(config.type).from_pretrained(str(path), config=config)
    policy.eval()
    override = {"device": device}
    preprocessor, postprocessor = make_pre_post_processors(
        policy.config,
        pretrained_path=str(path),
        preprocessor_overrides={"device_processor": override},
        postprocessor_overrides={"device_processor": override},
    )
    rename: dict[str, str] = {}
    for step in preprocessor.steps:
        if isinstance(step, RenameObservationsProcessorStep):
            rename.update(step.rename_map)
    return policy, preprocessor, postprocessor, rename


def _make_run(policy: Any, preprocessor: Any, postprocessor: Any, device: str) -> Callable[..., np.ndarray]:
    """:class:`LeRobotPolicy`'s ``run``: the raw batch through the preprocessor, one chunk predicted, each
    action through the postprocessor (un-normalization), as LeRobot's own policy server does."""
    import torch

    target = torch.device(device)
    queued = policy.config.type in QUEUED_POLICIES

    def run(batch: dict[str, Any]) -> np.ndarray:
        tensors = {
            k: torch.from_numpy(v).to(target) if isinstance(v, np.ndarray) else v for k, v in batch.items()
        }
        with torch.inference_mode():
            processed = preprocessor(tensors)
            if queued:
                processed = _fill_observation_queues(policy, processed)
            chunk = policy.predict_action_chunk(processed)
            if chunk.ndim == 2:
                chunk = chunk.unsqueeze(0)
            actions = torch.stack([postprocessor(chunk[:, i, :]) for i in range(chunk.shape[1])], dim=1)
        return actions.detach().to("cpu", torch.float64).numpy()

    return run


def _fill_observation_queues(policy: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """What LeRobot's ``select_action`` does before it predicts, for :data:`QUEUED_POLICIES`: ``action``
    dropped, the cameras stacked under ``observation.images``, then each queued observation key appended to
    the policy's queue (LeRobot's ``populate_queues``, which copies a first observation until the queue is
    full). Their ``predict_action_chunk`` reads the queues; run on empty ones it takes the batch for a training
    batch (``[B, n_obs_steps, ...]``) and Diffusion's ``assert n_obs_steps == self.config.n_obs_steps`` fails.
    With ``n_obs_steps`` 1 (all :func:`plan_io` serves) the queues hold exactly this observation."""
    import torch
    from lerobot.policies.utils import populate_queues
    from lerobot.utils.constants import ACTION, OBS_IMAGES

    batch = dict(batch)
    batch.pop(ACTION, None)  # the preprocessor's batch has an empty one; select_action drops it too
    image_keys = list(policy.config.image_features)
    if image_keys:
        batch[OBS_IMAGES] = torch.stack([batch[key] for key in image_keys], dim=-4)
    policy._queues = populate_queues(policy._queues, batch)
    return batch
