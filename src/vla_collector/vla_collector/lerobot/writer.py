"""Writing a LeRobotDataset v3.0: create or append, one episode at a time, crash-safe (see the package
docstring), with the atomic write of ``vla_common.atomic``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from vla_common.atomic import fsync_dir, write_bytes_atomic, write_json_atomic
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, STATE_KEY
from vla_common.manifest import CameraSpec

from vla_collector.lerobot.errors import DatasetError, DatasetWriteError, disk_error
from vla_collector.lerobot.metadata import (
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    VIDEO_PATH,
    DatasetSpec,
    data_schema,
    episode_schema,
    read_tasks,
)
from vla_collector.lerobot.statistics import (
    STAT_NAMES,
    ImageStatsAccumulator,
    aggregate_stats,
    stats_to_json,
    vector_stats,
)
from vla_collector.lerobot.video import VideoEncoder

STAGING_DIR = ".staging"


# --- file helpers (the atomic write itself: vla_common.atomic) ------------------------------------------


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# --- the writer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSummary:
    episode_index: int
    length: int
    tasks: tuple[str, ...]
    bytes_written: int


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
        self._encoders: dict[str, VideoEncoder] = {}
        self._closed = False
        try:
            for cam in self._spec.cameras:
                self._encoders[cam.name] = VideoEncoder(
                    staging / f"{cam.name}.mp4", cam, self._spec.fps, self._spec.video
                )
        except OSError as e:
            self.abort()
            raise disk_error(e, "starting the episode's video files") from e

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
            raise disk_error(e, "writing the episode") from e
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
            raise disk_error(e, "creating the dataset") from e
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
            raise disk_error(e, "starting an episode") from e
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
        schema = data_schema(spec)
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
            _table_bytes(pa.Table.from_pylist(episodes, schema=episode_schema(spec))),
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
        write_json_atomic(self.root / "meta" / "stats.json", stats_to_json(stats), indent=4)
        normalization = {
            k: {s: stats[k][s].tolist() for s in ("mean", "std", "min", "max")}
            for k in (STATE_KEY, ACTION_KEY)
            if k in stats
        }
        spec.manifest(normalization).save(self.root / "meta" / "embodiment.json")
        write_json_atomic(self.root / "meta" / "info.json", info, indent=4)
