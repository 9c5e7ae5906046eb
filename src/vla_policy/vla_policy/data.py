"""LeRobot v3 datasets -> training samples for the native VLA and the textbook baseline.

Datasets are read only through ``vla_collector.lerobot.LeRobotV3Dataset``; images go through
``vla_perception.preprocess`` exactly as at inference (random crop in training, its centred twin at
inference), with a colour jitter applied to the raw frame first.

Training time is part of the design: every frame is decoded once. The native VLA caches the resized pixels
as uint8 (it shifts them itself in training); the textbook baseline's frozen trunk encodes every frame once
per *augmented copy* (copy 0 is the clean inference view, copies 1..n are jittered and randomly cropped) and
its feature maps are cached in float16, so an epoch only runs the trainable head.

A sample at frame ``t`` of an episode: the camera features, the instruction embedding, the normalized state
``s_t``, the normalized action chunk ``a_t .. a_{t+H-1}`` and a mask of the steps that exist (past the episode
end the last action is repeated as a placeholder but masked out of the loss, as ACT does: demonstrations end
at success, so "hold still" targets would teach the policy to stop short of the goal).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.manifest import EmbodimentManifest
from vla_perception.preprocess import preprocess

from vla_policy.models.config import ModelConfig, PolicyKind
from vla_policy.models.networks import VLANetwork
from vla_policy.models.normalization import FeatureStats, Normalizer

EpisodeRef = tuple[int, int]  # (dataset position in the list, episode index within it)


class DataError(ValueError):
    """Datasets cannot be trained on together, or do not fit a model."""


def open_datasets(roots: Sequence[str | Path]) -> tuple[list[LeRobotV3Dataset], EmbodimentManifest]:
    """Open one or more datasets and check they describe the same embodiment (first one's manifest wins)."""
    if not roots:
        raise DataError("no dataset given")
    datasets = [LeRobotV3Dataset(root) for root in roots]
    manifest = datasets[0].manifest
    if not datasets[0].camera_names:
        raise DataError(f"{roots[0]} has no camera (observation.images.*) feature")
    for root, ds in zip(roots[1:], datasets[1:], strict=True):
        problems = manifest.mismatches(ds.manifest)
        if problems:
            raise DataError(f"{root} does not match {roots[0]}: " + "; ".join(problems))
        missing = set(datasets[0].camera_names) - set(ds.camera_names)
        if missing:
            raise DataError(f"{root} lacks cameras {sorted(missing)}")
    return datasets, manifest


def config_for_dataset(
    manifest: EmbodimentManifest, camera_names: Sequence[str], kind: PolicyKind, **overrides: object
) -> ModelConfig:
    """A model config shaped by the data: cameras, state and action dims come from the dataset."""
    values: dict[str, object] = {
        "kind": kind,
        "camera_names": tuple(camera_names),
        "state_dim": len(manifest.joint_names),
        "action_dim": len(manifest.action_names),
    }
    if kind is PolicyKind.TEXTBOOK_BASELINE:
        values.update(horizon=1, discrete_head=False)
    else:  # held-out paraphrases 29/50 -> 38/50 on the pick checkpoint, seen ones unchanged (model card)
        values.update(instruction_subspace=True)
    unknown = set(overrides) - {f.name for f in fields(ModelConfig)}
    if unknown:
        raise DataError(f"unknown model options {sorted(unknown)}; see vla_policy.models.config.ModelConfig")
    values.update(overrides)
    if values.get("relative_actions") and tuple(manifest.joint_names) != tuple(manifest.action_names):
        raise DataError(
            f"relative_actions needs actions over the state's joints in the same order: state "
            f"{list(manifest.joint_names)}, actions {list(manifest.action_names)}"
        )
    return ModelConfig(**values)  # type: ignore[arg-type]


def environment_state_width(datasets: Sequence[LeRobotV3Dataset]) -> int:
    """Width of ``observation.environment_state``, which every dataset must record (the localization loss)."""
    widths = {len(ds.environment_state_names) for ds in datasets}
    missing = [str(ds.root) for ds in datasets if not ds.has_environment_state]
    if missing:
        raise DataError(
            f"the localization loss needs observation.environment_state (simulator ground truth), which "
            f"{missing} lack: record them with vla-dagger or the collector in sim, or train without it"
        )
    if len(widths) != 1:
        raise DataError(f"the datasets' observation.environment_state widths differ: {sorted(widths)}")
    return widths.pop()


def split_episodes(
    datasets: Sequence[LeRobotV3Dataset], val_fraction: float, seed: int, max_per_dataset: int = 0
) -> tuple[list[EpisodeRef], list[EpisodeRef]]:
    """Train/val split by whole episodes (never frames of one episode on both sides), seeded.

    ``max_per_dataset`` > 0 keeps only each dataset's first episodes (learning curves, balancing families).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_per_dataset < 0:
        raise DataError(f"max_per_dataset must be >= 0, got {max_per_dataset}")
    refs = [
        (d, e.index)
        for d, ds in enumerate(datasets)
        for e in (ds.episodes[:max_per_dataset] if max_per_dataset else ds.episodes)
    ]
    if not refs:
        raise DataError("the datasets hold no episodes")
    order = np.random.default_rng(seed).permutation(len(refs))
    n_val = 0 if val_fraction == 0 or len(refs) < 2 else max(1, round(val_fraction * len(refs)))
    val = sorted(refs[i] for i in order[:n_val])
    train = sorted(refs[i] for i in order[n_val:])
    return train, val


def compute_normalizer(
    datasets: Sequence[LeRobotV3Dataset], episodes: Iterable[EpisodeRef], config: ModelConfig | None = None
) -> Normalizer:
    """Statistics of state and of the head's targets over the given (training) episodes only.

    The targets are the actions, or with ``config.relative_actions`` the motions ``a_{t+k} - s_t`` over the
    chunk (their scale grows with k, so they are pooled over every existing step of every chunk).
    """
    states, targets = [], []
    for d, e in episodes:
        ep = datasets[d].episode(e)
        states.append(ep.state)
        if config is not None and config.relative_actions:
            chunk = chunk_targets(ep.action, ep.state, config.horizon, relative=True)
            targets.append(chunk[chunk_valid(len(ep), config.horizon)])
        else:
            targets.append(ep.action)
    if not states:
        raise DataError("no episodes to compute normalization statistics from")
    return Normalizer(FeatureStats.of(np.concatenate(states)), FeatureStats.of(np.concatenate(targets)))


def manifest_with_stats(manifest: EmbodimentManifest, normalizer: Normalizer) -> EmbodimentManifest:
    data = manifest.to_dict()
    data["normalization"] = normalizer.to_dict()
    data["normalization_hash"] = ""
    return EmbodimentManifest.from_dict(data)


def action_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """[T, D] -> [T, H, D]: chunk t is actions t..t+H-1, the last action repeated past the end."""
    t = np.arange(len(actions))[:, None] + np.arange(horizon)[None, :]
    return actions[np.minimum(t, len(actions) - 1)]


def chunk_targets(action: np.ndarray, state: np.ndarray, horizon: int, relative: bool) -> np.ndarray:
    """[T, H, A] what the head learns at each frame: the action chunk, or its motion from s_t if ``relative``."""
    chunk = action_chunks(action, horizon)
    return chunk - state[:, None, :] if relative else chunk


def chunk_valid(length: int, horizon: int) -> np.ndarray:
    """[T, H] bool: which chunk steps exist in the episode (padded steps are left out of the loss, as in ACT)."""
    return (np.arange(length)[:, None] + np.arange(horizon)[None, :]) < length


def color_jitter(frame: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation (each a factor in 1 +- strength) on an HxWx3 uint8 frame."""
    x = frame.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(1 - strength, 1 + strength) + grey  # saturation
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def preprocess_frames(
    frames: np.ndarray, config: ModelConfig, augment: bool, rng: np.random.Generator | None
) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, 3, h, w] through the shared preprocessing (uint8 pixels for the native VLA,
    normalized float32 for the baseline's trunk)."""
    spec = config.input_spec(training=augment)
    if augment:
        if rng is None:
            raise ValueError("augmentation needs an rng")
        return np.stack([preprocess(color_jitter(f, rng), spec, rng) for f in frames])
    return np.stack([preprocess(f, spec) for f in frames])


@dataclass
class SampleSet:
    """Every sample of a set of episodes as stacked tensors (features cached, or raw images for fine-tuning)."""

    features: (
        torch.Tensor
    )  # [N, copies, n_cam, C, h, w] float16 (frozen trunk) or [N, 1, n_cam, 3, H, W] uint8 pixels
    state: torch.Tensor  # [N, S] normalized
    target: torch.Tensor  # [N, H, A] normalized
    valid: torch.Tensor  # [N, H] bool, False for steps past the episode end
    text_index: torch.Tensor  # [N] index into texts
    texts: list[str]
    episode: list[EpisodeRef]  # per sample
    frame_index: torch.Tensor  # [N]
    environment_state: torch.Tensor | None = None  # [N, E] float32, dataset units (localization targets)
    # [N] row of ``features`` per sample, -1 where none was decoded (build_samples' ``skip_pixels``: episodes
    # whose frozen keypoints are cached); None when ``features`` has a row per sample.
    pixel_row: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def copies(self) -> int:
        return int(self.features.shape[1])


def build_samples(
    datasets: Sequence[LeRobotV3Dataset],
    episodes: Sequence[EpisodeRef],
    config: ModelConfig,
    normalizer: Normalizer,
    *,
    encode: Callable[[torch.Tensor], torch.Tensor] | None,
    augmented_copies: int,
    seed: int,
    progress: bool = True,
    encode_batch: int = 64,
    skip_pixels: Collection[EpisodeRef] = frozenset(),
) -> SampleSet:
    """Decode, preprocess (and encode, when ``encode`` is the frozen trunk) every frame of ``episodes``.

    ``encode`` maps [B, 3, H, W] float32 to [B, C, h, w]; None keeps the preprocessed images (the native VLA's
    uint8 pixels).
    Copy 0 is the clean (inference) view; copies 1..augmented_copies are jittered and randomly cropped.
    ``skip_pixels``: episodes whose frames are not decoded (their keypoints are cached, see
    :mod:`vla_policy.keypoint_cache`); everything else about them is read, and ``pixel_row`` says which samples
    have pixels. Only without augmented copies, whose random draws would shift with the skipped episodes.
    """
    if skip_pixels and augmented_copies:
        raise ValueError("skip_pixels needs augmented_copies=0: the skipped episodes' draws would be missing")
    if not episodes:
        raise DataError("no episodes to build samples from")
    rng = np.random.default_rng(seed)
    states, targets, valid, text_idx, refs, frame_idx, environment = [], [], [], [], [], [], []
    # Filled in place: concatenating per-episode tensors at the end held every frame twice (a 5,000-episode
    # frozen-encoder fit peaked at twice its 12 GB of pixels).
    total = sum(datasets[d].episodes[e].length for d, e in episodes if (d, e) not in skip_pixels)
    features: torch.Tensor | None = None
    filled = 0
    pixel_row: list[torch.Tensor] = []
    texts: dict[str, int] = {}
    bar = tqdm(episodes, desc="encoding episodes", unit="ep", disable=not progress)
    for d, e in bar:
        ds = datasets[d]
        ep = ds.episode(e)
        skipped = (d, e) in skip_pixels
        if skip_pixels:
            pixel_row.append(
                torch.full((len(ep),), -1) if skipped else torch.arange(filled, filled + len(ep))
            )
        if not skipped:
            per_camera = []
            for cam in config.camera_names:
                raw = ds.frames(e, cam)
                views = []
                for copy in range(1 + augmented_copies):
                    images = preprocess_frames(raw, config, augment=copy > 0, rng=rng)
                    views.append(_encode_all(images, encode, encode_batch))
                per_camera.append(torch.stack(views, dim=1))  # [T, copies, ...]
            episode_features = torch.stack(per_camera, dim=2)  # [T, copies, n_cam, ...]
            if len(episode_features) != len(ep) or filled + len(ep) > total:
                raise DataError(
                    f"{ds.root} episode {e}: {len(episode_features)} frames decoded, {len(ep)} in its data and "
                    f"{ds.episodes[e].length} in its metadata"
                )
            if features is None:
                features = torch.empty((total, *episode_features.shape[1:]), dtype=episode_features.dtype)
            features[filled : filled + len(ep)] = episode_features
            filled += len(ep)
        states.append(normalizer.normalize_state(torch.from_numpy(ep.state.astype(np.float32))))
        chunk = torch.from_numpy(
            chunk_targets(ep.action.astype(np.float32), ep.state.astype(np.float32), config.horizon,
                          config.relative_actions)
        )  # fmt: skip
        targets.append(normalizer.normalize_action(chunk))
        valid.append(torch.from_numpy(chunk_valid(len(ep), config.horizon)))
        text_idx.extend(texts.setdefault(t, len(texts)) for t in ep.tasks)
        refs.extend([(d, e)] * len(ep))
        frame_idx.append(torch.from_numpy(ep.frame_index.astype(np.int64)))
        if config.localization_dim:
            if ep.environment_state is None:
                raise DataError(
                    f"{ds.root} episode {e} has no observation.environment_state for the localization loss"
                )
            environment.append(torch.from_numpy(ep.environment_state.astype(np.float32)))
    if features is None and total == 0 and skip_pixels:  # every episode skipped: no pixels at all
        n_cam, h, w = len(config.camera_names), config.image_height, config.image_width
        features = torch.empty((0, 1, n_cam, 3, h, w), dtype=torch.uint8)
    if features is None or filled != total:
        raise DataError(f"{filled} frames decoded, the episodes' metadata says {total}")
    return SampleSet(
        features=features,
        state=torch.cat(states).float(),
        target=torch.cat(targets).float(),
        valid=torch.cat(valid),
        text_index=torch.tensor(text_idx, dtype=torch.long),
        texts=list(texts),
        episode=refs,
        frame_index=torch.cat(frame_idx),
        environment_state=torch.cat(environment) if environment else None,
        pixel_row=torch.cat(pixel_row) if skip_pixels else None,
    )


def _encode_all(
    images: np.ndarray, encode: Callable[[torch.Tensor], torch.Tensor] | None, batch: int
) -> torch.Tensor:
    x = torch.from_numpy(images)
    if encode is None:
        return x if x.dtype == torch.uint8 else x.to(torch.float16)
    with torch.inference_mode():
        out = [encode(x[i : i + batch]).to(torch.float16) for i in range(0, len(x), batch)]
    return torch.cat(out)


def estimate_cache_bytes(n_frames: int, network: VLANetwork, copies: int) -> int:
    """Bytes of the sample cache: uint8 pixels (native) or float16 trunk features (baseline)."""
    config = network.config
    if network.trunk is None:
        per_image = 3 * config.image_height * config.image_width
    else:
        with torch.no_grad():
            probe = network.trunk(torch.zeros(1, 3, config.image_height, config.image_width))
        per_image = 2 * probe[0].numel()
    return n_frames * copies * len(config.camera_names) * per_image


__all__ = [
    "DataError",
    "EpisodeRef",
    "SampleSet",
    "action_chunks",
    "build_samples",
    "chunk_targets",
    "chunk_valid",
    "color_jitter",
    "compute_normalizer",
    "config_for_dataset",
    "environment_state_width",
    "estimate_cache_bytes",
    "manifest_with_stats",
    "open_datasets",
    "preprocess_frames",
    "split_episodes",
]
