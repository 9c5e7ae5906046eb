"""What a LeRobotDataset v3.0 is: its layout, the spec of a dataset (features, video settings), the
parquet schemas of ``data/`` and ``meta/episodes``, and ``meta/tasks.parquet``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, IMAGE_PREFIX, STATE_KEY
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest

from vla_collector.lerobot.errors import DatasetError
from vla_collector.lerobot.statistics import STAT_NAMES

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = Path("meta/episodes/chunk-000/file-000.parquet")
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


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
            environment_state_names=feature_names(features.get(ENVIRONMENT_STATE_KEY)),
        )

    def vector_keys(self) -> tuple[str, ...]:
        """The float32 vector features, in column order."""
        return (STATE_KEY, *((ENVIRONMENT_STATE_KEY,) if self.environment_state_names else ()), ACTION_KEY)


def feature_names(feature: Mapping[str, Any] | None) -> tuple[str, ...]:
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


def episode_schema(spec: DatasetSpec) -> pa.Schema:
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


def data_schema(spec: DatasetSpec) -> pa.Schema:
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
