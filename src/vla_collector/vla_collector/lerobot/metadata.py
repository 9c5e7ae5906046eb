"""What a LeRobotDataset v3.0 is: its layout, the spec of a dataset (features, video settings), the
parquet schemas of ``data/`` and ``meta/episodes``, and ``meta/tasks.parquet``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, IMAGE_PREFIX, STATE_KEY
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest

from vla_collector.lerobot.errors import DatasetError, DatasetWarning
from vla_collector.lerobot.statistics import STAT_NAMES

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
# LeRobot's packing limits: a data or video file takes episodes until the next one would reach this size
# (in MiB: LeRobot divides byte counts by 1024**2 and calls it MB).
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = Path("meta/episodes/chunk-000/file-000.parquet")
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# The top-level fields of info.json that LeRobot 0.6.1 writes (and this package reads or rewrites).
INFO_FIELDS = (
    "codebase_version",
    "fps",
    "features",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_files_size_in_mb",
    "video_files_size_in_mb",
    "data_path",
    "video_path",
    "robot_type",
    "splits",
)
FEATURE_DTYPES = ("video", "image", "float32", "float64", "int64", "int32", "int16", "int8", "bool", "string")
_V3 = re.compile(r"v3(\.\d+)*")

# x264's preset names (an int is an SVT-AV1 preset; x264 refuses one: "x264 invalid preset '12'").
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
# Our preset when none is given: LeRobot's 12 for SVT-AV1 (it fills in the same); for x264 "veryfast" (LeRobot
# leaves it null, i.e. x264's own default "medium", which is slower than a 2-core recorder can afford).
DEFAULT_PRESETS: dict[str, int | str] = {"libsvtav1": 12, "libx264": "veryfast"}
# What a null preset in info.json means: the encoder's own default (LeRobot passes no preset option then).
ENCODER_DEFAULT_PRESETS: dict[str, int | str] = {"libsvtav1": 12, "libx264": "medium"}


def check_codebase_version(info: Mapping[str, Any], where: Path | str) -> str:
    """The dataset's codebase_version if it is v3.x; a clear DatasetError naming it otherwise."""
    version = info.get("codebase_version")
    if not isinstance(version, str) or not _V3.fullmatch(version):
        hint = (
            " (a v2.x dataset: convert it with LeRobot's v2.1 -> v3.0 converter first)"
            if isinstance(version, str) and version.startswith("v2")
            else ""
        )
        raise DatasetError(
            f"{where}: codebase_version {version!r} is not supported: this package reads LeRobotDataset v3.x"
            f" ({CODEBASE_VERSION}){hint}"
        )
    return version


def unknown_info_fields(info: Mapping[str, Any]) -> list[str]:
    """info.json's fields this package does not know: top-level keys, and features of an unknown dtype
    (as ``features.<key>``), e.g. from a newer LeRobot."""
    unknown = [k for k in info if k not in INFO_FIELDS]
    features = info.get("features")
    if isinstance(features, Mapping):
        unknown += [
            f"features.{k}"
            for k, f in features.items()
            if not isinstance(f, Mapping) or f.get("dtype") not in FEATURE_DTYPES
        ]
    return unknown


def warn_unknown_info_fields(info: Mapping[str, Any], where: Path | str, action: str) -> list[str]:
    """Warn (:class:`DatasetWarning`) naming the fields :func:`unknown_info_fields` finds; return them."""
    unknown = unknown_info_fields(info)
    if unknown:
        warnings.warn(
            f"{where}: info.json has fields this package does not know (a newer LeRobot?): "
            f"{', '.join(unknown)}; {action}",
            DatasetWarning,
            stacklevel=3,
        )
    return unknown


