"""LeRobotDataset v3.0: a writer and a reader, with pyarrow and PyAV (no LeRobot, no torch).

The layout is exactly the one LeRobot 0.6.1 writes (checked against ``shared/fixtures/lerobot_v3_reference``)::

    meta/info.json                      codebase_version "v3.0", fps, features, totals, paths, robot_type, splits
    meta/stats.json                     per feature min/max/mean/std/count/q01/q10/q50/q90/q99
    meta/tasks.parquet                  task_index, task (pandas index on task)
    meta/episodes/chunk-000/file-000.parquet   one row per episode (lengths, tasks, file indices, stats/...)
    meta/embodiment.json                the embodiment manifest (ours; LeRobot ignores it)
    data/chunk-XXX/file-YYY.parquet     observation.state, action (fixed_size_list<float>), timestamp, ...
    videos/<video_key>/chunk-XXX/file-YYY.mp4

Each episode gets its own data file and its own mp4 per camera (LeRobot packs several episodes per file up to
a size limit; one per episode is equally valid v3.0, since ``meta/episodes`` names every episode's files and
time range, and it makes appending crash-safe without rewriting earlier episodes).

Reading (what training uses)::

    ds = LeRobotV3Dataset("/data/pick")            # any v3.0 root, ours or LeRobot's
    ds.fps, ds.features, ds.info, ds.tasks         # int, dict, dict (info.json), list[str] by task_index
    ds.camera_names                                # ("front", "wrist"): keys observation.images.<name>
    ds.num_episodes, ds.num_frames
    ds.episodes                                    # tuple[EpisodeInfo]: index, length, tasks, from/to index
    ep = ds.episode(0)                             # EpisodeArrays: state (T,8) f32, action (T,8) f32,
                                                   #   timestamp (T,), frame_index, task_index (T,), tasks,
                                                   #   environment_state (T,6) f32 or None
    ds.has_environment_state                       # observation.environment_state recorded (sim only)
    ds.frames(0, "front")                          # uint8 (T,H,W,3) rgb, decoded from the episode's mp4
    ds.stats                                       # meta/stats.json as numpy arrays
    ds.manifest                                    # EmbodimentManifest (meta/embodiment.json or derived)

Writing::

    spec = DatasetSpec(fps=10, robot_type="panda", state_names=JOINTS, action_names=JOINTS,
                       cameras=(CameraSpec("front", 480, 640),))
    writer = LeRobotV3Writer.create(root, spec)    # or LeRobotV3Writer.open(root) to append
    rec = writer.begin_episode()
    rec.add_frame(state, action, {"front": rgb}, task="pick up the red block")   # video encodes as it goes
    summary = rec.finish()                          # or rec.abort()
    writer.write_episode(states, actions, {"front": frames}, task)   # the same in one call

Privileged environment state (optional): ``DatasetSpec(..., environment_state_names=("target.x", ...))`` adds
the float32 vector feature ``observation.environment_state`` (LeRobot's name for it; a simulator's ground
truth, e.g. object positions, for auxiliary losses and probes, never a policy input on a real robot), stored
like ``observation.state`` (a fixed-size list column, names in info.json, stats). Every frame then needs it:
``add_frame(..., environment_state=v)``, ``write_episode(..., environment_states=V)``. Without names the
feature is absent, and a dataset without it reads with ``environment_state`` None.

Crash safety: an episode is staged under ``.staging/`` and becomes part of the dataset only when
``meta/episodes`` (the commit point) is atomically replaced; ``info.json``, ``stats.json``, ``tasks.parquet`` and
the manifest are derived from it and rewritten atomically (temp + fsync + rename). Opening a root for
writing repairs whatever a crash left behind (staging files, data or video files no episode names, stale
totals). A full disk raises :class:`DatasetWriteError` and leaves the committed dataset untouched.

Pure Python: no rclpy.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from vla_common.atomic import fsync_dir, write_bytes_atomic, write_json_atomic
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, IMAGE_PREFIX, STATE_KEY
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = Path("meta/episodes/chunk-000/file-000.parquet")
STAT_NAMES = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAGING_DIR = ".staging"
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


class DatasetError(ValueError):
    """A dataset root is missing, malformed or not LeRobot v3.0."""


class DatasetWriteError(RuntimeError):
    """Writing failed (e.g. the disk is full); the committed part of the dataset is unchanged."""


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoCodecConfig:
    """How camera streams are encoded; the defaults are LeRobot 0.6.1's (AV1 via SVT-AV1)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int = 2
    crf: int = 30
    preset: int = 12
    fast_decode: int = 0

    def __post_init__(self) -> None:
        if self.codec not in CODEC_NAMES:
            raise DatasetError(f"video codec {self.codec!r} not supported (one of {sorted(CODEC_NAMES)})")
        if self.pix_fmt not in ("yuv420p", "yuv444p"):
            raise DatasetError(f"pix_fmt {self.pix_fmt!r} not supported (yuv420p or yuv444p)")
        if self.g < 1 or not 0 <= self.crf <= 63 or self.preset < 0:
            raise DatasetError(f"bad video settings g={self.g} crf={self.crf} preset={self.preset}")

    @property
    def codec_name(self) -> str:
        """The name info.json uses (``av1``, ``h264``)."""
        return CODEC_NAMES[self.codec]

    def encoder_options(self) -> dict[str, str]:
        options = {"g": str(self.g), "crf": str(self.crf)}
        if self.codec == "libsvtav1":
            options["preset"] = str(self.preset)
            params = [f"fast-decode={self.fast_decode}"] if self.fast_decode else []
            if params:
                options["svtav1-params"] = ":".join(params)
        elif self.codec == "libx264":
            options["preset"] = "veryfast"
        return options


