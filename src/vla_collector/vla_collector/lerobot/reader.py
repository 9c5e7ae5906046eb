"""Reading a LeRobotDataset v3.x root, ours or LeRobot's: metadata, episodes' columns, decoded frames.

Any packing reads the same way: ``meta/episodes`` names each episode's data file (whose rows are picked by
``episode_index``, through an index of the file built once: :class:`_DataFile`) and, per camera, its mp4 and [from_timestamp, to_timestamp) in it; one file per episode
(this writer's layout before it packed) is the case of one episode per file. Fields of info.json that this
package does not know (a newer LeRobot's) are named in a :class:`DatasetWarning` and ignored; a
codebase_version other than v3.x is refused, naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, IMAGE_PREFIX, STATE_KEY
from vla_common.manifest import EmbodimentManifest

from vla_collector.lerobot.errors import DatasetError
from vla_collector.lerobot.metadata import (
    DatasetSpec,
    check_codebase_version,
    feature_names,
    read_tasks,
    warn_unknown_info_fields,
)


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
        if not isinstance(self.info, dict):
            raise DatasetError(f"{info_path} is not a JSON object")
        check_codebase_version(self.info, self.root)
        for key in ("fps", "features", "data_path"):
            if key not in self.info:
                raise DatasetError(f"{info_path} lacks {key!r}")
        # A newer LeRobot's additions: read what we know, name the rest.
        self.unknown_fields: tuple[str, ...] = tuple(
            warn_unknown_info_fields(self.info, info_path, "ignored while reading")
        )
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
        self._data_cache: dict[tuple[int, int], _DataFile] = {}

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
        return feature_names(self.features.get(ENVIRONMENT_STATE_KEY))

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

    def _data_file(self, chunk: int, file: int) -> _DataFile:
        key = (chunk, file)
        if key not in self._data_cache:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise DatasetError(f"data file {path} is missing")
            self._data_cache[key] = _DataFile(pq.read_table(path))
            if len(self._data_cache) > 4:
                self._data_cache.pop(next(iter(self._data_cache)))
        return self._data_cache[key]

    def episode(self, episode_index: int) -> EpisodeArrays:
        row = self._episode_row(episode_index)
        sel = self._data_file(int(row["data/chunk_index"]), int(row["data/file_index"])).rows(episode_index)
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


class _DataFile:
    """A data file's table, indexed once by ``episode_index`` (filtering the whole file for each episode cost
    O(episodes x rows) to read a packed file)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        episodes = table.column("episode_index").to_numpy()
        # Stable: an episode's rows keep their order in the file (ours and LeRobot's are grouped and sorted).
        self._order = np.argsort(episodes, kind="stable")
        self._episodes = episodes[self._order]

    def rows(self, episode_index: int) -> pa.Table:
        """The rows of one episode, in file order."""
        lo, hi = np.searchsorted(self._episodes, [episode_index, episode_index + 1])
        rows = self._order[lo:hi]
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1:  # one run (in ours and LeRobot's files)
            return self.table.slice(int(rows[0]), len(rows))  # no copy (take concatenates the file's chunks)
        return self.table.take(rows)


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else None
    if width is None:
        return np.asarray(arr.to_pylist(), dtype=np.float32)
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