def _preset(codec: str, value: Any) -> int | str:
    """A preset as info.json or a parameter gives it (None, int, or a string), checked for ``codec``."""
    if value is None or value == "":
        return DEFAULT_PRESETS[codec]
    if isinstance(value, bool):
        raise DatasetError(f"video preset {value!r} is not a preset")
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if codec == "libsvtav1":
        if not isinstance(value, int) or not -2 <= value <= 13:
            raise DatasetError(f"SVT-AV1 preset must be an integer -2..13 (higher = faster), got {value!r}")
    elif value not in X264_PRESETS:
        raise DatasetError(f"x264 preset must be one of {list(X264_PRESETS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class VideoCodecConfig:
    """How camera streams are encoded; the defaults are LeRobot 0.6.1's (AV1 via SVT-AV1)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int = 2
    crf: int = 30
    # SVT-AV1: an int (-2..13, higher = faster); x264: a name (X264_PRESETS). None: DEFAULT_PRESETS[codec].
    # info.json records the preset actually used, in this form (LeRobot re-encodes with it).
    preset: int | str | None = None
    fast_decode: int = 0

    def __post_init__(self) -> None:
        if self.codec not in CODEC_NAMES:
            raise DatasetError(f"video codec {self.codec!r} not supported (one of {sorted(CODEC_NAMES)})")
        if self.pix_fmt not in ("yuv420p", "yuv444p"):
            raise DatasetError(f"pix_fmt {self.pix_fmt!r} not supported (yuv420p or yuv444p)")
        if self.g < 1 or not 0 <= self.crf <= 63:
            raise DatasetError(f"bad video settings g={self.g} crf={self.crf}")
        object.__setattr__(self, "preset", _preset(self.codec, self.preset))

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
            options["preset"] = str(self.preset)
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
    # Packing: episodes share a data file (a video file, per camera) until it would reach this many MiB.
    data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB

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
        for name in ("data_files_size_in_mb", "video_files_size_in_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise DatasetError(f"{name} must be a positive number of MiB, got {value!r}")
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
                codec = {v: k for k, v in CODEC_NAMES.items()}.get(
                    vi.get("video.codec") or "av1", "libsvtav1"
                )
                video = VideoCodecConfig(
                    codec=codec,
                    pix_fmt=vi.get("video.pix_fmt") or "yuv420p",
                    g=int(_or(vi.get("video.g"), 2)),
                    crf=int(_or(vi.get("video.crf"), 30)),
                    preset=_recorded_preset(codec, vi.get("video.preset")),
                    fast_decode=int(_or(vi.get("video.fast_decode"), 0)),
                )
        return cls(
            fps=int(info["fps"]),
            robot_type=str(info.get("robot_type") or "unknown"),
            state_names=tuple(features[STATE_KEY]["names"]),
            action_names=tuple(features[ACTION_KEY]["names"]),
            cameras=tuple(cameras),
            video=video,
            chunks_size=int(info.get("chunks_size") or DEFAULT_CHUNKS_SIZE),
            environment_state_names=feature_names(features.get(ENVIRONMENT_STATE_KEY)),
            data_files_size_in_mb=_or(info.get("data_files_size_in_mb"), DEFAULT_DATA_FILES_SIZE_IN_MB),
            video_files_size_in_mb=_or(info.get("video_files_size_in_mb"), DEFAULT_VIDEO_FILES_SIZE_IN_MB),
        )

    def vector_keys(self) -> tuple[str, ...]:
        """The float32 vector features, in column order."""
        return (STATE_KEY, *((ENVIRONMENT_STATE_KEY,) if self.environment_state_names else ()), ACTION_KEY)


def _or(value: Any, default: Any) -> Any:
    """info.json's value, or the default where it is absent or null (LeRobot writes null for unset ones)."""
    return default if value is None else value


def _recorded_preset(codec: str, value: Any) -> int | str:
    """The preset info.json records, as the encoder used it: null is the encoder's own default (LeRobot
    passes no preset then); an integer for x264 is what this writer recorded before it recorded names
    (it encoded with "veryfast" and wrote SVT-AV1's 12)."""
    if value is None:
        return ENCODER_DEFAULT_PRESETS[codec]
    if codec == "libx264" and isinstance(value, int) and not isinstance(value, bool):
        return DEFAULT_PRESETS[codec]
    return _preset(codec, value)


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
