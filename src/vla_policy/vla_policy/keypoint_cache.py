"""Frozen encoders' keypoints, encoded once per dataset and kept on disk.

A ``vla-train --freeze-encoders`` run spends nearly all its time pushing pixels through encoders that do not
change (about 215 frames/s with both cameras on a 2-core CPU: 8 minutes for 800 place demonstrations and one
shifted copy of each frame), then trains its heads in a few minutes. The keypoints depend only on the
encoders' weights, the frames, each frame's instruction and the shifts drawn for the augmented views, so they
are stored per (encoders, dataset, views, seed), and every later fit that reads the same dataset with the same
encoders, alone or mixed with others, loads them back; :func:`cached_episodes` tells training which episodes'
frames it need not decode at all.

The shifts are drawn per episode from a generator seeded by (seed, dataset, episode), never from the global
random stream, so a run that reads the cache and one that encodes from scratch train on the same numbers.
Training instructions lie in the span the encoders' FiLM projects onto, so their keypoints do not depend on
which other datasets share the run (but for directions the span drops as below its rank cutoff, 1e-4 of the
largest singular value: differences of that order).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from tqdm import tqdm
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.atomic import write_bytes_atomic

from vla_policy.data import SampleSet
from vla_policy.models.networks import VLANetwork

LOG = logging.getLogger("vla_train")

CACHE_FORMAT = "vla_policy.keypoints/1"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vla_policy/keypoints`` (``~/.cache/...`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "vla_policy" / "keypoints"


def encoder_key(network: VLANetwork) -> str:
    """Hash of everything a frame's keypoints depend on besides the frame and its instruction: the encoders'
    weights and the config fields that shape their input."""
    head = network.head
    config = head.config
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    fields = ("image_height", "image_width", "camera_names", "keypoints", "encoder_channels", "shift_pixels",
              "text_encoder", "text_dim", "instruction_subspace")  # fmt: skip
    digest.update(json.dumps({f: getattr(config, f) for f in fields}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(head.encoders.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


def dataset_key(dataset: LeRobotV3Dataset) -> str:
    """Hash of a dataset's metadata (info, tasks, and the per-episode index with its statistics), which
    changes whenever an episode is added or rewritten; a copied dataset keeps its key."""
    meta = Path(dataset.root) / "meta"
    digest = hashlib.sha256()
    for path in sorted(p for p in meta.rglob("*") if p.is_file()):
        digest.update(path.relative_to(meta).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _episode_generator(seed: int, dataset: str, episode: int) -> torch.Generator:
    value = int(hashlib.sha256(f"{seed}/{dataset}/{episode}".encode()).hexdigest()[:15], 16)
    return torch.Generator().manual_seed(value)


class KeypointCache:
    """One safetensors file per (encoders, dataset, views, seed) under ``directory``: ``episode_<i>`` ->
    [T, views, n_cam * K * 2] float32. A file that cannot be read is encoded again (and rewritten). Each file
    is read at most once per instance (a run's training and validation sets share it); what it stores stays
    in that memory too."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._files: dict[Path, dict[int, torch.Tensor]] = {}

    def path(self, encoders: str, dataset: str, views: int, seed: int) -> Path:
        return self.directory / f"{encoders[:16]}-{dataset[:16]}-v{views}-s{seed}.safetensors"

    def load(self, path: Path) -> dict[int, torch.Tensor]:
        if path not in self._files:
            self._files[path] = self._read(path)
        return self._files[path]

    def store(self, path: Path, episodes: dict[int, torch.Tensor]) -> None:
        merged = {**self.load(path), **episodes}
        tensors = {f"episode_{e}": t.contiguous() for e, t in sorted(merged.items())}
        write_bytes_atomic(path, save(tensors, metadata={"format": CACHE_FORMAT}))
        self._files[path] = merged

    @staticmethod
    def _read(path: Path) -> dict[int, torch.Tensor]:
        if not path.is_file():
            return {}
        try:
            stored = load_file(path)
        except (SafetensorError, OSError) as exc:
            LOG.warning("keypoint cache %s is unreadable (%s): encoding again", path, exc)
            return {}
        return {int(name.removeprefix("episode_")): tensor for name, tensor in stored.items()}


def frozen_keypoints(
    network: VLANetwork,
    samples: SampleSet,
    text_table: torch.Tensor,
    datasets: Sequence[LeRobotV3Dataset],
    *,
    shifted_copies: int,
    seed: int,
    device: torch.device,
    cache: KeypointCache | None,
    progress: bool,
    clean_only: bool = False,
    batch: int = 256,
) -> SampleSet:
    """The pixels of ``samples`` replaced by what the frozen encoders make of them: features
    [N, 1 + shifted_copies, n_cam * K * 2], view 0 the clean one, the others shifted as in end-to-end
    training (``clean_only``: [N, 1], the validation set's). Episodes found in ``cache`` are read from it; the
    rest are encoded and added to it, with every view, so that a later run may train on them."""
    views = 1 if clean_only and cache is None else 1 + shifted_copies
    pad = network.config.shift_pixels
    n_cam = len(network.config.camera_names)
    runs = _episode_runs(samples)
    keys = {d: dataset_key(datasets[d]) for d in {d for d, _ in samples.episode}}
    paths = _cache_paths(network, keys, cache, views, seed)
    per_episode = _cached(cache, paths, {ref: stop - start for ref, (start, stop) in runs.items()}, views)
    missing = [ref for ref in runs if ref not in per_episode]
    if cache is not None:
        LOG.info("keypoints: %d of %d episodes from the cache in %s, %d to encode",
                 len(per_episode), len(runs), cache.directory, len(missing))  # fmt: skip

    bar = tqdm(total=views * sum(runs[ref][1] - runs[ref][0] for ref in missing), desc="encoding keypoints",
               unit="frame", disable=not progress or not missing)  # fmt: skip
    for d in sorted({d for d, _ in missing}):  # dataset by dataset, each stored once encoded
        todo = [(dd, e) for dd, e in missing if dd == d]
        encoded = _encode(network, samples, text_table, runs=runs, missing=todo, keys=keys, views=views,
                          pad=pad, n_cam=n_cam, seed=seed, device=device, bar=bar, batch=batch)  # fmt: skip
        per_episode.update(encoded)
        if cache is not None:
            cache.store(paths[d], {e: encoded[d, e] for _, e in todo})
    bar.close()

    features = torch.cat([per_episode[ref] for ref in runs])  # runs keep the samples' order
    if clean_only:
        features = features[:, :1].contiguous()
    return replace(samples, features=features, pixel_row=None)


def cached_episodes(
    network: VLANetwork,
    datasets: Sequence[LeRobotV3Dataset],
    episodes: Sequence[tuple[int, int]],
    *,
    shifted_copies: int,
    seed: int,
    cache: KeypointCache,
) -> set[tuple[int, int]]:
    """The ``episodes`` (dataset, episode) whose keypoints :func:`frozen_keypoints` would read from ``cache``
    with these settings: their frames need not be decoded (``build_samples(skip_pixels=...)``)."""
    keys = {d: dataset_key(datasets[d]) for d in {d for d, _ in episodes}}
    views = 1 + shifted_copies
    lengths = {(d, e): datasets[d].episodes[e].length for d, e in episodes}
    return set(_cached(cache, _cache_paths(network, keys, cache, views, seed), lengths, views))


def _cache_paths(
    network: VLANetwork, keys: dict[int, str], cache: KeypointCache | None, views: int, seed: int
) -> dict[int, Path]:
    if cache is None:
        return {}
    encoders = encoder_key(network)
    return {d: cache.path(encoders, key, views, seed) for d, key in keys.items()}


def _cached(
    cache: KeypointCache | None, paths: dict[int, Path], lengths: dict[tuple[int, int], int], views: int
) -> dict[tuple[int, int], torch.Tensor]:
    """The stored keypoints of every episode in ``lengths`` (its frame count) that the cache holds whole."""
    if cache is None:
        return {}
    stored = {d: cache.load(path) for d, path in paths.items()}
    found = {}
    for (d, e), length in lengths.items():
        hit = stored.get(d, {}).get(e)
        if hit is not None and hit.shape[:2] == (length, views):
            found[d, e] = hit
    return found


def _episode_runs(samples: SampleSet) -> dict[tuple[int, int], tuple[int, int]]:
    """(dataset, episode) -> its [start, stop) in the samples, which build_samples keeps contiguous."""
    runs: dict[tuple[int, int], tuple[int, int]] = {}
    start = 0
    for i in range(1, len(samples.episode) + 1):
        if i == len(samples.episode) or samples.episode[i] != samples.episode[start]:
            ref = samples.episode[start]
            if ref in runs:
                raise ValueError(f"episode {ref} is not contiguous in the samples")
            runs[ref] = (start, i)
            start = i
    return runs


def _encode(
    network: VLANetwork,
    samples: SampleSet,
    text_table: torch.Tensor,
    *,
    runs: dict[tuple[int, int], tuple[int, int]],
    missing: list[tuple[int, int]],
    keys: dict[int, str],
    views: int,
    pad: int,
    n_cam: int,
    seed: int,
    device: torch.device,
    bar: tqdm,
    batch: int,
) -> dict[tuple[int, int], torch.Tensor]:
    # channels_last convolutions run about a quarter faster on CPU; a copy, so the checkpoint's layout stays.
    head = copy.deepcopy(network.head).to(device=device, memory_format=torch.channels_last).eval()
    index = torch.cat([torch.arange(*runs[ref]) for ref in missing])
    offsets = torch.cat([
        torch.randint(0, 2 * pad + 1, (max(views - 1, 0), runs[d, e][1] - runs[d, e][0], n_cam, 2),
                      generator=_episode_generator(seed, keys[d], e))
        for d, e in missing
    ], dim=1)  # fmt: skip  # [views - 1, n, n_cam, 2]
    out = torch.empty(len(index), views, n_cam * network.config.keypoints * 2)
    with torch.inference_mode():
        for view in range(views):
            for start in range(0, len(index), batch):
                rows = index[start : start + batch]
                images = samples.features[_pixel_rows(samples, rows), 0].to(device)
                text = text_table[samples.text_index[rows]].to(device)
                shift = offsets[view - 1, start : start + batch].to(device) if view else None
                out[start : start + len(rows), view] = (
                    head.encode_keypoints(images, text, shift).float().cpu()
                )
                bar.update(len(rows))
    result, start = {}, 0
    for ref in missing:
        length = runs[ref][1] - runs[ref][0]
        result[ref] = out[start : start + length].clone()
        start += length
    return result


def _pixel_rows(samples: SampleSet, rows: torch.Tensor) -> torch.Tensor:
    if samples.pixel_row is None:
        return rows
    pixels = samples.pixel_row[rows]
    if bool((pixels < 0).any()):
        raise ValueError("keypoints to encode for an episode whose frames were not decoded (skip_pixels)")
    return pixels


__all__ = [
    "KeypointCache",
    "cached_episodes",
    "dataset_key",
    "default_cache_dir",
    "encoder_key",
    "frozen_keypoints",
]