CODEC_NAMES = {"libsvtav1": "av1", "libx264": "h264"}


@dataclass(frozen=True)
class DatasetSpec:
    """What a new dataset holds: its rate, robot, vector feature names and cameras."""

    fps: int
    robot_type: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[CameraSpec, ...] = ()
    video: VideoCodecConfig = field(default_factory=VideoCodecConfig)
    action_type: ActionType = ActionType.ABSOLUTE_JOINT_POSITION
    joint_units: tuple[str, ...] = ()
    chunks_size: int = DEFAULT_CHUNKS_SIZE
    # Names of observation.environment_state (privileged simulator state); empty: no such feature.
    environment_state_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_names", tuple(self.state_names))
        object.__setattr__(self, "action_names", tuple(self.action_names))
        object.__setattr__(self, "environment_state_names", tuple(self.environment_state_names))
        names = self.environment_state_names
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise DatasetError(f"environment_state_names must be unique non-empty strings, got {names}")
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "joint_units", tuple(self.joint_units))
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or self.fps <= 0:
            raise DatasetError(f"fps must be a positive integer (LeRobot stores it as int), got {self.fps!r}")
        if not self.state_names or not self.action_names:
            raise DatasetError("state_names and action_names must not be empty")
        if self.chunks_size <= 0:
            raise DatasetError("chunks_size must be positive")
        for cam in self.cameras:
            if cam.channels != 3:
                raise DatasetError(f"camera {cam.name!r}: only 3-channel rgb video is supported")
            if cam.height % 2 or cam.width % 2:
                raise DatasetError(f"camera {cam.name!r}: {cam.height}x{cam.width} must be even for yuv420p")
        # The manifest validates names, units, fps and cameras in one place.
        self.manifest()

    def manifest(self, normalization: Mapping[str, Mapping[str, Any]] | None = None) -> EmbodimentManifest:
        return EmbodimentManifest(
            robot_type=self.robot_type,
            joint_names=self.state_names,
            action_names=self.action_names,
            action_type=self.action_type,
            fps=float(self.fps),
            cameras=self.cameras,
            joint_units=self.joint_units or _guess_units(self.state_names),
            normalization=normalization or {},
        )

    def features(self) -> dict[str, Any]:
        """``info.json``'s features, in LeRobot's order (cameras, state, action, index columns)."""
        features: dict[str, Any] = {}
        for cam in self.cameras:
            features[cam.feature_key] = {
                "dtype": "video",
                "shape": [cam.height, cam.width, cam.channels],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": cam.height,
                    "video.width": cam.width,
                    "video.codec": self.video.codec_name,
                    "video.pix_fmt": self.video.pix_fmt,
                    "video.fps": self.fps,
                    "video.channels": cam.channels,
                    "has_audio": False,
                    "video.g": self.video.g,
                    "video.crf": self.video.crf,
                    "video.preset": self.video.preset,
                    "video.fast_decode": self.video.fast_decode,
                    "video.video_backend": "pyav",
                    "video.extra_options": {},
                    "is_depth_map": False,
                },
            }
        features[STATE_KEY] = {
            "dtype": "float32",
            "shape": [len(self.state_names)],
            "names": list(self.state_names),
        }
        if self.environment_state_names:
            features[ENVIRONMENT_STATE_KEY] = {
                "dtype": "float32",
                "shape": [len(self.environment_state_names)],
                "names": list(self.environment_state_names),
            }
        features[ACTION_KEY] = {
            "dtype": "float32",
            "shape": [len(self.action_names)],
            "names": list(self.action_names),
        }
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for name in ("frame_index", "episode_index", "index", "task_index"):
            features[name] = {"dtype": "int64", "shape": [1], "names": None}
        return features

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> DatasetSpec:
        """Rebuild the spec of an existing dataset (to append to it)."""
        features = info["features"]
        cameras = []
        video = VideoCodecConfig()
        for key, feat in features.items():
            if feat.get("dtype") == "video" and key.startswith(IMAGE_PREFIX):
                h, w, c = feat["shape"]
                cameras.append(CameraSpec(key[len(IMAGE_PREFIX) :], int(h), int(w), int(c)))
                vi = feat.get("info") or {}
                codec = {v: k for k, v in CODEC_NAMES.items()}.get(vi.get("video.codec", "av1"), "libsvtav1")
                video = VideoCodecConfig(
                    codec=codec,
                    pix_fmt=vi.get("video.pix_fmt", "yuv420p"),
                    g=int(vi.get("video.g", 2)),
                    crf=int(vi.get("video.crf", 30)),
                    preset=int(vi.get("video.preset", 12)),
                    fast_decode=int(vi.get("video.fast_decode", 0)),
                )
        return cls(
            fps=int(info["fps"]),
            robot_type=str(info.get("robot_type") or "unknown"),
            state_names=tuple(features[STATE_KEY]["names"]),
            action_names=tuple(features[ACTION_KEY]["names"]),
            cameras=tuple(cameras),
            video=video,
            chunks_size=int(info.get("chunks_size", DEFAULT_CHUNKS_SIZE)),
            environment_state_names=_feature_names(features.get(ENVIRONMENT_STATE_KEY)),
        )

    def vector_keys(self) -> tuple[str, ...]:
        """The float32 vector features, in column order."""
        return (STATE_KEY, *((ENVIRONMENT_STATE_KEY,) if self.environment_state_names else ()), ACTION_KEY)


def _feature_names(feature: Mapping[str, Any] | None) -> tuple[str, ...]:
    """A vector feature's names (LeRobot writes a list; older datasets may nest them in a dict), or ()."""
    if not feature:
        return ()
    names = feature.get("names")
    if isinstance(names, Mapping):
        names = [n for group in names.values() for n in group]
    if not names:
        return tuple(str(i) for i in range(int(feature["shape"][0])))
    return tuple(str(n) for n in names)


def _guess_units(names: Sequence[str]) -> tuple[str, ...]:
    # Our convention: finger/gripper opening in metres, everything else revolute (rad).
    return tuple("m" if ("finger" in n or "gripper" in n) else "rad" for n in names)


# --- statistics ----------------------------------------------------------------------------------


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats of an (N, D) array, as LeRobot stores them (count has shape (1,))."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if len(v) == 0:
        raise DatasetError("cannot compute statistics of an empty feature")
    stats = {
        "min": v.min(axis=0),
        "max": v.max(axis=0),
        "mean": v.mean(axis=0),
        "std": v.std(axis=0),
        "count": np.array([len(v)], dtype=np.int64),
    }
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(v, q, axis=0)
    return stats


class ImageStatsAccumulator:
    """Exact per-channel stats of uint8 frames from 256-bin histograms (values scaled to 0..1).

    Frames are subsampled by 2 in each direction: the stats stay representative and the cost per frame is
    a few milliseconds even at 640x480.
    """

    def __init__(self) -> None:
        self._hist: np.ndarray | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        small = rgb[::2, ::2]
        channels = small.shape[2]
        if self._hist is None:
            self._hist = np.zeros((channels, 256), dtype=np.int64)
        for c in range(channels):
            self._hist[c] += np.bincount(small[..., c].ravel(), minlength=256)
        self.frames += 1

    def stats(self) -> dict[str, np.ndarray]:
        if self._hist is None:
            raise DatasetError("no frames: cannot compute image statistics")
        levels = np.arange(256, dtype=np.float64) / 255.0
        out: dict[str, list[float]] = {k: [] for k in STAT_NAMES if k != "count"}
        for hist in self._hist:
            total = hist.sum()
            nonzero = np.nonzero(hist)[0]
            mean = float((hist * levels).sum() / total)
            out["min"].append(float(levels[nonzero[0]]))
            out["max"].append(float(levels[nonzero[-1]]))
            out["mean"].append(mean)
            out["std"].append(float(np.sqrt((hist * (levels - mean) ** 2).sum() / total)))
            cdf = np.cumsum(hist) / total
            for name, q in QUANTILES.items():
                out[name].append(float(levels[min(int(np.searchsorted(cdf, q)), 255)]))
        stats = {k: np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) for k, v in out.items()}
        stats["count"] = np.array([self.frames], dtype=np.int64)
        return stats


def aggregate_stats(
    per_episode: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats like LeRobot: weighted means, pooled variance, weighted quantiles."""
    if not per_episode:
        return {}
    result: dict[str, dict[str, np.ndarray]] = {}
    for key in per_episode[0]:
        parts = [ep[key] for ep in per_episode if key in ep]
        counts = np.array([float(np.asarray(p["count"]).reshape(-1)[0]) for p in parts])
        weights = counts / counts.sum()

        def wsum(
            name: str, parts: list[Mapping[str, np.ndarray]] = parts, weights: np.ndarray = weights
        ) -> np.ndarray:
            return sum(w * np.asarray(p[name], dtype=np.float64) for w, p in zip(weights, parts, strict=True))

        mean = wsum("mean")
        variance = sum(
            w * (np.asarray(p["std"], dtype=np.float64) ** 2 + (np.asarray(p["mean"]) - mean) ** 2)
            for w, p in zip(weights, parts, strict=True)
        )
        agg = {
            "min": np.min(np.stack([np.asarray(p["min"], dtype=np.float64) for p in parts]), axis=0),
            "max": np.max(np.stack([np.asarray(p["max"], dtype=np.float64) for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(variance),
            "count": np.array([int(counts.sum())], dtype=np.int64),
        }
        for name in QUANTILES:
            if all(name in p for p in parts):
                agg[name] = wsum(name)
        result[key] = agg
    return result


def _stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in feat.items()} for k, feat in stats.items()}


# --- file helpers (the atomic write itself: vla_common.atomic) ------------------------------------------


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _disk_error(e: OSError, what: str) -> DatasetWriteError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DatasetWriteError(
            f"disk full while {what}: the episode was not added, the dataset is unchanged"
        )
    return DatasetWriteError(f"{what} failed: {e}")


# --- the episode table (meta/episodes) ------------------------------------------------------------


def _episode_schema(spec: DatasetSpec) -> pa.Schema:
    fields: list[pa.Field] = [
        pa.field("episode_index", pa.int64()),
        pa.field("tasks", pa.list_(pa.string())),
        pa.field("length", pa.int64()),
        pa.field("data/chunk_index", pa.int64()),
        pa.field("data/file_index", pa.int64()),
        pa.field("dataset_from_index", pa.int64()),
        pa.field("dataset_to_index", pa.int64()),
    ]
    for cam in spec.cameras:
        key = cam.feature_key
        fields += [
            pa.field(f"videos/{key}/chunk_index", pa.int64()),
            pa.field(f"videos/{key}/file_index", pa.int64()),
            pa.field(f"videos/{key}/from_timestamp", pa.float64()),
            pa.field(f"videos/{key}/to_timestamp", pa.float64()),
        ]
    image_type = pa.list_(pa.list_(pa.list_(pa.float64())))
    for key in [c.feature_key for c in spec.cameras] + [*spec.vector_keys(), *INDEX_FEATURES]:
        value_type = image_type if key.startswith(IMAGE_PREFIX) else pa.list_(pa.float64())
        for stat in STAT_NAMES:
            fields.append(
                pa.field(f"stats/{key}/{stat}", pa.list_(pa.int64()) if stat == "count" else value_type)
            )
    fields += [
        pa.field("meta/episodes/chunk_index", pa.int64()),
        pa.field("meta/episodes/file_index", pa.int64()),
    ]
    return pa.schema(fields)


def _data_schema(spec: DatasetSpec) -> pa.Schema:
    features = spec.features()
    hf_features: dict[str, Any] = {}
    for key in spec.vector_keys():
        hf_features[key] = {
            "feature": {"dtype": "float32", "_type": "Value"},
            "length": features[key]["shape"][0],
            "_type": "List",
        }
    hf_features["timestamp"] = {"dtype": "float32", "_type": "Value"}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        hf_features[key] = {"dtype": "int64", "_type": "Value"}
    schema = pa.schema(
        [
            *(pa.field(key, pa.list_(pa.float32(), features[key]["shape"][0])) for key in spec.vector_keys()),
            pa.field("timestamp", pa.float32()),
            pa.field("frame_index", pa.int64()),
            pa.field("episode_index", pa.int64()),
            pa.field("index", pa.int64()),
            pa.field("task_index", pa.int64()),
        ]
    )
    # `datasets` (inside LeRobot) reads its feature types from this key.
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": hf_features}})})


# --- the reader ----------------------------------------------------------------------------------


def read_tasks(root: Path) -> list[str]:
    """meta/tasks.parquet as a list indexed by task_index."""
    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    table = pq.read_table(path).to_pydict()
    if "task" not in table or "task_index" not in table:
        raise DatasetError(f"{path} lacks task/task_index columns")
    tasks = [""] * len(table["task"])
    for idx, text in zip(table["task_index"], table["task"], strict=True):
        if not 0 <= idx < len(tasks):
            raise DatasetError(f"{path}: task_index {idx} out of range")
        tasks[idx] = text
    return tasks


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    length: int
    tasks: tuple[str, ...]
    dataset_from_index: int
    dataset_to_index: int


@dataclass(frozen=True)
class EpisodeArrays:
    """One episode's non-video columns (T rows)."""

    episode_index: int
    state: np.ndarray  # (T, n_state) float32
    action: np.ndarray  # (T, n_action) float32
    timestamp: np.ndarray  # (T,) float32, seconds from the episode start
    frame_index: np.ndarray  # (T,) int64
    index: np.ndarray  # (T,) int64, global frame index
    task_index: np.ndarray  # (T,) int64
    tasks: tuple[str, ...]  # task text per row (same length as task_index)
    # (T, n) float32 observation.environment_state (privileged sim state), None where not recorded
    environment_state: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame_index)


class LeRobotV3Dataset:
    """Read a LeRobotDataset v3.0 root (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text())
        except FileNotFoundError:
            raise DatasetError(f"{self.root} is not a LeRobot dataset: {info_path} is missing") from None
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path} is not valid JSON: {e}") from None
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{self.root}: codebase_version {version!r} is not {CODEBASE_VERSION}")
        for key in ("fps", "features", "data_path"):
            if key not in self.info:
                raise DatasetError(f"{info_path} lacks {key!r}")
        self.features: dict[str, Any] = self.info["features"]
        self.fps: int = int(self.info["fps"])
        self.tasks: list[str] = read_tasks(self.root)
        self._episodes = self._read_episodes()
        self.episodes: tuple[EpisodeInfo, ...] = tuple(
            EpisodeInfo(
                index=int(row["episode_index"]),
                length=int(row["length"]),
                tasks=tuple(row["tasks"]),
                dataset_from_index=int(row["dataset_from_index"]),
                dataset_to_index=int(row["dataset_to_index"]),
            )
            for row in self._episodes
        )
        self._data_cache: dict[tuple[int, int], pa.Table] = {}

    # --- metadata ---

    def _read_episodes(self) -> list[dict[str, Any]]:
        folder = self.root / "meta" / "episodes"
        files = sorted(folder.glob("chunk-*/file-*.parquet"))
        if not files and int(self.info.get("total_episodes", 0)) > 0:
            raise DatasetError(f"{folder} holds no episode metadata")
        rows: list[dict[str, Any]] = []
        for f in files:
            rows += pq.read_table(f).to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        if [r["episode_index"] for r in rows] != list(range(len(rows))):
            raise DatasetError(f"{folder}: episode indices are not 0..{len(rows) - 1}")
        return rows

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(
            k[len(IMAGE_PREFIX) :]
            for k, f in self.features.items()
            if k.startswith(IMAGE_PREFIX) and f.get("dtype") == "video"
        )

    @property
    def has_environment_state(self) -> bool:
        """Whether frames carry ``observation.environment_state`` (recorded in simulation only)."""
        return ENVIRONMENT_STATE_KEY in self.features

    @property
    def environment_state_names(self) -> tuple[str, ...]:
        """The names of ``observation.environment_state`` (empty without the feature)."""
        return _feature_names(self.features.get(ENVIRONMENT_STATE_KEY))

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.root / "meta" / "stats.json"
        if not path.is_file():
            return {}
        raw = json.loads(path.read_text())
        return {k: {s: np.asarray(v) for s, v in feat.items()} for k, feat in raw.items()}

    def episode_stats(self, episode_index: int) -> dict[str, dict[str, np.ndarray]]:
        row = self._episode_row(episode_index)
        out: dict[str, dict[str, np.ndarray]] = {}
        for col, value in row.items():
            if col.startswith("stats/"):
                feature, stat = col[len("stats/") :].rsplit("/", 1)
                out.setdefault(feature, {})[stat] = np.asarray(value, dtype=np.float64)
        return out

    @property
    def manifest(self) -> EmbodimentManifest:
        """``meta/embodiment.json`` if present, else one derived from info.json's feature names."""
        if (self.root / "meta" / "embodiment.json").is_file():
            return EmbodimentManifest.load(self.root)
        spec = DatasetSpec.from_info(self.info)
        stats = self.stats
        normalization: dict[str, dict[str, Any]] = {
            k: {s: stats[k][s].tolist() for s in ("mean", "std", "min", "max") if s in stats[k]}
            for k in (STATE_KEY, ACTION_KEY)
            if k in stats
        }
        return spec.manifest(normalization)

    def _episode_row(self, episode_index: int) -> dict[str, Any]:
        if not 0 <= episode_index < len(self._episodes):
            raise DatasetError(f"episode {episode_index} does not exist ({len(self._episodes)} episodes)")
        return self._episodes[episode_index]

    # --- data ---

    def _data_table(self, chunk: int, file: int) -> pa.Table:
        key = (chunk, file)
        if key not in self._data_cache:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise DatasetError(f"data file {path} is missing")
            self._data_cache[key] = pq.read_table(path)
            if len(self._data_cache) > 4:
                self._data_cache.pop(next(iter(self._data_cache)))
        return self._data_cache[key]

    def episode(self, episode_index: int) -> EpisodeArrays:
        row = self._episode_row(episode_index)
        table = self._data_table(int(row["data/chunk_index"]), int(row["data/file_index"]))
        ep_col = table.column("episode_index").to_numpy()
        sel = table.filter(pa.array(ep_col == episode_index))
        if sel.num_rows != row["length"]:
            raise DatasetError(
                f"episode {episode_index}: {sel.num_rows} rows in its data file, meta/episodes says {row['length']}"
            )
        frame_index = sel.column("frame_index").to_numpy()
        order = np.argsort(frame_index, kind="stable")
        task_index = sel.column("task_index").to_numpy()[order]
        environment_state = (
            _vectors(sel.column(ENVIRONMENT_STATE_KEY))[order]
            if self.has_environment_state and ENVIRONMENT_STATE_KEY in sel.column_names
            else None
        )
        return EpisodeArrays(
            episode_index=episode_index,
            state=_vectors(sel.column(STATE_KEY))[order],
            action=_vectors(sel.column(ACTION_KEY))[order],
            timestamp=sel.column("timestamp").to_numpy()[order],
            frame_index=frame_index[order],
            index=sel.column("index").to_numpy()[order],
            task_index=task_index,
            tasks=tuple(self.tasks[int(t)] for t in task_index),
            environment_state=environment_state,
        )

    def video_path(self, episode_index: int, camera: str) -> tuple[Path, float, float]:
        """The mp4 holding an episode's camera stream, and the episode's [from, to) time range in it."""
        row = self._episode_row(episode_index)
        key = camera if camera.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + camera
        if key not in self.features:
            raise DatasetError(f"no camera {camera!r} (cameras: {list(self.camera_names)})")
        path = self.root / self.info["video_path"].format(
            video_key=key,
            chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]),
        )
        return path, float(row[f"videos/{key}/from_timestamp"]), float(row[f"videos/{key}/to_timestamp"])

    def iter_frames(self, episode_index: int, camera: str) -> Iterable[np.ndarray]:
        """Decode an episode's frames of one camera in order (HxWx3 uint8 rgb)."""
        path, start, end = self.video_path(episode_index, camera)
        if not path.is_file():
            raise DatasetError(f"video file {path} is missing")
        half = 0.5 / self.fps
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start > 0 and stream.time_base is not None:
                container.seek(int(max(0.0, start - half) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    raise DatasetError(f"{path}: a frame without a timestamp")
                t = float(frame.time)
                if t < start - half:
                    continue
                if t >= end - half:
                    break
                yield frame.to_ndarray(format="rgb24")

    def frames(self, episode_index: int, camera: str) -> np.ndarray:
        frames = list(self.iter_frames(episode_index, camera))
        length = self.episodes[episode_index].length
        if len(frames) != length:
            raise DatasetError(
                f"episode {episode_index} camera {camera}: decoded {len(frames)} frames, expected {length}"
            )
        return np.stack(frames)


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else None
    if width is None:
        return np.asarray(arr.to_pylist(), dtype=np.float32)
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


# --- the writer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSummary:
    episode_index: int
    length: int
    tasks: tuple[str, ...]
    bytes_written: int


class _VideoEncoder:
    """One camera's mp4, encoded on a worker thread so ``add_frame`` returns at once."""

    def __init__(self, path: Path, cam: CameraSpec, fps: int, video: VideoCodecConfig) -> None:
        self.path = path
        self.cam = cam
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per stream otherwise; errors only
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = cast(
            "av.VideoStream",
            self._container.add_stream(video.codec, rate=fps, options=video.encoder_options()),
        )
        self._stream.width = cam.width
        self._stream.height = cam.height
        self._stream.pix_fmt = video.pix_fmt
        self._stream.codec_context.time_base = Fraction(1, fps)
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._count = 0
        self._thread = threading.Thread(target=self._run, name=f"encode-{cam.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        drained = False
        try:
            while (rgb := self._queue.get()) is not None:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = self._count
                self._count += 1
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            drained = True
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException as e:  # reported by close(); the thread must not die silently
            self._error = e
            with contextlib.suppress(Exception):
                self._container.close()
            while not drained and self._queue.get() is not None:  # unblock the producer
                pass

    def put(self, rgb: np.ndarray) -> None:
        if self._error is not None:
            raise DatasetWriteError(f"encoding camera {self.cam.name!r} failed: {self._error}")
        self._queue.put(rgb)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, OSError):
                raise _disk_error(self._error, f"encoding camera {self.cam.name!r}")
            raise DatasetWriteError(f"encoding camera {self.cam.name!r} failed: {self._error}")


class EpisodeRecorder:
    """Frames of one episode on their way into the dataset; finish() commits, abort() forgets."""

    def __init__(self, writer: LeRobotV3Writer, staging: Path) -> None:
        self._writer = writer
        self._spec = writer.spec
        self._staging = staging
        self._states: list[np.ndarray] = []
        self._environment_states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._tasks: list[str] = []
        self._image_stats = {c.name: ImageStatsAccumulator() for c in self._spec.cameras}
        self._encoders: dict[str, _VideoEncoder] = {}
        self._closed = False
        try:
            for cam in self._spec.cameras:
                self._encoders[cam.name] = _VideoEncoder(
                    staging / f"{cam.name}.mp4", cam, self._spec.fps, self._spec.video
                )
        except OSError as e:
            self.abort()
            raise _disk_error(e, "starting the episode's video files") from e

    def __len__(self) -> int:
        return len(self._states)

    def add_frame(
        self,
        state: Sequence[float],
        action: Sequence[float],
        images: Mapping[str, np.ndarray],
        task: str,
        environment_state: Sequence[float] | None = None,
    ) -> None:
        """One frame; ``environment_state`` is required exactly when the dataset has that feature."""
        if self._closed:
            raise DatasetError("episode already finished or aborted")
        s = np.asarray(state, dtype=np.float32).reshape(-1)
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if s.shape != (len(self._spec.state_names),) or a.shape != (len(self._spec.action_names),):
            raise DatasetError(
                f"state/action sizes {s.shape[0]}/{a.shape[0]} != {len(self._spec.state_names)}/{len(self._spec.action_names)}"
            )
        if not (np.isfinite(s).all() and np.isfinite(a).all()):
            raise DatasetError("state or action contains NaN/inf")
        env_names = self._spec.environment_state_names
        if (environment_state is None) != (not env_names):
            raise DatasetError(
                f"the dataset has {ENVIRONMENT_STATE_KEY}: every frame needs it"
                if env_names
                else f"the dataset has no {ENVIRONMENT_STATE_KEY} feature (DatasetSpec.environment_state_names)"
            )
        e = None
        if environment_state is not None:
            e = np.asarray(environment_state, dtype=np.float32).reshape(-1)
            if e.shape != (len(env_names),):
                raise DatasetError(
                    f"{ENVIRONMENT_STATE_KEY} has {e.shape[0]} values, names {list(env_names)}"
                )
            if not np.isfinite(e).all():
                raise DatasetError(f"{ENVIRONMENT_STATE_KEY} contains NaN/inf")
        if set(images) != set(self._encoders):
            raise DatasetError(
                f"images for {sorted(images)} but the dataset has cameras {sorted(self._encoders)}"
            )
        if not task:
            raise DatasetError("every frame needs a task (language instruction)")
        for cam in self._spec.cameras:
            rgb = images[cam.name]
            if rgb.shape != (cam.height, cam.width, 3) or rgb.dtype != np.uint8:
                raise DatasetError(
                    f"camera {cam.name!r}: got {rgb.dtype} {rgb.shape}, expected uint8 {(cam.height, cam.width, 3)}"
                )
        for cam in self._spec.cameras:
            rgb = np.ascontiguousarray(images[cam.name])
            self._image_stats[cam.name].add(rgb)
            self._encoders[cam.name].put(rgb)
        self._states.append(s)
        if e is not None:
            self._environment_states.append(e)
        self._actions.append(a)
        self._tasks.append(task)

    def abort(self) -> None:
        self._closed = True
        for enc in self._encoders.values():
            with contextlib.suppress(DatasetWriteError):  # aborting: the files are discarded anyway
                enc.close()
        shutil.rmtree(self._staging, ignore_errors=True)

    def finish(self) -> EpisodeSummary:
        if self._closed:
            raise DatasetError("episode already finished or aborted")
        self._closed = True
        if not self._states:
            self.abort()
            raise DatasetError("an episode needs at least one frame")
        try:
            for enc in self._encoders.values():
                enc.close()
            return self._writer._commit(self)
        except OSError as e:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise _disk_error(e, "writing the episode") from e
        except BaseException:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise


class LeRobotV3Writer:
    """Create a dataset or append episodes to one (single writer per root)."""

    def __init__(self, root: Path, spec: DatasetSpec) -> None:
        self.root = root
        self.spec = spec
        self._episodes: list[dict[str, Any]] = []
        self._tasks: list[str] = []
        self._active: EpisodeRecorder | None = None

    @classmethod
    def create(cls, root: str | os.PathLike[str], spec: DatasetSpec) -> LeRobotV3Writer:
        """A new, empty dataset (refuses to overwrite an existing one)."""
        path = Path(root)
        if (path / "meta" / "info.json").exists():
            raise DatasetError(f"{path} already holds a dataset: open it to append")
        writer = cls(path, spec)
        try:
            (path / "meta").mkdir(parents=True, exist_ok=True)
            writer._write_derived()
        except OSError as e:
            raise _disk_error(e, "creating the dataset") from e
        return writer

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> LeRobotV3Writer:
        """An existing dataset, repaired after a crash if needed, ready to take more episodes."""
        path = Path(root)
        info_path = path / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{path} holds no dataset (no meta/info.json)")
        info = json.loads(info_path.read_text())
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise DatasetError(f"{path}: can only append to {CODEBASE_VERSION} datasets")
        writer = cls(path, DatasetSpec.from_info(info))
        if (path / EPISODES_PATH).is_file():
            writer._episodes = pq.read_table(path / EPISODES_PATH).to_pylist()
        if (path / "meta" / "tasks.parquet").is_file():
            writer._tasks = read_tasks(path)
        writer.repair()
        return writer

    @classmethod
    def open_or_create(cls, root: str | os.PathLike[str], spec: DatasetSpec) -> LeRobotV3Writer:
        path = Path(root)
        if not (path / "meta" / "info.json").is_file():
            return cls.create(path, spec)
        writer = cls.open(path)
        if writer.spec.features() != spec.features() or writer.spec.robot_type != spec.robot_type:
            raise DatasetError(
                f"{path} holds a dataset with other features or robot ({writer.spec.robot_type}, "
                f"{sorted(writer.spec.features())}): refusing to mix episodes"
            )
        return writer

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return sum(int(e["length"]) for e in self._episodes)

    def repair(self) -> list[Path]:
        """Remove what a crash left behind (staging, unreferenced files) and rewrite derived metadata."""
        removed: list[Path] = []
        staging = self.root / STAGING_DIR
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
        referenced = {self.root / self._data_rel(e) for e in self._episodes}
        for e in self._episodes:
            referenced |= {self.root / self._video_rel(e, cam) for cam in self.spec.cameras}
        for folder, pattern in (("data", "*.parquet"), ("videos", "*.mp4")):
            for f in (self.root / folder).rglob("*") if (self.root / folder).exists() else []:
                if f.is_file() and (not f.match(pattern) or f not in referenced):
                    f.unlink()
                    removed.append(f)
        for f in (self.root / "meta").rglob(".*.tmp"):
            f.unlink()
            removed.append(f)
        self._write_derived()
        return removed

    def _data_rel(self, row: Mapping[str, Any]) -> str:
        return DATA_PATH.format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
        )

    def _video_rel(self, row: Mapping[str, Any], cam: CameraSpec) -> str:
        key = cam.feature_key
        return VIDEO_PATH.format(
            video_key=key,
            chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]),
        )

    def begin_episode(self) -> EpisodeRecorder:
        if self._active is not None and not self._active._closed:
            raise DatasetError("an episode is already being recorded: finish or abort it first")
        staging = self.root / STAGING_DIR / f"episode-{len(self._episodes):06d}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
        except OSError as e:
            raise _disk_error(e, "starting an episode") from e
        self._active = EpisodeRecorder(self, staging)
        return self._active

    def write_episode(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        images: Mapping[str, Iterable[np.ndarray]],
        task: str | Sequence[str],
        environment_states: np.ndarray | None = None,
    ) -> EpisodeSummary:
        """Write a whole episode from arrays (``task``: one text, or one per frame; ``environment_states``:
        (T, n), required exactly when the dataset has ``observation.environment_state``)."""
        tasks = [task] * len(states) if isinstance(task, str) else list(task)
        if len(tasks) != len(states) or len(actions) != len(states):
            raise DatasetError(f"{len(states)} states, {len(actions)} actions and {len(tasks)} tasks differ")
        if environment_states is not None and len(environment_states) != len(states):
            raise DatasetError(f"{len(states)} states but {len(environment_states)} environment states")
        rec = self.begin_episode()
        try:
            iters = {name: iter(frames) for name, frames in images.items()}
            for i in range(len(states)):
                rec.add_frame(
                    states[i],
                    actions[i],
                    {name: next(it) for name, it in iters.items()},
                    tasks[i],
                    None if environment_states is None else environment_states[i],
                )
        except BaseException:
            rec.abort()
            raise
        return rec.finish()

    # --- commit ---

    def _commit(self, rec: EpisodeRecorder) -> EpisodeSummary:
        spec = self.spec
        ep_index = len(self._episodes)
        length = len(rec._states)
        start = self.num_frames
        new_tasks = [t for t in dict.fromkeys(rec._tasks) if t not in self._tasks]
        tasks = self._tasks + new_tasks
        task_ids = {t: i for i, t in enumerate(tasks)}
        chunk, file = divmod(ep_index, spec.chunks_size)
        timestamps = np.arange(length, dtype=np.float32) / np.float32(spec.fps)
        columns = {
            STATE_KEY: np.stack(rec._states),
            ACTION_KEY: np.stack(rec._actions),
            "timestamp": timestamps,
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, ep_index, dtype=np.int64),
            "index": np.arange(start, start + length, dtype=np.int64),
            "task_index": np.array([task_ids[t] for t in rec._tasks], dtype=np.int64),
        }
        if spec.environment_state_names:
            columns[ENVIRONMENT_STATE_KEY] = np.stack(rec._environment_states)
        schema = _data_schema(spec)
        arrays = []
        for f in schema:
            values = columns[f.name]
            if pa.types.is_fixed_size_list(f.type):
                arrays.append(
                    pa.FixedSizeListArray.from_arrays(
                        pa.array(values.reshape(-1), pa.float32()), f.type.list_size
                    )
                )
            else:
                arrays.append(pa.array(values, f.type))
        data_table = pa.Table.from_arrays(arrays, schema=schema)

        stats: dict[str, dict[str, np.ndarray]] = {}
        for cam in spec.cameras:
            stats[cam.feature_key] = rec._image_stats[cam.name].stats()
        for key in (*spec.vector_keys(), *INDEX_FEATURES):
            stats[key] = vector_stats(columns[key])

        row: dict[str, Any] = {
            "episode_index": ep_index,
            "tasks": list(dict.fromkeys(rec._tasks)),
            "length": length,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for cam in spec.cameras:
            key = cam.feature_key
            row[f"videos/{key}/chunk_index"] = chunk
            row[f"videos/{key}/file_index"] = file
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = length / spec.fps
        for key, feat in stats.items():
            for stat in STAT_NAMES:
                row[f"stats/{key}/{stat}"] = np.asarray(feat[stat]).tolist()
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0

        # 1. Move the payload into place (unreferenced until step 2, and removed by repair() after a crash).
        data_path = self.root / self._data_rel(row)
        write_bytes_atomic(data_path, _table_bytes(data_table))
        written = data_path.stat().st_size
        for cam in spec.cameras:
            src = rec._staging / f"{cam.name}.mp4"
            dst = self.root / self._video_rel(row, cam)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(src)
            os.replace(src, dst)
            fsync_dir(dst.parent)
            written += dst.stat().st_size
        # 2. Tasks, then the episode table: the commit point.
        if new_tasks:
            self._write_tasks(tasks)
        episodes = [*self._episodes, row]
        write_bytes_atomic(
            self.root / EPISODES_PATH,
            _table_bytes(pa.Table.from_pylist(episodes, schema=_episode_schema(spec))),
        )
        self._episodes = episodes
        self._tasks = tasks
        shutil.rmtree(rec._staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty: another recorder may be staging
            rec._staging.parent.rmdir()
        # 3. Derived metadata (recomputed by repair() if a crash interrupts it).
        self._write_derived()
        return EpisodeSummary(ep_index, length, tuple(row["tasks"]), written)

    def _write_tasks(self, tasks: Sequence[str]) -> None:
        frame = pd.DataFrame(
            {"task_index": np.arange(len(tasks), dtype=np.int64)}, index=pd.Index(list(tasks), name="task")
        )
        # pandas 3 would store the index as large_string; LeRobot writes string.
        schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("task", pa.string())])
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=True)
        write_bytes_atomic(self.root / "meta" / "tasks.parquet", _table_bytes(table))

    def _write_derived(self) -> None:
        spec = self.spec
        if not (self.root / "meta" / "tasks.parquet").is_file() or self._tasks:
            self._write_tasks(self._tasks)
        n = len(self._episodes)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": spec.fps,
            "features": spec.features(),
            "total_episodes": n,
            "total_frames": self.num_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": spec.chunks_size,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if spec.cameras else None,
            "robot_type": spec.robot_type,
            "splits": {"train": f"0:{n}"},
        }
        per_episode = []
        for row in self._episodes:
            ep: dict[str, dict[str, np.ndarray]] = {}
            for col, value in row.items():
                if col.startswith("stats/"):
                    feature, stat = col[len("stats/") :].rsplit("/", 1)
                    ep.setdefault(feature, {})[stat] = np.asarray(value, dtype=np.float64)
            per_episode.append(ep)
        stats = aggregate_stats(per_episode)
        write_json_atomic(self.root / "meta" / "stats.json", _stats_to_json(stats), indent=4)
        normalization = {
            k: {s: stats[k][s].tolist() for s in ("mean", "std", "min", "max")}
            for k in (STATE_KEY, ACTION_KEY)
            if k in stats
        }
        spec.manifest(normalization).save(self.root / "meta" / "embodiment.json")
        write_json_atomic(self.root / "meta" / "info.json", info, indent=4)
